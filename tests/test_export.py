"""Issue 23: models that travel — ONNX/TorchScript graphs, bioimage.io packages tested by
bioimage.io's own test, and import of our packages back (foreign ones refused). Offline: the
starter models and a fine-tune saved through the modelfile API; nothing is downloaded."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from napari_csunet.export import ExportError
from napari_csunet.models.catalog import STARTER_DIR
from napari_csunet.plugin.samples import _EBC, _SUPER, DATA_DIR

SUPER = STARTER_DIR / "starter-superalloy.safetensors"


def _sample(stem: str = _SUPER) -> np.ndarray:
    return tifffile.imread(DATA_DIR / f"{stem}.tif")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> Path:
    """A fine-tune of starter-superalloy: perturbed weights, new names and colours, saved by the product."""
    import torch

    from napari_csunet.models.modelfile import ModelInfo, load_model_file, save_model_file

    model, info = load_model_file(SUPER)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * p.std().nan_to_num() * torch.randn(p.shape, generator=gen))
    mine = ModelInfo(info.config, ["gamma matrix", "gamma' secondary", "gamma' tertiary"],
                     ["#202020", "#00aaff", "#ffaa00"], preset=info.preset, name="my-superalloy",
                     description="a fine-tune of starter-superalloy on my corrections",
                     provenance={"mode": "finetune", "started_from": str(SUPER), "run_steps": 40, "steps": 5288,
                                 "pixel_size_um": 0.0125})
    return save_model_file(tmp_path_factory.mktemp("ft") / "my-superalloy.safetensors", model, mine)


# -- graphs -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict:
    """starter-superalloy traced once to TorchScript and (when onnx is installed) ONNX."""
    from napari_csunet.export import load_exportable
    from napari_csunet.export.graph import export_onnx, export_torchscript

    model, info, _ = load_exportable(SUPER)
    folder = tmp_path_factory.mktemp("graphs")
    out = {"model": model, "info": info, "torchscript": export_torchscript(model, info, folder / "m.pt")}
    try:
        import onnx  # noqa: F401
    except ImportError:
        return out
    return out | {"onnx": export_onnx(model, info, folder / "m.onnx")}


@pytest.mark.slow
def test_onnx_agrees_with_the_predictor_on_a_512_tile(tmp_path, capsys):
    """`csunet export --format onnx` states opset and dynamic axes and checks itself on the sample."""
    pytest.importorskip("onnxruntime")
    from napari_csunet.cli.main import main

    assert main(["export", str(SUPER), "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["opset"] == 17 and facts["dynamic_axes"] == {"0": "batch", "2": "height", "3": "width"}
    assert facts["check"]["pixels"] == 512 * 512
    assert facts["check"]["agreement"] >= 0.999, facts["check"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_graphs_keep_dynamic_batch_and_sides(graphs, fmt):
    """Traced at 512², run at batch 2 and 256 x 768: the shifted-window masks follow the size."""
    import torch

    from napari_csunet.export.graph import Probabilities

    x = torch.randn(2, 1, 256, 768, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = Probabilities(graphs["model"]).eval()(x).numpy()
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        got = ort.InferenceSession(str(graphs["onnx"])).run(["probabilities"], {"input": x.numpy()})[0]
    else:
        traced = torch.jit.load(str(graphs["torchscript"]))
        # nothing pinned to the CPU: the graph runs on whatever device its input is on (GPUs too)
        assert "Device = prim::Constant" not in str(traced.inlined_graph)
        with torch.no_grad():
            got = traced(x).numpy()
    assert got.shape == (2, 3, 256, 768)
    np.testing.assert_allclose(got, want, atol=1e-4)


# -- bioimage.io packages ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("which, weights, run_test", [
    ("finetuned", ("torchscript", "onnx"), True),
    ("starter-superalloy", ("onnx",), True),
    ("starter-ebc", ("torchscript",), False),  # validated only: bioimage.io's test costs ~30 s of CPU a format
])
def test_package_is_valid_and_passes_bioimageios_test(tmp_path, finetuned, which, weights, run_test):
    pytest.importorskip("bioimageio.core")
    pytest.importorskip("onnxruntime")
    from napari_csunet.export.bioimageio import export_bioimageio, validate_package

    model = finetuned if which == "finetuned" else STARTER_DIR / f"{which}.safetensors"
    out = tmp_path / f"{which}.zip"
    result = export_bioimageio(model, out, weights=weights, authors=["A. Tester"], test=run_test)
    assert result.validated and result.test_passed is (True if run_test else None), result.test_log
    if "onnx" in weights:
        assert result.onnx_agreement["agreement"] >= 0.999
    # the zip as written too; the one advice left needs a GitHub user, which bioimage.io checks online
    assert validate_package(out) == result.warnings and all("maintainers" in w for w in result.warnings)
    with zipfile.ZipFile(out) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        assert {"README.md", "cover.png", "model.safetensors", "test_input.npy", "test_output.npy",
                "sample_input.tif", "sample_output.tif"} <= set(zf.namelist())
        assert "## Validation" in zf.read("README.md").decode()
    assert set(rdf["weights"]) == set(weights)
    pre = rdf["inputs"][0]["preprocessing"][-1]
    assert pre == {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["channel", "y", "x"], "eps": 1e-6}}
    ours = rdf["config"]["napari_csunet"]
    if which == "finetuned":
        assert ours["parent"]["name"] == "starter-superalloy"
        assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["gamma_matrix", "gamma_secondary", "gamma_tertiary"]
        assert ours["class_names"][1] == "gamma' secondary" and ours["class_colors"][2] == "#ffaa00"
        space = rdf["inputs"][0]["axes"][2]
        assert space["scale"] == 0.0125 and space["unit"] == "micrometer"
    else:
        assert "unit" not in rdf["inputs"][0]["axes"][2]  # the starters' pixel size is not recorded


@pytest.mark.parametrize("which, nasa_line, pixel", [
    ("starter-ebc", "- Training data: Stuckner", "not recorded"),
    ("finetuned", "- Training data of the model it was fine-tuned from: Stuckner", "0.0125 µm per pixel"),
])
def test_model_card_says_where_the_model_comes_from(finetuned, which, nasa_line, pixel):
    from napari_csunet.export.bioimageio import model_card
    from napari_csunet.models.modelfile import read_model_info

    info = read_model_info(finetuned if which == "finetuned" else STARTER_DIR / f"{which}.safetensors")
    card = model_card(info, info.provenance.get("pixel_size_um"), {}, ["onnx"])
    assert nasa_line in card and pixel in card and "## Validation" in card and "None" not in card
    if which == "finetuned":
        assert "Started from: starter-superalloy" in card and "| 2 | gamma' secondary | `#00aaff` | 1 |" in card


@pytest.mark.slow
@pytest.mark.parametrize("in_chans, image", [(3, "grey"), (1, "rgb")])
def test_colour_models_and_colour_images_make_valid_packages(tmp_path, in_chans, image):
    """A colour model fed the grey sample, a grey model fed an RGB image: the input's channels
    and the sample tensors still match the description."""
    pytest.importorskip("bioimageio.spec")
    from napari_csunet.export.bioimageio import export_bioimageio
    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo, save_model_file

    config = get_preset("csunet-tiny").config
    config = type(config).from_dict(config.to_dict() | {"in_chans": in_chans})
    model = save_model_file(tmp_path / "c.safetensors", build_model(config),
                            ModelInfo(config, ["a", "b", "c"], name="colour"))
    grey = _sample()[:256, :256]
    picture = grey if image == "grey" else np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)
    result = export_bioimageio(model, tmp_path / "p", image=picture, weights=("torchscript",), test=False)
    assert result.validated
    rdf = yaml.safe_load((tmp_path / "p" / "rdf.yaml").read_text())
    assert len(rdf["inputs"][0]["axes"][1]["channel_names"]) == in_chans
    assert np.load(tmp_path / "p" / "test_input.npy").shape == (1, in_chans, 512, 512)


def test_export_refuses_what_cannot_travel(tmp_path):
    from napari_csunet.export.bioimageio import export_bioimageio

    with pytest.raises(ExportError, match="self-supervised"):
        export_bioimageio("micro-tiny", tmp_path / "p.zip", validate=False, test=False)
    with pytest.raises(ExportError, match="random weights"):
        export_bioimageio("csunet-tiny", tmp_path / "p.zip", validate=False, test=False)
    with pytest.raises(ExportError, match="positive number"):
        export_bioimageio(SUPER, tmp_path / "p.zip", pixel_size_um=-1.0, validate=False, test=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(ExportError, match="not an empty folder"):
        export_bioimageio(SUPER, tmp_path / "full", validate=False, test=False)


@pytest.mark.parametrize("module, kwargs", [("bioimageio.core", {"test": True}), ("onnx", {"weights": ("onnx",)})])
def test_a_missing_extra_is_named_before_any_work(tmp_path, monkeypatch, module, kwargs):
    import sys

    from napari_csunet.export.bioimageio import export_bioimageio

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    options = {"weights": ("torchscript",), "validate": False, "test": False} | kwargs
    with pytest.raises(ExportError, match=r"napari-csunet\[export\]"):
        export_bioimageio(SUPER, tmp_path / "p.zip", **options)
    assert not (tmp_path / "p.zip").exists()


# -- import -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """starter-ebc as a package folder, TorchScript only (needs no optional library)."""
    from napari_csunet.export.bioimageio import export_bioimageio

    out = tmp_path_factory.mktemp("pkg") / "ebc"
    export_bioimageio(STARTER_DIR / "starter-ebc.safetensors", out, weights=("torchscript",), validate=False, test=False)
    return out


def _zip(folder: Path, dest: Path, rdf: dict | None = None) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in folder.iterdir():
            if f.name == "rdf.yaml" and rdf is not None:
                zf.writestr("rdf.yaml", yaml.safe_dump(rdf))
            else:
                zf.write(f, f.name)
    return dest


@pytest.mark.slow
def test_round_trip_gives_the_same_labels(tmp_path, package):
    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.export.importer import import_package
    from napari_csunet.models.modelfile import read_model_info

    imported = import_package(_zip(package, tmp_path / "ebc.zip"), tmp_path / "models")
    assert import_package(package, tmp_path / "models") == imported  # the same model is not copied twice
    before, after = read_model_info(STARTER_DIR / "starter-ebc.safetensors"), read_model_info(imported)
    assert (after.class_names, after.class_colors) == (before.class_names, before.class_colors)
    image = _sample(_EBC)[:512, :768]
    labels = [Segmenter.from_file(p, device="cpu", amp=False).predict(image).labels
              for p in (STARTER_DIR / "starter-ebc.safetensors", imported)]
    np.testing.assert_array_equal(labels[0], labels[1])


@pytest.mark.parametrize("change, message", [
    (lambda rdf: rdf["config"].pop("napari_csunet"), "did not export"),
    (lambda rdf: rdf.update(type="dataset"), "not a model"),
    (lambda rdf: rdf["config"]["napari_csunet"].update(model_file="../../evil.safetensors"), "outside itself"),
    (lambda rdf: rdf["config"]["napari_csunet"].update(model_sha256="0" * 64), "damaged"),
])
def test_foreign_or_damaged_packages_are_refused(tmp_path, package, change, message):
    from napari_csunet.export.importer import import_package

    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    change(rdf)
    with pytest.raises(ExportError, match=message):
        import_package(_zip(package, tmp_path / "p.zip", rdf), tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_not_a_package(tmp_path):
    from napari_csunet.export.importer import import_package

    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ExportError, match="not a bioimage.io package"):
        import_package(tmp_path / "x.zip")


def test_cli_import_and_refusal(tmp_path, package, capsys):
    from napari_csunet.cli.main import main

    assert main(["models", "--import", str(package), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["name"] == "starter-ebc" and entry["classes"] == ["background", "oxide", "crack"]
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    rdf.pop("config")
    assert main(["models", "--import", str(_zip(package, tmp_path / "f.zip", rdf))]) == 2
    assert "did not export" in capsys.readouterr().err
    assert main(["export", "micro-tiny", "--out", str(tmp_path / "p.zip")]) == 2
    assert "fine-tune it first" in capsys.readouterr().err
