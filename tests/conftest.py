from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

os.environ.setdefault("CSUNET_OFFLINE_TESTS", "1")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Weight cache and user model folder in temp dirs: tests never touch the user's files."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("CSUNET_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("CSUNET_MODELS_DIR", str(base / "models"))
    monkeypatch.setenv("CSUNET_ANNOTATIONS_DIR", str(base / "annotations"))
    monkeypatch.setenv("CSUNET_CONFIG_DIR", str(base / "config"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA
