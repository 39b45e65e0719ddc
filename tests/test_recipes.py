"""Recipes ship inside the package; their data folders live under --data-root or $CSUNET_DATA_ROOT."""

from __future__ import annotations

from pathlib import Path

import pytest

from csunet_train import config
from csunet_train.config import DATA_ROOT_ENV, ConfigError, load_recipe, recipe_names


def test_the_recipes_are_package_data() -> None:
    assert config.RECIPE_DIR.parent == Path(config.__file__).resolve().parent
    assert {"super1", "super2", "super3", "ebc2", "starter-ebc", "starter-superalloy"} <= set(recipe_names())


@pytest.mark.parametrize("given", ["argument", "environment"])
def test_the_data_root_comes_from_the_flag_or_the_environment(tmp_path: Path, monkeypatch, given: str) -> None:
    (tmp_path / "Super1").mkdir()
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path) if given == "environment" else str(tmp_path / "elsewhere"))
    cfg = load_recipe("super3", tmp_path if given == "argument" else None)
    assert cfg.data_dir == str(tmp_path / "Super1") and cfg.names == ["spot7_180d_3"]


@pytest.mark.parametrize(("recipe", "root", "message"), [
    ("super3", "missing", r"data folder .*Super1 not found; pass --data-root DIR \(the folder that holds Super1/\) "
                          r"or set CSUNET_DATA_ROOT=DIR"),
    ("super3", None, "relative to a data root: pass --data-root DIR"),
    ("super4", "here", "recipe 'super4' not found: not a file, and not one of .*super3"),
])
def test_a_missing_data_root_or_recipe_says_what_to_do(tmp_path: Path, monkeypatch, recipe: str, root: str | None,
                                                      message: str) -> None:
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    monkeypatch.setattr(config, "_in_checkout", lambda: False)  # as from an installed wheel
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe, None if root is None else tmp_path / root)


def test_outside_a_checkout_relative_outputs_land_in_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "Super1").mkdir()
    monkeypatch.setattr(config, "_in_checkout", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert load_recipe("super1", tmp_path).out == str(tmp_path / "runs" / "super1.safetensors")


@pytest.mark.parametrize("recipe", ["starter-superalloy", "starter-ebc"])
def test_starter_recipes_start_from_a_catalogue_name_and_run_outside_a_checkout(tmp_path: Path, monkeypatch,
                                                                                recipe: str) -> None:
    """From an installed wheel the starter folder is not where ``--out`` goes: the recipe's model is the
    user's own (its shipped name gets ``-ft-<time>``), and its start is found by name, not by a path."""
    for folder in ("Super1", "EBC2"):
        (tmp_path / folder).mkdir()
    assert load_recipe(recipe, tmp_path).name == recipe  # in a checkout: regenerates the shipped file
    monkeypatch.setattr(config, "_in_checkout", lambda: False)
    monkeypatch.chdir(tmp_path)
    cfg = load_recipe(recipe, tmp_path, out=str(tmp_path / "x.safetensors"))
    assert cfg.model == "micro-tiny" and cfg.name.startswith(f"{recipe}-ft-")
    assert load_recipe(recipe, tmp_path, out=str(tmp_path / "y.safetensors"), name="mine").name == "mine"
