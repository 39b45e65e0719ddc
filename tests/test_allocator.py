"""Heap reuse during CPU predictions: glibc's allocator switched and restored, results unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_csunet.engine import allocator


class FakeLibc:
    """Records mallopt/malloc_trim calls instead of changing the real allocator."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def fake(monkeypatch) -> FakeLibc:
    allocator.release_heap()  # a prediction of an earlier test may have left the real heap kept
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "_LIBC", libc)
    monkeypatch.delenv("CSUNET_HEAP_REUSE", raising=False)
    return libc


SWITCH = [("mallopt", -4, 0), ("mallopt", -1, -1)]
RESTORE = [("mallopt", -4, 65536), ("mallopt", -1, 128 * 1024), ("trim", 0)]


@pytest.fixture(autouse=True)
def nothing_kept_between_tests():
    yield
    allocator.release_heap()


def test_switches_once_for_nested_uses_and_restores_at_the_end(fake):
    with allocator.heap_reuse(linger_s=0):
        with allocator.heap_reuse(linger_s=0):
            assert fake.calls == SWITCH
        assert len(fake.calls) == 2  # the inner block leaving does not restore
    assert fake.calls[2:] == RESTORE
    assert allocator._active == 0


def test_restores_when_the_prediction_fails(fake):
    with pytest.raises(RuntimeError), allocator.heap_reuse(linger_s=0):
        raise RuntimeError("out of memory")
    assert fake.calls[-1] == ("trim", 0) and allocator._active == 0


def test_the_heap_is_kept_for_the_next_prediction_then_given_back(fake):
    with allocator.heap_reuse(linger_s=60):
        pass
    assert fake.calls == SWITCH  # kept: nothing restored, nothing trimmed
    with allocator.heap_reuse(linger_s=0.05):  # the next image reuses it without switching again
        pass
    assert fake.calls == SWITCH
    deadline = threading.Event()
    for _ in range(100):
        if fake.calls[2:] == RESTORE:
            break
        deadline.wait(0.05)
    assert fake.calls[2:] == RESTORE  # given back by the timer, once
    allocator.release_heap()
    assert fake.calls[2:] == RESTORE


def test_release_heap_gives_it_back_now_but_never_during_a_prediction(fake):
    with allocator.heap_reuse(linger_s=60):
        allocator.release_heap()
        assert fake.calls == SWITCH
    allocator.release_heap()
    assert fake.calls[2:] == RESTORE and allocator._timer is None


@pytest.mark.parametrize(("enabled", "env"), [(False, None), (True, "0")])
def test_off_when_not_asked_or_turned_off_by_the_environment(fake, monkeypatch, enabled, env):
    if env is not None:
        monkeypatch.setenv("CSUNET_HEAP_REUSE", env)
    with allocator.heap_reuse(enabled):
        pass
    assert fake.calls == []


def test_concurrent_predictions_share_one_switch(fake):
    inside = threading.Barrier(2)

    def run() -> None:
        with allocator.heap_reuse(linger_s=0):
            inside.wait(timeout=10)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c[0] for c in fake.calls].count("trim") == 1 and fake.calls[0] == ("mallopt", -4, 0)


@pytest.mark.skipif(not allocator.heap_reuse_available(), reason="glibc only")
def test_predictions_are_identical_with_and_without_heap_reuse(monkeypatch):
    import torch

    from napari_csunet.engine.predictor import Segmenter
    from napari_csunet.models import build_model, get_preset
    from napari_csunet.models.modelfile import ModelInfo

    torch.manual_seed(0)
    config = get_preset("csunet-tiny").config
    seg = Segmenter(build_model(config), ModelInfo(config, ["a", "b", "c"]), device="cpu", tile=256, batch_size=2)
    image = np.random.default_rng(0).integers(0, 255, (300, 420), dtype=np.uint8)
    with_reuse = seg.predict(image, want_probs=True)
    monkeypatch.setenv("CSUNET_HEAP_REUSE", "0")
    without = seg.predict(image, want_probs=True)
    np.testing.assert_array_equal(with_reuse.labels, without.labels)
    np.testing.assert_array_equal(with_reuse.probs, without.probs)


@pytest.mark.parametrize(("value", "expected"), [("5", 5.0), ("0", 0.0), ("soon", 20.0)])
def test_linger_setting_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CSUNET_HEAP_LINGER", value)
    assert allocator._linger_from_env() == expected


@pytest.mark.skipif(getattr(allocator._LIBC, "mallinfo2", None) is None, reason="glibc >= 2.33 only")
def test_kept_heap_counts_as_available_memory_for_the_budget(monkeypatch):
    import torch

    from napari_csunet.engine import memory_plan

    monkeypatch.setattr(allocator, "LINGER_S", 60.0)
    size = 256 * 2**20
    with allocator.heap_reuse():
        block = np.ones(size, np.uint8)  # resident, from the heap while it is kept
        del block
    kept = allocator.kept_heap_bytes()
    monkeypatch.setattr(memory_plan, "available_ram", lambda: (64 * 2**30, 2**30))
    with_kept = memory_plan.device_budget(torch.device("cpu"))
    allocator.release_heap()
    assert kept >= size and allocator.kept_heap_bytes() == 0  # given back: no longer ours to count
    assert with_kept >= int(0.6 * (2**30 + size))  # 1 GiB available + the kept 256 MiB
    assert memory_plan.device_budget(torch.device("cpu")) < with_kept
