import json
import os
import socket

import numpy as np
import pytest
import torch

from datamodules.otb import read_groundtruth
from zoo.metrics.otb import (
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    OTBPrecision,
    OTBSuccess,
    center_error,
    overlap_ratio,
    precision_curve,
    success_curve,
)

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def otb_golden(golden):
    expected = json.loads((golden / "expected.json").read_text())["otb"]
    boxes = {
        name: (read_groundtruth(golden / "otb" / "pred" / f"{name}.txt"),
               read_groundtruth(golden / "otb" / "gt" / f"{name}.txt"))
        for name in expected["seq_wise"]
    }
    return expected, boxes


def as_float_array(values):
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_thresholds_are_the_references(otb_golden):
    expected, _ = otb_golden
    np.testing.assert_array_equal(SUCCESS_THRESHOLDS, expected["thresholds"]["iou"])
    np.testing.assert_array_equal(PRECISION_THRESHOLDS, expected["thresholds"]["center_error_px"])


def test_per_frame_overlap_and_centre_error_match_golden(otb_golden):
    expected, boxes = otb_golden
    for name, (pred, gt) in boxes.items():
        initialised = pred.copy()
        initialised[0] = gt[0]  # the reference scores row 0 as the ground-truth initialisation
        for values, reference in [(overlap_ratio(initialised, gt), expected["per_frame"][name]["iou"]),
                                  (center_error(initialised, gt), expected["per_frame"][name]["center_error"])]:
            reference = as_float_array(reference)
            np.testing.assert_array_equal(np.isnan(values), np.isnan(reference), err_msg=name)
            np.testing.assert_allclose(values, reference, rtol=0, atol=TOLERANCE, equal_nan=True, err_msg=name)


def test_sequence_curves_match_golden(otb_golden):
    expected, boxes = otb_golden
    for name, (pred, gt) in boxes.items():
        reference = expected["seq_wise"][name]
        success = success_curve(pred, gt)
        precision = precision_curve(pred, gt)
        assert success.dtype == precision.dtype == np.float64
        np.testing.assert_allclose(success, reference["success_curve"], rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(precision, reference["precision_curve"], rtol=0, atol=TOLERANCE)
        assert abs(success.mean() - reference["success_score"]) < TOLERANCE
        assert abs(precision[20] - reference["precision_score"]) < TOLERANCE


def test_metrics_match_golden_overall(otb_golden):
    expected, boxes = otb_golden
    success, precision = OTBSuccess(), OTBPrecision()
    for pred, gt in boxes.values():
        success.update(torch.from_numpy(pred), torch.from_numpy(gt))  # tensors
        precision.update(pred, gt)  # arrays
    overall = expected["overall"]
    result, result_precision = success.compute(), precision.compute()
    assert result["curve"].dtype == torch.float64 and result["curve"].shape == (21,)
    assert result_precision["curve"].dtype == torch.float64 and result_precision["curve"].shape == (51,)
    np.testing.assert_allclose(result["curve"].numpy(), overall["success_curve"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(result_precision["curve"].numpy(), overall["precision_curve"], rtol=0, atol=TOLERANCE)
    assert abs(result["auc"].item() - overall["AUC"]) < TOLERANCE
    assert abs(result_precision["precision_20"].item() - overall["precision_at_20px"]) < TOLERANCE


def test_metric_states_merge_like_a_distributed_reduction(otb_golden):
    # merge_state applies each state's dist_reduce_fx, the same reduction DDP runs across processes.
    expected, boxes = otb_golden
    names = list(boxes)
    halves = [OTBSuccess(), OTBSuccess()], [OTBPrecision(), OTBPrecision()]
    for metrics in halves:
        for index, name in enumerate(names):
            metrics[index % 2].update(*boxes[name])
        metrics[0].merge_state(metrics[1])
    success, precision = halves[0][0].compute(), halves[1][0].compute()
    assert abs(success["auc"].item() - expected["overall"]["AUC"]) < TOLERANCE
    assert abs(precision["precision_20"].item() - expected["overall"]["precision_at_20px"]) < TOLERANCE


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric OTBSuccess was called before")
def test_metric_reset_and_empty_compute(otb_golden):
    _, boxes = otb_golden
    metric = OTBSuccess()
    with pytest.raises(RuntimeError, match="before any sequence"):
        metric.compute()
    pred, gt = boxes["s1_plain"]
    metric.update(pred, gt)
    metric.reset()
    metric.update(gt, gt)
    assert metric.compute()["auc"].item() == pytest.approx(20 / 21)  # IoU 1 passes every threshold but 1.0


def test_first_row_replacement_is_a_switch():
    gt = np.array([[10, 10, 20, 20], [10, 10, 20, 20]], dtype=float)
    pred = np.array([[100, 100, 20, 20], [10, 10, 20, 20]], dtype=float)
    np.testing.assert_array_equal(overlap_ratio(pred, gt) > 0.99, [False, True])  # geometry never replaces
    assert success_curve(pred, gt)[10] == 1.0
    assert success_curve(pred, gt, first_frame_from_gt=False)[10] == 0.5
    assert precision_curve(pred, gt, first_frame_from_gt=False)[50] == 0.5
    assert OTBPrecision(first_frame_from_gt=False)(pred, gt)["precision_20"].item() == 0.5
    assert pred[0, 0] == 100  # inputs are not modified


def test_hand_computed_geometry():
    gt = np.array([[0, 0, 10, 10]] * 3, dtype=float)
    pred = np.array([[5, 0, 10, 10], [20, 20, 10, 10], [3, 4, 10, 10]], dtype=float)
    np.testing.assert_allclose(overlap_ratio(pred, gt), [50 / 150, 0.0, 42 / 158], rtol=1e-12)
    np.testing.assert_allclose(center_error(pred, gt), [5.0, np.hypot(20, 20), 5.0], rtol=1e-12)
    assert overlap_ratio(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 2, 3, 4])).shape == (1,)


def test_threshold_comparisons_follow_the_reference():
    gt = np.array([[0, 0, 10, 10]] * 2, dtype=float)
    exactly_20_px = np.array([[0, 0, 10, 10], [12, 16, 10, 10]], dtype=float)
    curve = precision_curve(exactly_20_px, gt, first_frame_from_gt=False)
    assert curve[19] == 0.5 and curve[20] == 1.0  # error <= threshold
    same = success_curve(gt, gt, first_frame_from_gt=False)
    assert same[-1] == 0.0 and same[-2] == 1.0  # IoU > threshold, strictly


def test_nan_and_zero_area_rows_fail_but_count():
    gt = np.array([[0, 0, 10, 10], [np.nan] * 4, [0, 0, 0, 0], [0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0], [np.nan] * 4], dtype=float)
    ious = overlap_ratio(pred, gt)
    assert ious[0] > 0.99 and np.isnan(ious[1]) and ious[2] == 0.0 and np.isnan(ious[3])
    success = success_curve(pred, gt)
    assert success[0] == 0.25  # only the first frame succeeds; the three bad rows stay in the denominator
    precision = precision_curve(pred, gt)
    assert precision[0] == 0.5 and precision[50] == 0.5  # zero-area boxes at the same place: centres agree


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="predictions have 2 rows but the ground truth has 3"):
        success_curve(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        overlap_ratio(np.zeros((3, 5)), np.zeros((3, 5)))


def _ddp_worker(rank, world_size, port, shares, queue):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    success, precision = OTBSuccess(), OTBPrecision()
    for pred, gt in shares[rank]:
        success.update(pred, gt)
        precision.update(pred, gt)
    queue.put((rank, success.compute()["auc"].item(), precision.compute()["precision_20"].item()))
    dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_reduce_across_ddp_processes(otb_golden):
    expected, boxes = otb_golden
    sequences = list(boxes.values())
    shares = [sequences[:3], sequences[3:]]  # uneven: without the cross-process reduction each rank's value differs
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    queue = context.Queue()
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, port, shares, queue), nprocs=2, start_method="spawn")
    results = sorted(queue.get(timeout=60) for _ in range(2))
    for _, auc, precision_20 in results:  # every rank sees the global value
        assert abs(auc - expected["overall"]["AUC"]) < TOLERANCE
        assert abs(precision_20 - expected["overall"]["precision_at_20px"]) < TOLERANCE
