import json

import numpy as np
import pytest
import torch

from zoo.evaluate import main as evaluate_main
from zoo.metrics.kitti import KITTIInstanceMetrics, kitti_scores

# Ren & Zemel's analysis.py computes in float32; the golden README's tolerance for float32 references
FLOAT32_TOLERANCE = 1e-6
DATASET_KEYS = ("MWCov", "MUCov", "AvgFP", "AvgFN", "SBD", "AvgAbsDiC")


@pytest.fixture(scope="module")
def golden_kitti(golden_label_pairs):
    return golden_label_pairs("kitti")


def test_per_image_values_and_iou_matrices_equal_rec_attend(golden_kitti):
    expected, images = golden_kitti
    for name, (pred, gt) in images.items():
        scores, reference = kitti_scores(pred, gt), expected["per_image"][name]
        for key in ("MWCov", "MUCov", "FP", "FN", "SBD", "absDiC", "num_gt", "num_pred"):
            assert scores[key] == pytest.approx(reference[key], abs=FLOAT32_TOLERANCE), (name, key)
        reference_iou = np.array(reference["iou_matrix_pred_x_gt"], dtype=np.float64)
        np.testing.assert_allclose(scores["iou_matrix_pred_x_gt"].reshape(reference_iou.shape), reference_iou,
                                   atol=FLOAT32_TOLERANCE)


def test_dataset_values_equal_rec_attend(golden_kitti):
    expected, images = golden_kitti
    metric = KITTIInstanceMetrics()
    for pred, gt in images.values():
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
    results = metric.compute()
    for key in DATASET_KEYS:
        assert results[key].item() == pytest.approx(expected["rec_attend"][key], abs=FLOAT32_TOLERANCE), key


def test_hand_built_image_counts_false_positives_and_negatives():
    gt = np.zeros((10, 10), np.int64)
    gt[0:4, 0:4], gt[6:10, 6:10] = 1, 5  # areas 16 and 16, non-consecutive ids are fine here
    pred = np.zeros_like(gt)
    pred[0:4, 0:2] = 1  # half of car 1
    pred[0:2, 6:10] = 2  # touches nothing
    scores = kitti_scores(pred, gt)
    assert scores["MUCov"] == pytest.approx(0.5 / 2) and scores["MWCov"] == pytest.approx(0.5 * 16 / 32)
    assert scores["FP"] == 1 and scores["FN"] == 1 and scores["absDiC"] == 0
    no_cars = kitti_scores(pred, np.zeros_like(gt))
    assert no_cars["MWCov"] == 0 and no_cars["MUCov"] == 0 and no_cars["FP"] == 2


def test_evaluate_cli_on_the_golden_folders(golden, golden_kitti, tmp_path):
    expected, _ = golden_kitti
    out = tmp_path / "kitti.json"
    evaluate_main(["kitti", "--gt-dir", str(golden / "kitti" / "gt"), "--pred-dir", str(golden / "kitti" / "pred"),
                   "--json", str(out), "--iou-matrices"])
    written = json.loads(out.read_text())
    for key in DATASET_KEYS:
        assert written[key] == pytest.approx(expected["rec_attend"][key], abs=FLOAT32_TOLERANCE), key
    assert written["num_images"] == 6 and written["per_image"]["000003"]["FP"] == 1.0
    assert len(written["per_image"]["000004"]["iou_matrix_pred_x_gt"]) == 4
