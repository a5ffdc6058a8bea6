"""Interactive VOS curve metrics against the golden `ivos` vectors (davisinteractive 1.0.4 + IVOS-W AUC)."""

import json
import pickle

import numpy as np
import pytest

from datamodules.vos_io import read_label_png
from zoo.metrics.interactive import ivosw_auc, per_object_scores, sample_key, summarize_rounds, time_auc

SEQUENCES = ("iseq_a", "iseq_b")


def _labels(folder):
    return np.stack([read_label_png(path) for path in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def ivos(golden):
    expected = json.loads((golden / "expected.json").read_text())["ivos"]
    timing = json.loads((golden / "ivos" / "timing.json").read_text())
    gt = {seq: _labels(golden / "ivos" / "gt" / seq) for seq in SEQUENCES}
    preds = {(k, seq): _labels(golden / "ivos" / "pred" / str(k) / seq) for k in range(1, 9) for seq in SEQUENCES}
    return expected, timing, gt, preds


def test_metric_reproduces_golden_curves_and_aucs(ivos):
    from zoo.metrics.interactive import InteractiveVOSCurve

    expected, timing, gt, preds = ivos
    metric = InteractiveVOSCurve()
    for seq in SEQUENCES:
        for k in range(1, 9):
            metric.update(preds[k, seq], gt[seq], k, timing[seq][k - 1], seq, nb_objects=expected["num_objects"][seq])
    result = metric.compute()
    for name in ("J", "F", "J_AND_F"):
        np.testing.assert_allclose(result["curve_by_interaction"][name], expected["curve_by_interaction"][name],
                                   rtol=0, atol=1e-9)
    assert result["auc_ivosw"]["J_AND_F"] == pytest.approx(expected["auc_ivosw_JF"], abs=1e-9)
    assert result["auc_ivosw"]["J"] == pytest.approx(expected["auc_ivosw_J"], abs=1e-9)
    summary, golden_summary = result["davisinteractive_summary"]["J_AND_F"], expected["davisinteractive_summary_JF"]
    assert summary["auc"] == pytest.approx(golden_summary["auc"], abs=1e-9)
    assert summary["metric_at_threshold"] == pytest.approx(golden_summary["metric_at_threshold"], abs=1e-9)
    np.testing.assert_allclose(summary["curve"]["time"], golden_summary["curve"]["time"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(summary["curve"]["J_AND_F"], golden_summary["curve"]["J_AND_F"], rtol=0, atol=1e-9)
    # the class is defined lazily; it must still pickle (checkpoints, DDP spawn)
    assert type(pickle.loads(pickle.dumps(metric))).__name__ == "InteractiveVOSCurve"


def test_per_object_frame_means_match_golden(ivos):
    expected, _, gt, preds = ivos
    for seq in SEQUENCES:
        for k in (1, 5, 8):
            scores = per_object_scores(preds[k, seq], gt[seq], expected["num_objects"][seq])
            for obj in (1, 2):
                golden = expected["per_object_mean_over_frames"][seq][str(obj)][str(k)]  # object, then round
                assert scores["J"][:, obj - 1].mean() == pytest.approx(golden["J"], abs=1e-9)
                assert scores["F"][:, obj - 1].mean() == pytest.approx(golden["F"], abs=1e-9)


def test_ivosw_auc_is_unit_spaced_trapezoid_over_rounds():
    assert ivosw_auc([0.0, 1.0, 1.0]) == pytest.approx(0.75)  # (0.5 + 1) / 2
    with pytest.raises(ValueError, match="at least one round"):
        ivosw_auc([0.0])


def test_time_auc_holds_last_value_until_timeout():
    result = time_auc([0.0, 0.5], [0.0, 10.0], global_timeout=20.0, time_threshold=15.0)
    assert result["curve"]["time"] == [0.0, 10.0, 20.0]
    assert result["auc"] == pytest.approx((0.25 * 10 + 0.5 * 10) / 20)
    assert result["metric_at_threshold"]["value"] == pytest.approx(0.5)


def test_missing_rounds_repeat_the_last_result_at_zero_time():
    a, b = sample_key("a"), sample_key("b")
    # sample a stopped after round 1 (timeout); b ran both rounds. One object each.
    rows = [[a, 1, 1, 0.4, 0.6, 10.0], [b, 1, 1, 0.2, 0.2, 4.0], [b, 2, 1, 0.8, 0.6, 6.0]]
    result = summarize_rounds(np.array(rows), max_interactions=2)
    assert result["curve_by_interaction"]["J_AND_F"] == pytest.approx([0.0, 0.35, 0.6])
    assert result["davisinteractive_summary"]["J"]["curve"]["time"] == pytest.approx([0.0, 7.0, 10.0, 20.0])


def test_bad_input_is_rejected():
    from zoo.metrics.interactive import InteractiveVOSCurve

    metric = InteractiveVOSCurve()
    with pytest.raises(ValueError, match="interaction numbers start at 1"):
        metric.update(np.zeros((2, 4, 4)), np.ones((2, 4, 4)), 0, 1.0, "s")
    with pytest.raises(ValueError, match="one shape"):
        metric.update(np.zeros((2, 4, 4)), np.ones((3, 4, 4)), 1, 1.0, "s")
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
