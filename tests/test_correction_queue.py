"""The correction queue's ranking and bookkeeping, and the live update's one-cycle-at-a-time rule."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_csunet.loop.correction_queue import (
    ACCEPTED,
    PAINTED,
    TODO,
    CorrectionQueue,
    novelty,
    rank_regions,
    region_features,
    tile_boxes,
)
from napari_csunet.loop.live_update import LiveUpdate, live_job_spec


@pytest.mark.parametrize(("shape", "size", "count", "last"), [
    ((512, 512), 256, 4, (256, 256, 512, 512)),
    ((600, 300), 256, 6, (512, 256, 600, 300)),  # border regions are clipped, not shifted
    ((100, 100), 256, 1, (0, 0, 100, 100)),
])
def test_tile_boxes_cover_the_image_once(shape, size, count, last):
    boxes = tile_boxes(shape, size)
    cover = np.zeros(shape, int)
    for r0, c0, r1, c1 in boxes:
        cover[r0:r1, c0:c1] += 1
    assert len(boxes) == count and boxes[-1] == last and (cover == 1).all()


def _uncertainty() -> np.ndarray:
    u = np.full((512, 512), 0.05, np.float32)
    u[300:330, 280:480] = 0.6  # a thin uncertain boundary (9% of the region) bottom right
    u[0:256, 256:512] = 0.2  # a uniformly unsure top-right region
    return u


def test_regions_rank_a_thin_uncertain_boundary_first():
    ranked = rank_regions(_uncertainty(), 256)
    assert [r.box for r in ranked][:2] == [(256, 256, 512, 512), (0, 256, 256, 512)]
    assert ranked[-1].score == pytest.approx(0.05)
    # plain means would put the uniform region first: the top share is what finds the boundary
    assert [r.box for r in rank_regions(_uncertainty(), 256, top=1.0)][0] == (0, 256, 256, 512)


def test_disagreement_and_done_pixels_change_the_order():
    u = _uncertainty()
    tta = np.zeros_like(u)
    tta[0:100, 0:100] = 1.0
    assert rank_regions(u, 256, disagreement=tta)[0].box == (0, 0, 256, 256)
    done = np.zeros(u.shape, bool)
    done[256:, 256:] = True
    assert rank_regions(u, 256, done=done)[0].box == (0, 256, 256, 512)
    with pytest.raises(ValueError, match="disagreement"):
        rank_regions(u, 256, disagreement=tta[:10])


def _two_materials() -> np.ndarray:
    """A 512² image: dark background everywhere but a bright phase in the bottom-right region."""
    image = np.random.default_rng(0).normal(60, 5, (512, 512))
    image[256:, 256:] = np.random.default_rng(1).normal(200, 5, (256, 256))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [None, 3])
def test_a_collapsed_model_is_led_to_the_material_it_has_not_been_shown(channels):
    image = _two_materials() if channels is None else np.repeat(_two_materials()[..., None], channels, -1)
    flat = np.full((512, 512), 0.013, np.float32)  # sure of "background" everywhere, as on EBC2
    flat[:256, :256] = 0.02  # noise decides the order without the image
    done = np.zeros((512, 512), bool)
    done[:256, 256:] = True  # one background region labelled
    assert rank_regions(flat, 256, done=done)[0].box == (0, 0, 256, 256)  # uncertainty alone: more background
    ranked = rank_regions(flat, 256, done=done, image=image)
    assert ranked[0].box == (256, 256, 512, 512) and ranked[0].score == pytest.approx(0.013 + 0.5, abs=0.01)
    assert rank_regions(flat, 256, done=done, image=image, novelty_weight=0)[0].box == (0, 0, 256, 256)


def test_novelty_is_half_the_l1_distance_to_the_nearest_labelled_histogram():
    image = _two_materials()
    feats = region_features(image, [(0, 0, 256, 256), (256, 256, 512, 512)])
    assert feats.shape == (2, 16) and np.allclose(feats.sum(1), 1)
    assert novelty(feats, feats[:1]).tolist() == pytest.approx([0.0, 1.0])
    assert novelty(feats, np.zeros((0, 16))).tolist() == [0.0, 0.0]  # nothing labelled: no novelty
    # a new image's regions are compared with regions labelled in other images too
    ranked = rank_regions(np.full((512, 512), 0.1, np.float32), 256, image=image, reference=feats[1:])
    assert ranked[-1].box == (256, 256, 512, 512)
    with pytest.raises(ValueError, match="image"):
        rank_regions(np.zeros((512, 512)), 256, image=image[:100])


def test_accepting_a_region_rescores_the_rest_so_next_leads_to_new_material():
    image = _two_materials()
    flat = np.full((512, 512), 0.013, np.float32)
    flat[:256, :256] = 0.02
    queue = CorrectionQueue.from_uncertainty(flat, 256, image=image)
    assert queue.next().box == (0, 0, 256, 256)  # nothing done yet: uncertainty decides
    queue.accept()
    assert queue.next().box == (256, 256, 512, 512)  # no re-segmentation needed
    queue.rerank(flat)  # a new prediction keeps the novelty (the image does not change)
    assert queue.regions[0].box == (256, 256, 512, 512) and queue.region().box == (256, 256, 512, 512)
    plain = CorrectionQueue.from_uncertainty(flat, 256)
    plain.next()
    plain.accept()
    assert plain.next().box != (256, 256, 512, 512)  # without the image: uncertainty order
    plain.rerank(flat, image=image)  # the image given later
    assert plain.regions[0].box == (256, 256, 512, 512)
    with pytest.raises(ValueError, match="image"):
        CorrectionQueue.from_uncertainty(flat, 256, image=image[:100])


def test_nan_pixels_do_not_erase_the_histograms():
    image = _two_materials().astype(np.float32)
    image[0, 0] = np.nan
    feats = region_features(image, [(0, 0, 256, 256), (256, 256, 512, 512)])
    assert novelty(feats[1:], feats[:1])[0] > 0.9


def test_queue_walks_worst_first_and_counts_what_is_left():
    queue = CorrectionQueue.from_uncertainty(_uncertainty(), 256)
    assert queue.remaining == 4 and queue.region() is None
    first = queue.next()
    assert first.box == (256, 256, 512, 512)
    queue.accept()
    assert first.state == ACCEPTED and queue.remaining == 3 and queue.accepted_boxes() == [[256, 256, 512, 512]]
    second = queue.next()
    changed = np.zeros((512, 512), bool)
    changed[10, 10] = True  # the user painted one pixel in the top-left region
    painted = queue.mark_painted(changed)
    assert [r.box for r in painted] == [(0, 0, 256, 256)] and painted[0].state == PAINTED
    assert second.state == TODO and queue.remaining == 2
    assert "2 of 4 regions left" in queue.summary() and "1 painted, 1 accepted" in queue.summary()
    assert queue.next() is not second and queue.next() is second  # wraps around the regions left
    queue.accept()
    queue.mark(ACCEPTED, queue.regions.index(next(r for r in queue.regions if not r.done)))
    assert queue.remaining == 0 and queue.next() is None


def test_queue_rerank_keeps_done_regions_and_refuses_other_shapes():
    queue = CorrectionQueue.from_uncertainty(_uncertainty(), 256)
    queue.next()
    queue.accept()
    current = queue.next()
    flipped = np.full((512, 512), 0.05, np.float32)
    flipped[:256, :256] = 0.9
    queue.rerank(flipped)
    assert queue.regions[0].box == (0, 0, 256, 256)
    assert next(r for r in queue.regions if r.box == (256, 256, 512, 512)).state == ACCEPTED
    assert queue.region() is current
    with pytest.raises(ValueError, match="does not fit"):
        queue.rerank(np.zeros((256, 256)))
    with pytest.raises(ValueError, match="state"):
        queue.mark("maybe")


def test_from_uncertainty_counts_vouched_regions_as_done():
    done = np.zeros((512, 512), bool)
    done[:200, :] = True
    queue = CorrectionQueue.from_uncertainty(_uncertainty(), 256, done=done)
    assert queue.remaining == 2 and {r.box for r in queue.regions if r.done} == {(0, 0, 256, 256), (0, 256, 256, 512)}


class _Cycles:
    def __init__(self, ok: bool = True) -> None:
        self.started, self.ok = 0, ok

    def __call__(self) -> bool:
        self.started += 1
        return self.ok


def test_live_update_runs_one_cycle_and_queues_one_more():
    clock = iter([0.0, 5.0, 6.0, 40.0, 70.0]).__next__
    cycles = _Cycles()
    live = LiveUpdate(cycles, clock=clock)
    assert live.request() == "off" and cycles.started == 0
    live.enabled = True
    assert live.request() == "started" and live.running  # t=0
    assert live.request() == "queued" and live.request() == "queued"  # t=5, t=6: one queued, not two
    assert cycles.started == 1 and live.pending
    assert live.finished() == "started"  # t=40: the first cycle answered in 40 s; the queued one starts
    assert live.last_seconds == pytest.approx(40.0) and cycles.started == 2 and not live.pending
    assert live.finished() is None and not live.running  # t=70: 65 s after the queued correction at t=5
    assert live.last_seconds == pytest.approx(65.0)
    assert "prediction updated at" in live.describe() and "65 s" in live.describe()


def test_live_update_refused_cycle_and_cancelled_queue():
    live = LiveUpdate(_Cycles(ok=False))
    live.enabled = True
    assert live.request() == "refused" and not live.running
    live = LiveUpdate(_Cycles())
    live.enabled = True
    live.request()
    live.request()
    live.cancel_pending()
    assert live.finished(ok=False) is None and live.last_updated is None


def test_live_job_spec_is_a_short_frozen_finetune(tmp_path):
    spec = live_job_spec(tmp_path / "m.safetensors", [{"image": "a.tif", "labels": "b.tif"}], ["a", "b"],
                         tmp_path / "out.safetensors", steps=12)
    assert spec.freeze_cnn and spec.freeze_swin and spec.steps == 12 and spec.eval_every == 10
    assert spec.mode == "finetune" and spec.crop == 256 and spec.holdout == "blocks"
    assert spec.threads == max(1, (os.cpu_count() or 2) - 1)  # a core left to napari
    assert live_job_spec("m.safetensors", [], ["a"], tmp_path / "o.safetensors", steps=4, threads=3).eval_every == 4
    from csunet_train.config import ConfigError

    with pytest.raises(ConfigError, match="crop"):
        live_job_spec("m.safetensors", [], ["a"], tmp_path / "o.safetensors", crop=100)
