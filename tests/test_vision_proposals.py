"""Mask R-CNN proposals on a real DAVIS frame (bear, downscaled to 240 px high, 1 thread, random init offline)."""

import cv2
import numpy as np
import pytest
import torch

from datamodules.image_io import read_rgb
from zoo.vision.proposals import ProposalGenerator, ProposalSettings, crop_box

SMALL = ProposalSettings(min_size=240, max_size=427, rpn_proposals=100, detections_per_img=20)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def frame(realdata):
    path = realdata / "DAVIS2016" / "JPEGImages" / "480p" / "bear" / "00000.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return cv2.resize(read_rgb(path), (427, 240), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("proposal-cache")


@pytest.fixture(scope="module")
def generator(cache_dir):
    return ProposalGenerator("maskrcnn_resnet50_fpn", weights=None, settings=SMALL, cache_dir=cache_dir)


def test_whole_frame_proposals_have_documented_shapes_and_are_cached(generator, frame):
    proposals = generator(frame, video="bear", frame=0)
    count = len(proposals)
    assert 0 < count <= SMALL.detections_per_img
    assert proposals.boxes.shape == (count, 4) and proposals.boxes.dtype == np.float32
    assert proposals.scores.shape == (count,) and proposals.scores.dtype == np.float32
    assert proposals.labels.shape == (count,) and proposals.labels.dtype == np.int64
    assert proposals.masks.shape == (count, 240, 427) and proposals.masks.dtype == bool
    assert proposals.features.shape == (count, 256) and proposals.features.dtype == np.float32
    assert np.all(np.diff(proposals.scores) <= 0) and np.all(proposals.scores > SMALL.box_score_thresh)
    assert np.all(proposals.boxes[:, :2] >= 0) and np.all(proposals.boxes[:, 2] <= 427)
    assert np.all(proposals.boxes[:, 3] <= 240) and proposals.masks.any()
    assert not generator.pretrained and generator.model_calls == 1

    again = generator(frame, video="bear", frame=0)
    assert generator.model_calls == 1 and generator.cache.hits == 1
    for name, array in proposals.as_arrays().items():
        assert np.array_equal(getattr(again, name), array), name


def test_search_region_proposals_map_back_to_frame_coordinates(generator, frame):
    region = (60.4, 30.2, 300.7, 200.1)
    left, top, right, bottom = crop_box(region, 240, 427)
    assert (left, top, right, bottom) == (60, 30, 301, 201)
    in_region = generator(frame, video="bear", frame=0, region=region)  # a different cache entry from the whole frame
    assert generator.model_calls == 2
    on_crop = generator(np.ascontiguousarray(frame[top:bottom, left:right]))
    assert len(in_region) == len(on_crop) > 0
    np.testing.assert_allclose(in_region.boxes, on_crop.boxes + [left, top, left, top], atol=1e-3)
    np.testing.assert_array_equal(in_region.masks[:, top:bottom, left:right], on_crop.masks)
    outside = in_region.masks.copy()
    outside[:, top:bottom, left:right] = False
    assert in_region.masks.shape == (len(in_region), 240, 427) and not outside.any()
    assert np.all(in_region.boxes[:, 0] >= left) and np.all(in_region.boxes[:, 2] <= right)
    assert np.all(in_region.boxes[:, 1] >= top) and np.all(in_region.boxes[:, 3] <= bottom)
    np.testing.assert_allclose(in_region.features, on_crop.features, rtol=1e-5, atol=1e-6)

    calls = generator.model_calls
    cached = generator(frame, video="bear", frame=0, region=region)
    assert generator.model_calls == calls and np.array_equal(cached.boxes, in_region.boxes)


def test_changed_setting_misses_the_cache(cache_dir, frame, generator):
    generator(frame, video="bear", frame=0)  # ensure the entry for SMALL exists
    stricter = ProposalSettings(**{**SMALL.__dict__, "box_score_thresh": 0.55, "class_agnostic_nms_thresh": 0.3})
    other = ProposalGenerator("maskrcnn_resnet50_fpn", weights=None, settings=stricter, cache_dir=cache_dir)
    proposals = other(frame, video="bear", frame=0)
    assert other.model_calls == 1 and other.cache.hits == 0
    assert len(proposals) > 1 and np.all(proposals.scores > 0.55)
    from torchvision.ops import box_iou

    overlaps = box_iou(torch.from_numpy(proposals.boxes), torch.from_numpy(proposals.boxes)).fill_diagonal_(0)
    assert overlaps.max() <= 0.3 + 1e-6


def test_crop_box_clips_to_the_frame_and_rejects_regions_outside_it():
    assert crop_box((-50, -20.5, 100.2, 80), 240, 427) == (0, 0, 101, 80)
    assert crop_box((400, 200, 900, 900), 240, 427) == (400, 200, 427, 240)
    with pytest.raises(ValueError, match="overlaps the frame"):
        crop_box((500, 10, 600, 50), 240, 427)
    with pytest.raises(ValueError, match="x0, y0, x1, y1"):
        crop_box((1, 2, 3), 240, 427)


def test_bad_inputs_are_refused(generator):
    with pytest.raises(ValueError, match="uint8 RGB"):
        generator(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="unknown proposal model"):
        ProposalGenerator("yolact", weights=None)
