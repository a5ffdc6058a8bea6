"""The scribble robot against the golden `ivos` vectors (davisinteractive 1.0.4 robot) and real DAVIS masks."""

import json

import cv2
import numpy as np
import pytest

from datamodules.vos_io import read_label_png
from zoo.interactive import geometry
from zoo.interactive.robot import InteractiveScribblesRobot, RobotSession, choose_frame, scribble_outside_fraction

SEQUENCES = ("iseq_a", "iseq_b")


def _labels(folder):
    return np.stack([read_label_png(path) for path in sorted(folder.glob("*.png"))])


def _fixed_clock():
    return 0.0


@pytest.fixture(scope="module")
def ivos(golden):
    expected = json.loads((golden / "expected.json").read_text())["ivos"]
    gt = {seq: _labels(golden / "ivos" / "gt" / seq) for seq in SEQUENCES}
    preds = {(k, seq): _labels(golden / "ivos" / "pred" / str(k) / seq) for k in range(1, 9) for seq in SEQUENCES}
    return expected, gt, preds


def _run_rounds(robot, ivos):
    expected, gt, preds = ivos
    rounds = {}
    for seq in SEQUENCES:
        session = RobotSession(robot, seq, gt[seq], expected["num_objects"][seq])
        rounds[seq] = [session.submit(preds[k, seq]) for k in range(1, 9)]
    return rounds


@pytest.fixture(scope="module")
def reference_rounds(ivos):
    return _run_rounds(InteractiveScribblesRobot(clock=_fixed_clock), ivos)


@pytest.fixture(scope="module")
def strict_rounds(ivos):
    return _run_rounds(InteractiveScribblesRobot(clock=_fixed_clock, strict=True), ivos)


@pytest.mark.parametrize("mode", ["reference_rounds", "strict_rounds"])
def test_next_frames_match_golden(mode, ivos, request):
    expected = ivos[0]
    rounds = request.getfixturevalue(mode)
    for seq in SEQUENCES:
        frames = [[out["annotated_frame"]] for out in rounds[seq]]
        assert frames == expected["robot_next_frames"][seq]
        for out in rounds[seq]:  # only the chosen frame carries strokes
            assert [i for i, strokes in enumerate(out["scribbles"]) if strokes] == [out["annotated_frame"]]


def test_scribbles_follow_the_reference_robot(ivos, reference_rounds):
    expected = ivos[0]
    total = identical = 0
    for seq in SEQUENCES:
        for k, out in enumerate(reference_rounds[seq], start=1):
            frame = out["annotated_frame"]
            golden = expected["robot_scribbles"][seq][str(k)][str(frame)]
            mine = out["scribbles"][frame]
            # same strokes per object, in the same order, every round
            assert [s["object_id"] for s in mine] == [s["object_id"] for s in golden]
            for ours, theirs in zip(mine, golden):
                assert len(ours["path"]) == len(theirs["path"])
                total += 1
                identical += np.abs(np.subtract(ours["path"], theirs["path"])).max() < 1e-6  # golden has 6 decimals
    # The rest differ only by which end of an equally long skeleton path networkx reaches first (set-ordered node
    # iteration); 57 of 74 strokes are identical with the current tie-break.
    assert total == 74 and identical >= 57


def test_standalone_robot_uses_jaccard_worst_frame(ivos):
    expected, gt, preds = ivos
    golden = expected["robot_standalone_interaction1_iseq_a"]
    robot = InteractiveScribblesRobot(metric="J", clock=_fixed_clock)
    out = robot.interact("iseq_a", preds[1, "iseq_a"], gt["iseq_a"], nb_objects=2)
    assert [str(out["annotated_frame"])] == list(golden["frames"])


def test_strict_scribbles_lie_inside_the_error_region_of_their_object(ivos, strict_rounds):
    expected, gt, preds = ivos
    for seq in SEQUENCES:
        for k, out in enumerate(strict_rounds[seq], start=1):
            frame = out["annotated_frame"]
            for stroke in out["scribbles"][frame]:
                obj = stroke["object_id"]
                error = (gt[seq][frame] == obj) & (preds[k, seq][frame] != obj)
                assert scribble_outside_fraction(stroke["path"], error) == 0.0


def _perturbed(gt):
    """A plausible wrong prediction: objects shifted, eroded and, for object 1, grown into the background."""
    pred = np.zeros_like(gt)
    for obj in [o for o in np.unique(gt) if 0 < o < 255]:
        for frame in range(len(gt)):
            mask = np.roll((gt[frame] == obj).astype(np.uint8), (9, -14), axis=(0, 1))
            if obj == 1:
                mask = cv2.dilate(mask, np.ones((15, 15), np.uint8))
            else:
                mask = cv2.erode(mask, np.ones((7, 7), np.uint8))
            pred[frame][mask > 0] = obj
    return pred


def test_strict_scribbles_are_valid_on_real_davis_masks(realdata):
    robot = InteractiveScribblesRobot(strict=True, clock=_fixed_clock)
    for seq in ("blackswan", "tennis"):
        gt = _labels(realdata / "DAVIS" / "Annotations" / "480p" / seq)[:2]
        pred = _perturbed(gt)
        out = robot.interact(seq, pred, gt)
        frame = out["annotated_frame"]
        strokes = out["scribbles"][frame]
        assert {s["object_id"] for s in strokes} >= {0, 1}  # positive and negative scribbles
        for stroke in strokes:
            error = (gt[frame] == stroke["object_id"]) & (pred[frame] != stroke["object_id"])
            assert scribble_outside_fraction(stroke["path"], error) == 0.0


def test_deterministic_for_a_seed(ivos):
    _, gt, preds = ivos
    outputs = [
        json.dumps(InteractiveScribblesRobot(seed=seed, clock=_fixed_clock).interact(
            "iseq_b", preds[3, "iseq_b"], gt["iseq_b"], 2))
        for seed in (7, 7)
    ]
    assert outputs[0] == outputs[1]
    skeletons = [geometry.medial_axis(np.pad(np.ones((9, 20), bool), 2), seed=seed) for seed in (0, 1, 0)]
    assert np.array_equal(skeletons[0], skeletons[2])


def test_frame_choice_with_candidates_and_used_frames():
    scores = np.array([0.5, 0.1, 0.9, 0.3])
    assert choose_frame(scores) == 1
    assert choose_frame(scores, annotated_frames=[1]) == 3
    assert choose_frame(scores, candidates=[0, 2]) == 0
    assert choose_frame(scores, annotated_frames=[0], candidates=[0]) == 0  # only used candidates left: allowed
    assert choose_frame(scores, annotated_frames=[0, 1, 2, 3]) == 1  # every frame used: start over
    assert choose_frame(np.array([0.2, 0.2, 0.2])) == 0  # ties go to the earlier frame
    with pytest.raises(ValueError, match="no candidate frame"):
        choose_frame(scores, candidates=[7])


def test_geometry_pieces():
    # medial axis of a bar is its centre line; the skeleton tree of a line is a path; Bézier keeps the end points
    bar = np.zeros((9, 30), bool)
    bar[2:7, 3:27] = True
    skeleton = geometry.medial_axis(bar)
    assert skeleton[4, 5:25].all() and not (skeleton & ~bar).any()
    assert skeleton.sum() - skeleton[4].sum() <= 8  # besides the centre line, only short arms into the corners
    trees = geometry.skeleton_trees(skeleton)
    assert len(trees) == 1
    path = geometry.longest_path(trees[0])
    points = geometry.skeleton_points(skeleton)[path]
    assert len(path) >= 22 and np.abs(np.diff(points, axis=0)).max() == 1  # corner to corner, 8-connected steps
    curve = geometry.bezier_curve(points, 50)
    np.testing.assert_allclose(curve[0], points[-1])  # the reference's Bernstein form starts at the last point
    np.testing.assert_allclose(curve[-1], points[0])
    # a closed ring is cut into a tree
    ring = np.zeros((12, 12), bool)
    ring[2:10, 2:10] = True
    ring[4:8, 4:8] = False
    nodes = int(geometry.medial_axis(ring).sum())
    (tree,) = geometry.skeleton_trees(geometry.medial_axis(ring))
    assert sum(len(n) for n in tree.values()) // 2 == nodes - 1


def test_bad_input(ivos):
    _, gt, preds = ivos
    robot = InteractiveScribblesRobot()
    with pytest.raises(ValueError, match="iseq_a: predicted and ground-truth masks"):
        robot.interact("iseq_a", preds[1, "iseq_a"][:5], gt["iseq_a"], 2)
    with pytest.raises(ValueError, match="frame 10 is outside"):
        robot.interact("iseq_a", preds[1, "iseq_a"], gt["iseq_a"], 2, frame=10)
    with pytest.raises(ValueError, match="kernel_size"):
        InteractiveScribblesRobot(kernel_size=1.5)
