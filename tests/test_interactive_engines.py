"""Interactive VOS engines: the interface contract and the weight-free FlowPropagationEngine on synthetic videos."""

import copy

import numpy as np
import pytest

from datamodules.synthetic_vos import _scribble_for, render_video
from zoo.interactive.engines import EngineOutput, FlowPropagationEngine, InteractiveEngine, rasterise_strokes
from zoo.interactive.robot import InteractiveScribblesRobot
from zoo.vision.flow import FlowEstimator

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


def _round(labels, frame, object_ids):
    """davis-interactive dict with one horizontal stroke per object on `frame` (the synthetic DAVIS scribbles)."""
    strokes = [[] for _ in range(len(labels))]
    strokes[frame] = _scribble_for(labels[frame], list(object_ids), start_time=0.0)
    return {"sequence": "synth", "scribbles": strokes}


@pytest.fixture(scope="module")
def two_objects():
    video = render_video(3, num_frames=10, num_objects=2)
    return video.frames, np.stack(video.labels)


@pytest.fixture(scope="module")
def easy():
    """One slowly moving object over 30 frames: DIS flow follows it."""
    video = render_video(0, num_frames=30, num_objects=1)
    return video.frames, np.stack(video.labels)


def _check_output(out, num_objects, shape):
    assert isinstance(out, EngineOutput)
    num_frames, height, width = shape
    probs, labels = out.probabilities, out.labels
    assert probs.shape == (num_objects + 1, num_frames, height, width) and probs.dtype == np.float32
    assert labels.shape == shape and labels.dtype == np.uint8
    assert np.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert labels.max() <= num_objects
    np.testing.assert_array_equal(labels, probs.argmax(axis=0))


def test_interface_contract(two_objects):
    frames, gt = two_objects
    engine = FlowPropagationEngine()
    assert isinstance(engine, InteractiveEngine)
    with pytest.raises(RuntimeError, match="start"):
        engine.interact(0, [])
    with pytest.raises(ValueError, match="uint8"):
        engine.start([frame.astype(np.float32) for frame in frames], 2)
    engine.start(frames, 2)
    scribbles = _round(gt, 4, (1, 2))
    out = engine.interact(4, scribbles)
    _check_output(out, 2, gt.shape)
    assert set(np.unique(out.labels[4])) == {0, 1, 2}
    assert not out.labels.flags.writeable  # views of the engine's state
    first = out.probabilities.copy()

    # a plain list of the frame's strokes is the same round
    engine.reset()
    with pytest.raises(RuntimeError):
        engine.output()
    np.testing.assert_array_equal(engine.interact(4, scribbles["scribbles"][4]).probabilities, first)

    bad = copy.deepcopy(scribbles)
    bad["scribbles"][4][0]["object_id"] = 3
    with pytest.raises(ValueError, match="object_id"):
        engine.interact(4, bad)
    with pytest.raises(ValueError, match="one frame"):
        engine.interact(5, scribbles)
    with pytest.raises(ValueError, match="outside"):
        engine.interact(10, [])


def test_engine_output_from_an_external_models_probabilities():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 3, (3, 4, 6, 8)).astype(np.float32)
    raw[:, 0, 0, 0] = 0  # a pixel with no mass anywhere is background
    out = EngineOutput.from_probabilities(raw)
    _check_output(out, 2, (4, 6, 8))
    assert out.labels[0, 0, 0] == 0 and out.probabilities[0, 0, 0, 0] == 1


def test_scribble_segments_the_object_and_propagation_follows_it(easy):
    frames, gt = easy
    engine = FlowPropagationEngine()
    engine.start(frames, 1)
    annotated = 15
    out = engine.interact(annotated, _round(gt, annotated, (1,)))
    _check_output(out, 1, gt.shape)
    assert _iou(out.labels[annotated] == 1, gt[annotated] == 1) > 0.7
    for t in (annotated - 3, annotated + 3):
        assert _iou(out.labels[t] == 1, gt[t] == 1) > 0.6, t
    for t in (annotated - 6, annotated + 6):
        assert _iou(out.labels[t] == 1, gt[t] == 1) > 0.5, t


def test_a_round_changes_only_the_frames_nearest_to_it(easy):
    frames, gt = easy
    engine = FlowPropagationEngine()
    engine.start(frames, 1)
    first = engine.interact(5, _round(gt, 5, (1,)))
    before = first.probabilities.copy()
    robot = InteractiveScribblesRobot(strict=True, clock=lambda: 0.0)
    scribbles = robot.interact("synth", first.labels.copy(), gt, 1, frame=24)
    assert scribbles["scribbles"][24]
    iou_before = _iou(first.labels[24] == 1, gt[24] == 1)
    out = engine.interact(24, scribbles)
    _check_output(out, 1, gt.shape)
    owners = engine.frame_owners()
    np.testing.assert_array_equal(owners, [5] * 15 + [24] * 15)  # frame 14.5 is the midpoint
    # frames nearer to frame 5 keep their probabilities bit for bit; the rest follow the new round
    np.testing.assert_array_equal(out.probabilities[:, :15], before[:, :15])
    assert not np.array_equal(out.probabilities[:, 24], before[:, 24])
    # every stroke pixel of the round carries its stroke's label, and the round helps on its frame
    drawn = rasterise_strokes(scribbles["scribbles"][24], gt.shape[1:])
    np.testing.assert_array_equal(out.labels[24][drawn >= 0], drawn[drawn >= 0])
    assert _iou(out.labels[24] == 1, gt[24] == 1) >= iou_before
    assert _iou(out.labels[24] == 1, gt[24] == 1) > 0.6


def test_ties_go_to_the_latest_round_and_reannotation_moves_it_last(easy):
    frames, gt = easy
    engine = FlowPropagationEngine()
    engine.start(frames[:9], 1)
    engine.interact(2, _round(gt, 2, (1,)))
    engine.interact(6, _round(gt, 6, (1,)))
    assert engine.frame_owners().tolist() == [2, 2, 2, 2, 6, 6, 6, 6, 6]
    engine.interact(2, [])
    assert engine.frame_owners().tolist() == [2, 2, 2, 2, 2, 6, 6, 6, 6]
    assert engine.annotated_frames == [6, 2]


def test_a_round_on_the_same_frame_corrects_the_previous_mask(easy):
    frames, gt = easy
    engine = FlowPropagationEngine()
    engine.start(frames, 1)
    annotated = 15
    before = engine.interact(annotated, _round(gt, annotated, (1,))).labels[annotated].copy()
    rows, columns = np.nonzero(before == 1)
    height, width = before.shape
    top = rows.min() + 2  # a background stroke across the object's top rows: the user says "not object" there
    inside = columns[rows == top]
    stroke = {"path": [[inside.min() / (width - 1), top / (height - 1)], [inside.max() / (width - 1),
                                                                          top / (height - 1)]], "object_id": 0}
    after = engine.interact(annotated, [stroke]).labels[annotated]
    drawn = rasterise_strokes([stroke], (height, width))
    assert (before[drawn == 0] == 1).all() and (after[drawn == 0] == 0).all()
    # the first round's object stroke still holds, and far from the new stroke the mask is kept
    first_strokes = rasterise_strokes(_round(gt, annotated, (1,))["scribbles"][annotated], (height, width))
    assert (after[first_strokes == 1] == 1).all()
    far = np.abs(np.arange(height) - top)[:, None].repeat(width, 1) > (inside.max() - inside.min()) / 2 + 6
    np.testing.assert_array_equal(after[far], before[far])


class _CountingFlow(FlowEstimator):
    def __init__(self):
        super().__init__("dis")
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return super().__call__(*args, **kwargs)


def test_flow_is_computed_once_per_video(two_objects, easy):
    frames, gt = two_objects
    flow = _CountingFlow()
    engine = FlowPropagationEngine(flow_estimator=flow)
    engine.start(frames, 2)
    assert flow.calls == 0
    pairs = 2 * (len(frames) - 1)
    for frame in (4, 0, 9):
        engine.interact(frame, _round(gt, frame, (1, 2)))
    assert flow.calls == engine.flow_calls == pairs
    engine.reset()
    engine.interact(3, _round(gt, 3, (1, 2)))
    engine.start(list(frames), 2)  # the same video again
    engine.interact(3, _round(gt, 3, (1, 2)))
    assert flow.calls == pairs
    other_frames, other_gt = easy
    engine.start(other_frames[:5], 1)
    engine.interact(2, _round(other_gt, 2, (1,)))
    assert flow.calls == pairs + 2 * 4


def test_a_background_stroke_on_a_propagated_frame_keeps_the_rest_of_its_mask(easy):
    frames, gt = easy
    engine = FlowPropagationEngine()
    engine.start(frames, 1)
    before = engine.interact(10, _round(gt, 10, (1,))).labels[14].copy()
    assert _iou(before == 1, gt[14] == 1) > 0.5
    height, width = before.shape
    # a short background stroke in a corner far from the object: the object's mask on frame 14 must survive
    rows, columns = np.nonzero(before == 1)
    corner_x = 0.05 if columns.mean() > width / 2 else 0.95
    corner_y = 0.05 if rows.mean() > height / 2 else 0.95
    stroke = {"path": [[corner_x, corner_y], [corner_x, abs(corner_y - 0.1)]], "object_id": 0}
    after = engine.interact(14, [stroke]).labels[14]
    np.testing.assert_array_equal(after, before)
