"""Downloads against a loopback HTTP server: success, checksum mismatch, 404, unreachable host."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch

from napari_csunet.weights import (
    KNOWN_SHA256,
    WeightsFormatError,
    WeightSource,
    WeightsUnavailable,
    apply_sources,
    cache_dir,
    converted_path,
    download,
    download_path,
    get_source,
)
from napari_csunet.weights import sources as sources_module


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _src(url: str, wid: str = "test-weights") -> WeightSource:
    return WeightSource(wid, "cnn", "imagenet", "resnet10t", url, f"{wid}.download.pth", "test file")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_success_with_known_hash(server, monkeypatch):
    root, base = server
    payload = b"weights" * 1000
    (root / "w.pth").write_bytes(payload)
    monkeypatch.setitem(KNOWN_SHA256, "test-weights", hashlib.sha256(payload).hexdigest())
    src = _src(f"{base}/w.pth")
    path = download(src)
    assert path == download_path(src) and path.read_bytes() == payload
    assert path.parent == cache_dir()


def test_checksum_mismatch_keeps_nothing(server, monkeypatch):
    root, base = server
    (root / "w.pth").write_bytes(b"tampered")
    monkeypatch.setitem(KNOWN_SHA256, "test-weights", "0" * 64)
    src = _src(f"{base}/w.pth")
    with pytest.raises(WeightsFormatError, match="SHA-256") as err:
        download(src)
    assert src.url in str(err.value)
    assert not download_path(src).exists()
    assert list(cache_dir().iterdir()) == []  # no partial or temporary file left behind


@pytest.mark.parametrize("where", ["404", "closed-port"])
def test_unreachable_names_url_and_drop_in_path(server, where):
    _, base = server
    url = f"{base}/missing.pth" if where == "404" else f"http://127.0.0.1:{_closed_port()}/w.pth"
    src = _src(url)
    with pytest.raises(WeightsUnavailable) as err:
        download(src)
    msg = str(err.value)
    assert url in msg and str(download_path(src)) in msg and "csunet weights import test-weights" in msg
    assert ("HTTP 404" in msg) == (where == "404")
    assert err.value.url == url and err.value.path == str(download_path(src))
    assert not download_path(src).exists()


def test_no_download_allowed_says_where_to_drop_the_file():
    from napari_csunet.models import build_model

    with pytest.raises(WeightsUnavailable, match="downloading was not allowed") as err:
        apply_sources(build_model("csunet-tiny"), "imagenet", None, allow_download=False)
    src = get_source("resnet10t-imagenet")
    assert src.url in str(err.value) and err.value.path == str(download_path(src))


@pytest.fixture
def local_imagenet(server, monkeypatch):
    """Point resnet10t-imagenet at a random timm resnet10t checkpoint on the loopback server."""
    import timm

    root, base = server
    torch.manual_seed(0)
    reference = timm.create_model("resnet10t").state_dict()
    torch.save(reference, root / "resnet10t.pth")
    get_source.cache_clear()
    monkeypatch.setattr(sources_module, "_timm_url", lambda arch: f"{base}/resnet10t.pth")
    yield reference
    get_source.cache_clear()


def test_download_convert_and_apply(local_imagenet):
    from napari_csunet.models import build_model

    model = build_model("csunet-tiny")
    applied = apply_sources(model, "imagenet", None, allow_download=True)
    src = get_source("resnet10t-imagenet")
    assert applied["cnn_id"] == src.id
    imported = applied["cnn_report"]["imported"]
    assert imported["source_file"] == src.filename and imported["report"]["dropped"] == ["fc"]
    assert converted_path(src).is_file() and not download_path(src).exists()  # converted copy replaces it
    torch.testing.assert_close(model.cnn.body.state_dict()["layer1.0.conv1.weight"],
                               local_imagenet["layer1.0.conv1.weight"], rtol=0, atol=0)
    # from now on the cache is enough
    again = build_model("csunet-tiny")
    apply_sources(again, "resnet10t-imagenet", None, allow_download=False)
    torch.testing.assert_close(again.cnn.body.state_dict(), model.cnn.body.state_dict(), rtol=0, atol=0)


def test_hand_dropped_file_is_used_and_checked(local_imagenet, monkeypatch):
    from napari_csunet.models import build_model

    src = get_source("resnet10t-imagenet")
    dropped = download_path(src)
    dropped.parent.mkdir(parents=True, exist_ok=True)
    torch.save(local_imagenet, dropped)
    monkeypatch.setitem(KNOWN_SHA256, src.id, "f" * 64)
    with pytest.raises(WeightsFormatError, match=f"{dropped}: SHA-256 differs"):
        apply_sources(build_model("csunet-tiny"), "imagenet", None, allow_download=False)
    monkeypatch.delitem(KNOWN_SHA256, src.id)
    apply_sources(build_model("csunet-tiny"), "imagenet", None, allow_download=False)
    assert converted_path(src).is_file()


def test_cache_dir_precedence(monkeypatch, tmp_path):
    from napari_csunet.settings import Settings, save_settings

    assert cache_dir() == Path(__import__("os").environ["CSUNET_CACHE_DIR"])
    monkeypatch.delenv("CSUNET_CACHE_DIR")
    monkeypatch.setenv("CSUNET_CONFIG_DIR", str(tmp_path / "config"))
    assert cache_dir().parts[-2:] == ("napari-csunet", "weights")
    save_settings(Settings(weight_cache_dir=str(tmp_path / "chosen")))
    assert cache_dir() == tmp_path / "chosen"
