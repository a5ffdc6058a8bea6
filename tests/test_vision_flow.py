"""Optical flow (OpenCV DIS, torchvision RAFT at random init) on real DAVIS frames of bear."""

import cv2
import numpy as np
import pytest

from datamodules.image_io import read_rgb
from zoo.vision.flow import DISSettings, FlowEstimator, RAFTSettings


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def bear(realdata):
    folder = realdata / "DAVIS2016" / "JPEGImages" / "480p" / "bear"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return [read_rgb(folder / f"{index:05d}.jpg") for index in (0, 1)]


@pytest.mark.parametrize("shift", [(5, 3), (-4, 2), (2.5, -1.5)])
def test_dis_recovers_a_synthetic_shift_of_a_real_frame(bear, shift):
    dx, dy = shift
    frame = bear[0]
    # target(x + dx, y + dy) = source(x, y): the content moves by (dx, dy)
    moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (frame.shape[1], frame.shape[0]),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    forward, backward = FlowEstimator("dis").forward_backward(frame, moved)
    interior = (slice(30, -30), slice(30, -30))
    np.testing.assert_allclose(np.median(forward[interior].reshape(-1, 2), axis=0), shift, atol=0.2)
    np.testing.assert_allclose(np.median(backward[interior].reshape(-1, 2), axis=0), (-dx, -dy), atol=0.2)
    assert np.mean(np.linalg.norm(forward[interior] - shift, axis=-1) < 0.5) > 0.8


def test_dis_flow_on_consecutive_frames_is_cached_per_direction_and_settings(bear, tmp_path):
    estimator = FlowEstimator("dis", cache_dir=tmp_path)
    forward, backward = estimator.forward_backward(bear[0], bear[1], video="bear", first_frame=0, second_frame=1)
    for flow in (forward, backward):
        assert flow.shape == (480, 854, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()
    assert estimator.model_calls == 2 and not np.array_equal(forward, backward)

    again_forward, again_backward = estimator.forward_backward(
        bear[0], bear[1], video="bear", first_frame=0, second_frame=1
    )
    assert estimator.model_calls == 2 and estimator.cache.hits == 2
    assert np.array_equal(again_forward, forward) and np.array_equal(again_backward, backward)

    coarser = FlowEstimator("dis", settings=DISSettings(preset="ultrafast"), cache_dir=tmp_path)
    coarse_forward = coarser(bear[0], bear[1], video="bear", source_frame=0, target_frame=1)
    assert coarser.model_calls == 1 and coarser.cache.hits == 0
    assert not np.array_equal(coarse_forward, forward)


def test_raft_small_pads_odd_small_frames_and_caches_by_settings(bear, tmp_path):
    first, second = (cv2.resize(frame, (203, 117), interpolation=cv2.INTER_AREA) for frame in bear)
    raft = FlowEstimator("raft_small", settings=RAFTSettings(num_flow_updates=2), weights=None, cache_dir=tmp_path)
    assert not raft.pretrained and raft.cache_key()["weights"] == "random-init-seed0"
    flow = raft(first, second, video="bear", source_frame=0, target_frame=1)
    assert flow.shape == (117, 203, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()
    assert np.array_equal(raft(first, second, video="bear", source_frame=0, target_frame=1), flow)
    assert raft.model_calls == 1

    longer = FlowEstimator("raft_small", settings=RAFTSettings(num_flow_updates=3), weights=None, cache_dir=tmp_path)
    longer(first, second, video="bear", source_frame=0, target_frame=1)
    assert longer.model_calls == 1 and longer.cache.hits == 0


def test_bad_inputs_are_refused(bear):
    estimator = FlowEstimator("dis")
    with pytest.raises(ValueError, match="differ in size"):
        estimator(bear[0], bear[1][:100])
    with pytest.raises(ValueError, match="uint8 RGB"):
        estimator(bear[0].astype(np.float32), bear[1])
    with pytest.raises(ValueError, match="preset"):
        FlowEstimator("dis", settings=DISSettings(preset="slow"))
    with pytest.raises(TypeError, match="RAFTSettings"):
        FlowEstimator("raft_small", settings=DISSettings(), weights=None)
    with pytest.raises(ValueError, match="unknown flow method"):
        FlowEstimator("pwcnet")
