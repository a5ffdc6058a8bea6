import json

import numpy as np
import pytest
import torch

from datamodules.instance_io import write_label_png
from zoo.evaluate import main as evaluate_main
from zoo.metrics.cvppp import CVPPPMetrics, cvppp_scores

GOLDEN_KEYS = ("SBD", "BestDice_pred_gt", "BestDice_gt_pred", "FBD", "DiC", "absDiC")


@pytest.fixture(scope="module")
def golden_cvppp(golden_label_pairs):
    return golden_label_pairs("cvppp")


def test_per_image_scores_equal_the_official_script(golden_cvppp):
    expected, images = golden_cvppp
    for name, (pred, gt) in images.items():
        scores = cvppp_scores(pred, gt)
        for key in GOLDEN_KEYS:
            reference = expected["per_image"][name]["cvppp_official"][key]
            assert scores[key] == pytest.approx(reference, abs=1e-9), (name, key)


def test_metric_means_equal_the_official_script(golden_cvppp):
    expected, images = golden_cvppp
    metric = CVPPPMetrics()
    for pred, gt in images.values():
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
    results = metric.compute()
    official = expected["cvppp_official"]["mean_std"]
    for key in ("SBD", "BestDice_pred_gt", "FBD", "DiC", "absDiC"):
        assert results[key].item() == pytest.approx(official[key]["mean"], abs=1e-9), key
        per_image = [row[key] for row in metric.per_image()]
        assert np.std(per_image) == pytest.approx(official[key]["std"], abs=1e-9), key


def test_batched_update_equals_per_image_updates():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.integers(0, 4, (3, 16, 16)))
    pred = torch.from_numpy(rng.integers(0, 5, (3, 16, 16)))
    batched, single = CVPPPMetrics(), CVPPPMetrics()
    batched.update(pred, gt)
    for p, g in zip(pred, gt):
        single.update(p, g)
    for key, value in batched.compute().items():
        assert value.item() == pytest.approx(single.compute()[key].item(), abs=1e-12)


def test_conventions_unused_id_is_an_empty_leaf_and_min_label_is_background():
    gt = np.zeros((4, 6), dtype=np.int64)
    gt[:, :2], gt[:, 2:4] = 1, 2
    perfect = cvppp_scores(gt, gt)
    assert perfect["SBD"] == 1.0 and perfect["DiC"] == 0
    gap = np.where(gt == 2, 3, gt)  # ids 1 and 3: id 2 is an empty predicted leaf
    scores = cvppp_scores(gap, gt)
    assert scores["BestDice_pred_gt"] == pytest.approx(2 / 3) and scores["BestDice_gt_pred"] == 1.0
    assert scores["SBD"] == pytest.approx(2 / 3) and scores["DiC"] == 1 and scores["absDiC"] == 1
    # without background pixels the smallest leaf id is the background: one leaf, not two
    no_background = np.where(gt == 0, 2, gt)
    assert cvppp_scores(no_background, gt)["DiC"] == -1
    assert cvppp_scores(np.zeros_like(gt), gt)["FBD"] == 0.0 and cvppp_scores(np.zeros_like(gt), gt)["SBD"] == 0.0


def test_evaluate_cli_on_the_golden_folders_writes_the_official_means(golden, golden_cvppp, tmp_path):
    expected, _ = golden_cvppp
    out = tmp_path / "cvppp.json"
    evaluate_main(["cvppp", "--gt-dir", str(golden / "cvppp" / "gt"), "--pred-dir", str(golden / "cvppp" / "pred"),
                   "--json", str(out)])
    written = json.loads(out.read_text())
    official = expected["cvppp_official"]["mean_std"]
    for key in ("SBD", "FBD", "DiC", "absDiC"):
        assert written[key] == pytest.approx(official[key]["mean"], abs=1e-9)
        assert written["std"][key] == pytest.approx(official[key]["std"], abs=1e-9)
    assert written["per_image"]["plant008"]["DiC"] == 2 and written["num_images"] == 9


def test_evaluate_cli_refuses_missing_or_missized_predictions(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    leaf = np.zeros((4, 4), np.uint8)
    leaf[:2] = 1
    write_label_png(gt_dir / "plant001.png", leaf)
    write_label_png(gt_dir / "plant002.png", leaf)
    write_label_png(pred_dir / "plant001.png", np.ones((4, 5), np.uint8))
    with pytest.raises(SystemExit, match="plant002.png"):
        evaluate_main(["cvppp", "--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir)])
    with pytest.raises(SystemExit, match="predict at the ground truth's size"):
        evaluate_main(["cvppp", "--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), "--missing-as-empty"])
    write_label_png(pred_dir / "plant001.png", leaf)
    results = evaluate_main(["cvppp", "--gt-dir", str(gt_dir), "--pred-dir", str(pred_dir), "--missing-as-empty"])
    assert results["per_image"]["plant001"]["SBD"] == 1.0 and results["per_image"]["plant002"]["SBD"] == 0.0
