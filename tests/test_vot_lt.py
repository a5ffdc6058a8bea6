"""VOT long-term (VOT2018-LT / LTB35) precision, recall, F-score (`zoo.metrics.vot_lt`), the dataset reader and
synthetic writer (`datamodules.vot_lt`) and `python -m zoo.evaluate vot-lt`."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from datamodules.image_io import write_rgb
from datamodules.vot_lt import load_sequence, load_vot_lt, parse_region, read_regions, write_vot_lt
from zoo.evaluate import main
from zoo.metrics.vot_lt import (
    VOTLongTerm,
    count_visible,
    determine_thresholds,
    longterm_scores,
    region_overlaps,
    sequence_pr_curves,
)

TOLERANCE = 1e-9
NAN_BOX = [np.nan] * 4


# ------------------------------------------------------------------------------------------------ golden vectors


@pytest.fixture(scope="module")
def vot_golden(golden):
    expected = json.loads((golden / "expected.json").read_text())["vot_lt"]
    sequences = {}
    for name in expected["per_sequence"]:
        folder = golden / "vot_lt" / name
        width, height = (int(v) for v in (folder / "size.txt").read_text().split())
        sequences[name] = (np.loadtxt(folder / "pred.txt", delimiter=","), np.loadtxt(folder / "confidence.txt"),
                           np.loadtxt(folder / "groundtruth.txt", delimiter=","), (width, height))
    return expected, sequences


def _thresholds(values):
    return np.array([np.inf if v == "+inf" else -np.inf if v == "-inf" else v for v in values], dtype=np.float64)


def test_golden_summary_thresholds_and_curves(vot_golden):
    expected, sequences = vot_golden
    scores = longterm_scores(sequences)
    assert abs(scores["precision"] - expected["precision"]) < TOLERANCE
    assert abs(scores["recall"] - expected["recall"]) < TOLERANCE
    assert abs(scores["f_score"] - expected["f_score"]) < TOLERANCE
    assert scores["threshold_index"] == expected["best_threshold_index"]
    assert scores["threshold"] == expected["best_threshold"]
    np.testing.assert_array_equal(scores["thresholds"], _thresholds(expected["thresholds"]))
    curve = np.array(expected["curve_recall_precision"])
    np.testing.assert_allclose(scores["recall_curve"], curve[:, 0], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(scores["precision_curve"], curve[:, 1], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(scores["f_curve"], expected["f_curve"], rtol=0, atol=TOLERANCE)


def test_golden_per_sequence_overlaps_and_curves(vot_golden):
    expected, sequences = vot_golden
    thresholds = _thresholds(expected["thresholds"])
    for name, (pred, confidence, gt, bounds) in sequences.items():
        reference = expected["per_sequence"][name]
        np.testing.assert_allclose(region_overlaps(pred, gt, bounds), reference["overlaps"], rtol=0, atol=TOLERANCE)
        assert count_visible(gt) == reference["n_visible"]
        precision, recall = sequence_pr_curves(pred, confidence, gt, thresholds, bounds)
        np.testing.assert_allclose(precision, reference["precision_curve"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(recall, reference["recall_curve"], rtol=0, atol=TOLERANCE)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_golden_metric_class_and_gathered_states(vot_golden):
    expected, sequences = vot_golden
    metric = VOTLongTerm()
    for index, (pred, confidence, gt, bounds) in enumerate(sequences.values()):
        if index == 0:  # tensors are accepted as well as arrays
            pred, confidence, gt = torch.from_numpy(pred), torch.from_numpy(confidence), torch.from_numpy(gt)
        metric.update(pred, confidence, gt, bounds)
    result = metric.compute()
    for key in ("precision", "recall", "f_score"):
        assert abs(float(result[key]) - expected[key]) < TOLERANCE
    assert float(result["threshold"]) == expected["best_threshold"]
    assert result["thresholds"].shape == (100,) and result["f_curve"].dtype == torch.float64
    # A DDP gather hands compute() each list state as one concatenated tensor; sequences must stay aligned.
    gathered = VOTLongTerm()
    for state in ("overlaps", "confidences", "visible", "lengths", "n_visible"):
        setattr(gathered, state, [torch.cat(getattr(metric, state))])
    assert abs(float(gathered.compute()["f_score"]) - expected["f_score"]) < TOLERANCE
    metric.reset()
    with pytest.raises(RuntimeError, match="before any sequence"):
        metric.compute()


# -------------------------------------------------------------------------------------------- hand-computed cases

BOUNDS = (100, 100)
GT_BOX = [0.0, 0.0, 10.0, 10.0]


def test_perfect_tracker_that_reports_only_when_visible_scores_one():
    gt = np.array([GT_BOX, [20, 30, 15, 10], NAN_BOX, NAN_BOX, [50, 50, 12, 8], NAN_BOX], dtype=np.float64)
    visible = ~np.isnan(gt).any(axis=1)
    # On the absent frames the tracker keeps a (wrong) box but with a confidence below its visible frames': at
    # τ = 0.9 exactly the visible frames are reported, each with overlap 1.
    pred = np.where(visible[:, None], gt, [[70.0, 70.0, 10.0, 10.0]])
    confidence = np.where(visible, 0.9, 0.1)
    scores = longterm_scores({"seq": (pred, confidence, gt, BOUNDS)})
    assert scores["precision"] == 1.0 and scores["recall"] == 1.0 and scores["f_score"] == 1.0
    assert scores["threshold"] == 0.9
    # The same with no confidence at all on the absent frames (NaN: never reported).
    scores = longterm_scores({"seq": (pred, np.where(visible, 0.9, np.nan), gt, BOUNDS)})
    assert scores["f_score"] == 1.0 and scores["recall_curve"][-1] == 1.0


def test_reporting_absence_as_an_empty_region_adds_to_recall_as_in_the_toolkit():
    # vot-toolkit issue #122: absent frames reported as empty overlap 1 and are summed into the recall numerator,
    # whose denominator counts the 3 visible frames only.
    gt = np.array([GT_BOX, GT_BOX, GT_BOX, NAN_BOX, NAN_BOX, NAN_BOX])
    pred = gt.copy()
    confidence = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.1])
    toolkit = longterm_scores({"seq": (pred, confidence, gt, BOUNDS)})
    assert toolkit["recall_curve"][-1] == 2.0 and toolkit["precision_curve"][-1] == 1.0
    assert toolkit["f_score"] == pytest.approx(4 / 3) and toolkit["threshold"] == 0.1
    fixed = longterm_scores({"seq": (pred, confidence, gt, BOUNDS)}, visible_only_recall=True)
    assert fixed["recall_curve"][-1] == 1.0 and fixed["f_score"] == 1.0
    metric = VOTLongTerm(visible_only_recall=True)
    metric.update(pred, confidence, gt, BOUNDS)
    assert float(metric.compute()["f_score"]) == 1.0


def test_tracker_that_always_reports_a_wrong_box_scores_zero():
    gt = np.array([GT_BOX, GT_BOX, NAN_BOX, GT_BOX], dtype=np.float64)
    pred = np.tile([60.0, 60.0, 10.0, 10.0], (4, 1))
    scores = longterm_scores({"seq": (pred, np.full(4, 0.8), gt, BOUNDS)})
    assert scores["f_score"] == 0.0 and scores["recall"] == 0.0
    # Thresholds keep repeated confidences, as the toolkit's do; +inf reports nothing: precision 1.
    np.testing.assert_array_equal(scores["thresholds"], [np.inf, 0.8, 0.8, 0.8, 0.8, -np.inf])
    np.testing.assert_array_equal(scores["precision_curve"], [1, 0, 0, 0, 0, 0])


def test_confidence_threshold_changes_precision_and_recall_as_computed_by_hand():
    # Overlaps 1, 1/3 (a 10x10 box shifted by 5 px: 50 / 150 pixels), 0, and 1 for the absent frame reported as
    # absent (two empty regions). Three frames show the target.
    gt = np.array([GT_BOX, GT_BOX, GT_BOX, NAN_BOX])
    pred = np.array([GT_BOX, [5, 0, 10, 10], [60, 60, 10, 10], NAN_BOX])
    confidence = np.array([0.9, 0.6, 0.3, 0.2])
    np.testing.assert_allclose(region_overlaps(pred, gt, BOUNDS), [1, 1 / 3, 0, 1], rtol=0, atol=1e-15)
    scores = longterm_scores({"seq": (pred, confidence, gt, BOUNDS)})
    np.testing.assert_array_equal(scores["thresholds"], [np.inf, 0.9, 0.6, 0.3, 0.2, -np.inf])
    np.testing.assert_allclose(scores["precision_curve"], [1, 1, 2 / 3, 4 / 9, 7 / 12, 7 / 12], rtol=0, atol=1e-12)
    np.testing.assert_allclose(scores["recall_curve"], [0, 1 / 3, 4 / 9, 4 / 9, 7 / 9, 7 / 9], rtol=0, atol=1e-12)
    np.testing.assert_allclose(scores["f_curve"], [0, 1 / 2, 8 / 15, 4 / 9, 2 / 3, 2 / 3], rtol=0, atol=1e-12)
    # The first of the tied maxima is reported, as the toolkit's list.index(max(...)).
    assert scores["threshold_index"] == 4 and scores["threshold"] == 0.2
    assert abs(scores["precision"] - 7 / 12) < 1e-12 and abs(scores["recall"] - 7 / 9) < 1e-12


def test_nan_confidence_is_never_reported_and_sequences_weigh_the_same():
    gt = np.array([GT_BOX, GT_BOX])
    pred = np.array([GT_BOX, [60, 60, 10, 10]])
    scores = longterm_scores({"a": (pred, [0.5, np.nan], gt, BOUNDS), "b": (pred[:1], [0.5], gt[:1], BOUNDS)})
    np.testing.assert_array_equal(scores["thresholds"], [np.inf, 0.5, 0.5, -np.inf])
    # At -inf, "a" reports only frame 0 (precision 1, recall 1/2) and "b" its only frame (1, 1).
    np.testing.assert_allclose(scores["precision_curve"], [1, 1, 1, 1])
    np.testing.assert_allclose(scores["recall_curve"], [0, 0.75, 0.75, 0.75])


def test_overlaps_clip_to_the_image_and_round_coordinates_as_the_toolkit():
    gt = np.array([[90, 0, 20, 10]], dtype=np.float64)  # half outside a 100-pixel-wide image
    pred = np.array([[90, 0, 10, 10]], dtype=np.float64)
    assert region_overlaps(pred, gt, BOUNDS)[0] == 1.0
    assert region_overlaps(pred, gt, None)[0] == 0.5
    # Coordinates are rounded half to even (np.round): x 2.5 -> 2 gives pixels 2..11 against 0..9, 80 / 120.
    assert region_overlaps([[2.5, 0, 10, 10]], [GT_BOX], BOUNDS)[0] == pytest.approx(2 / 3, abs=1e-15)
    assert region_overlaps([[0.4, 0.3, 9.6, 10.4]], [GT_BOX], BOUNDS)[0] == 1.0
    # Absent against absent is 1, absent against a box 0, either way round.
    np.testing.assert_array_equal(region_overlaps([NAN_BOX, NAN_BOX, GT_BOX], [NAN_BOX, GT_BOX, NAN_BOX], BOUNDS),
                                  [1, 0, 0])


def test_thresholds_subsample_pooled_confidences():
    thresholds = determine_thresholds([np.arange(120.0), np.arange(120.0, 200.0)])
    # 200 scores, 98 inner thresholds: delta 2, indices round(linspace(2, 198, 98)) into the descending scores.
    assert len(thresholds) == 100 and thresholds[0] == np.inf and thresholds[-1] == -np.inf
    assert thresholds[1] == 197 and thresholds[2] == 195 and thresholds[-2] == 1
    np.testing.assert_array_equal(determine_thresholds(np.array([0.5, np.nan, 0.7])), [np.inf, 0.7, 0.5, -np.inf])


def test_bad_metric_input_is_refused():
    metric = VOTLongTerm()
    with pytest.raises(ValueError, match="confidences for 2 frames"):
        metric.update([GT_BOX, GT_BOX], [0.5], [GT_BOX, GT_BOX], BOUNDS)
    with pytest.raises(ValueError, match="visible in no frame"):
        metric.update([GT_BOX], [0.5], [NAN_BOX], BOUNDS)
    with pytest.raises(ValueError, match="shape"):
        region_overlaps([[1, 2, 3]], [GT_BOX])


# ------------------------------------------------------------------------------------------------ reader / writer


@pytest.fixture(scope="module")
def synthetic_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("vot_lt")
    return root, write_vot_lt(root, num_sequences=2, num_frames=60, image_size=(96, 128), seed=0)


def test_synthetic_tree_reads_back_to_the_written_boxes(synthetic_tree):
    root, written = synthetic_tree
    assert (root / "list.txt").read_text().split() == list(written)
    sequences = load_vot_lt(root)
    assert [s.name for s in sequences] == list(written)
    for sequence in sequences:
        boxes = written[sequence.name]
        np.testing.assert_array_equal(sequence.boxes, boxes)
        assert len(sequence) == 60 and sequence.image_size == (96, 128) and sequence.bounds == (128, 96)
        assert sequence.frame_paths[0] == root / sequence.name / "color" / "00000001.jpg"
        assert sequence.metadata["channels.color"] == "color/%08d.jpg"
        visible = sequence.visible
        # The target leaves (NaN rows) and comes back, more than once.
        assert visible[0] and not visible.all() and np.count_nonzero(np.diff(visible.astype(int)) == 1) >= 1
        assert sequence.read_frame(0).shape == (96, 128, 3)
        x, y, w, h = sequence.boxes[0]
        assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 96 and w > 0 and h > 0


def test_legacy_layout_and_polygon_groundtruth(tmp_path, synthetic_tree):
    _, written = synthetic_tree
    legacy = write_vot_lt(tmp_path / "legacy", num_sequences=1, num_frames=60, seed=0, legacy_layout=True)
    polygons = write_vot_lt(tmp_path / "poly", num_sequences=1, num_frames=60, seed=0, polygons=True)
    name = next(iter(written))
    sequence = load_sequence(tmp_path / "legacy", name)
    assert sequence.frame_paths[0] == tmp_path / "legacy" / name / "00000001.jpg"
    assert not (tmp_path / "legacy" / name / "sequence").exists()
    np.testing.assert_array_equal(sequence.boxes, legacy[name])
    first_line = (tmp_path / "poly" / name / "groundtruth.txt").read_text().splitlines()[0]
    assert len(first_line.split(",")) == 8
    np.testing.assert_array_equal(load_sequence(tmp_path / "poly", name).boxes, polygons[name])
    np.testing.assert_array_equal(polygons[name], written[name])
    # A rotated polygon becomes its axis-aligned bounding box; NaN and special codes are no region.
    np.testing.assert_array_equal(parse_region("10,20,30,10,40,30,20,40"), [10, 10, 30, 30])
    assert np.isnan(parse_region("nan,nan,nan,nan")).all() and np.isnan(parse_region("0")).all()
    with pytest.raises(ValueError, match="5 numbers"):
        parse_region("1,2,3,4,5", "gt line 3")


def test_missing_groundtruth_and_frame_count_mismatch_name_the_file(tmp_path):
    root = tmp_path / "tree"
    (name,) = write_vot_lt(root, num_sequences=1, num_frames=12, seed=3)
    groundtruth = root / name / "groundtruth.txt"
    rows = groundtruth.read_text()

    groundtruth.write_text(rows + "1,2,3,4\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(groundtruth))}.* 13 rows but there are 12 frames"):
        load_sequence(root, name)

    groundtruth.write_text(rows)
    os.remove(root / name / "color" / "00000005.jpg")
    with pytest.raises(ValueError, match=r"00000005\.jpg is missing but frame 6 exists"):
        load_sequence(root, name)

    groundtruth.unlink()
    with pytest.raises(FileNotFoundError, match=rf"ground-truth file {re.escape(str(groundtruth))} does not exist"):
        load_sequence(root, name)

    (root / "list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="list.txt does not exist"):
        load_vot_lt(root)
    with pytest.raises(ValueError, match=r"line 2: expected comma-separated"):
        groundtruth.write_text("1,2,3,4\nx,y\n")
        read_regions(groundtruth)


# ------------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def golden_vot_tree(golden, tmp_path_factory):
    """The golden sequences as a VOT-LT tree (one blank frame hard-linked per frame) and a toolkit results folder."""
    expected = json.loads((golden / "expected.json").read_text())["vot_lt"]
    root, results = tmp_path_factory.mktemp("vot_lt_root"), tmp_path_factory.mktemp("vot_lt_results")
    for name in expected["per_sequence"]:
        source = golden / "vot_lt" / name
        width, height = (int(v) for v in (source / "size.txt").read_text().split())
        rows = len((source / "groundtruth.txt").read_text().split())
        frame_dir = root / name / "color"
        blank = write_rgb(frame_dir / "00000001.jpg", np.zeros((height, width, 3), np.uint8))
        for number in range(2, rows + 1):
            os.link(blank, frame_dir / f"{number:08d}.jpg")
        shutil.copy(source / "groundtruth.txt", root / name / "groundtruth.txt")
        (results / name).mkdir()
        shutil.copy(source / "pred.txt", results / name / f"{name}_001.txt")
        shutil.copy(source / "confidence.txt", results / name / f"{name}_001_confidence.value")
    (root / "list.txt").write_text("\n".join(expected["per_sequence"]) + "\n")
    return root, results, expected


def test_cli_reproduces_golden(golden_vot_tree, capsys):
    root, results_dir, expected = golden_vot_tree
    results = main(["vot-lt", "--root", str(root), "--results-dir", str(results_dir)])
    for key in ("precision", "recall", "f_score"):
        assert abs(results[key] - expected[key]) < TOLERANCE
    assert results["threshold"] == expected["best_threshold"] and results["thresholds"] == expected["thresholds"]
    assert json.loads(capsys.readouterr().out)["f_score"] == results["f_score"]
    assert results["per_sequence"]["lt_a"]["num_visible"] == 66


def test_cli_refuses_missing_confidence_file(golden_vot_tree, tmp_path):
    root, results_dir, _ = golden_vot_tree
    copy = tmp_path / "results"
    shutil.copytree(results_dir, copy)
    missing = copy / "lt_b" / "lt_b_001_confidence.value"
    missing.unlink()
    with pytest.raises(SystemExit, match=rf"vot-lt: error: no confidences .*{re.escape(str(missing))}"):
        main(["vot-lt", "--root", str(root), "--results-dir", str(copy)])
