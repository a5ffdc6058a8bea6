import csv
import json
import shutil

import numpy as np
import pytest

from datamodules.otb import load_otb, read_groundtruth
from datamodules.synthetic_otb import write_synthetic_otb
from zoo.evaluate import main
from zoo.evaluation.otb import evaluate_sequences, plot_otb, write_per_sequence_csv

TOLERANCE = 1e-9
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def golden_otb(golden, tmp_path_factory):
    """The golden ground truth laid out as an OTB tree without any images, and the golden results folder."""
    root = tmp_path_factory.mktemp("golden_otb")
    for gt_file in sorted((golden / "otb" / "gt").glob("*.txt")):
        (root / gt_file.stem).mkdir()
        shutil.copy(gt_file, root / gt_file.stem / "groundtruth_rect.txt")
    expected = json.loads((golden / "expected.json").read_text())["otb"]
    return root, golden / "otb" / "pred", expected


def test_cli_reproduces_golden_and_writes_json_plots_csv(golden_otb, tmp_path, capsys):
    data_dir, results_dir, expected = golden_otb
    json_path, plot_dir, csv_path = tmp_path / "out" / "otb.json", tmp_path / "plots", tmp_path / "seq.csv"
    results = main(["otb", "--data-dir", str(data_dir), "--results-dir", str(results_dir), "--json", str(json_path),
                    "--plot", str(plot_dir), "--csv", str(csv_path), "--label", "golden"])

    overall = expected["overall"]
    assert abs(results["success_auc"] - overall["AUC"]) < TOLERANCE
    assert abs(results["precision_20"] - overall["precision_at_20px"]) < TOLERANCE
    np.testing.assert_allclose(results["success_curve"], overall["success_curve"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(results["precision_curve"], overall["precision_curve"], rtol=0, atol=TOLERANCE)
    assert len(results["success_curve"]) == 21 and len(results["precision_curve"]) == 51
    assert list(results["per_sequence"]) == list(expected["seq_wise"])
    for name, reference in expected["seq_wise"].items():
        scores = results["per_sequence"][name]
        assert abs(scores["success_auc"] - reference["success_score"]) < TOLERANCE
        assert abs(scores["precision_20"] - reference["precision_score"]) < TOLERANCE
        assert scores["num_frames"] == len(expected["per_frame"][name]["iou"])

    assert json.loads(json_path.read_text()) == json.loads(json.dumps(results))
    for name in ("success_plot.png", "precision_plot.png"):
        data = (plot_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000
    assert (plot_dir / "success_plot.png").read_bytes() != (plot_dir / "precision_plot.png").read_bytes()
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["sequence"] for row in rows] == list(expected["seq_wise"])
    assert float(rows[1]["success_auc"]) == results["per_sequence"]["s2_nan_gt"]["success_auc"]
    assert "success AUC 0.5217, precision@20 0.7750" in capsys.readouterr().out


def test_cli_sequence_selection_averages_over_those_sequences(golden_otb):
    data_dir, results_dir, expected = golden_otb
    chosen = ["s1_plain", "s3_outside"]
    results = main(["otb", "--data-dir", str(data_dir), "--results-dir", str(results_dir), "--sequences", *chosen])
    curves = np.array([expected["seq_wise"][name]["success_curve"] for name in chosen])
    assert abs(results["success_auc"] - curves.mean(axis=0).mean()) < TOLERANCE
    assert list(results["per_sequence"]) == chosen


def test_cli_refuses_missing_results_file(golden_otb, tmp_path):
    data_dir, results_dir, _ = golden_otb
    partial = tmp_path / "results"
    shutil.copytree(results_dir, partial)
    (partial / "s3_outside.txt").unlink()
    with pytest.raises(SystemExit, match=r"no results for sequence 's3_outside': expected .*s3_outside\.txt"):
        main(["otb", "--data-dir", str(data_dir), "--results-dir", str(partial)])


def test_cli_refuses_results_shorter_than_frames(golden_otb, tmp_path):
    data_dir, results_dir, _ = golden_otb
    short = tmp_path / "results"
    shutil.copytree(results_dir, short)
    lines = (short / "s1_plain.txt").read_text().splitlines()
    (short / "s1_plain.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(SystemExit, match=r"'s1_plain': 59 predicted boxes for 60 evaluated frames"):
        main(["otb", "--data-dir", str(data_dir), "--results-dir", str(short)])


def test_cli_refuses_unknown_subset_and_missing_sequence(golden_otb):
    data_dir, results_dir, _ = golden_otb
    with pytest.raises(SystemExit, match=r"directory .*Suv does not exist"):
        main(["otb", "--data-dir", str(data_dir), "--results-dir", str(results_dir), "--sequences", "drlt30"])


def test_cli_on_synthetic_quirks_reads_only_ground_truth(tmp_path):
    data_dir = tmp_path / "otb"
    write_synthetic_otb(data_dir, num_sequences=1, num_frames=20, image_size=(64, 80), seed=5, quirks=True)
    sequences = load_otb(data_dir)
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    rng = np.random.default_rng(0)
    for seq in sequences:
        noisy = seq.boxes + rng.normal(0, 1.5, seq.boxes.shape)
        file_name = seq.name.replace(".", "-") if seq.name == "SynthPair.2" else seq.name  # pysot's naming too
        np.savetxt(results_dir / f"{file_name}.txt", noisy, fmt="%.2f", delimiter="\t")
    for img_dir in data_dir.glob("*/img"):
        shutil.rmtree(img_dir)
    results = main(["otb", "--data-dir", str(data_dir), "--results-dir", str(results_dir)])
    assert sorted(results["per_sequence"]) == ["Football1", "Synth01", "SynthPair.1", "SynthPair.2", "SynthTabs"]
    assert results["per_sequence"]["Football1"]["num_frames"] == 74
    assert results["precision_20"] == 1.0 and 0.5 < results["success_auc"] < 20 / 21


def test_python_api(tmp_path, golden):
    gt = read_groundtruth(golden / "otb" / "gt" / "s1_plain.txt")
    results = evaluate_sequences({"a": gt.copy(), "b": gt + [30, 0, 0, 0]}, {"a": gt, "b": gt})
    assert results["per_sequence"]["a"] == {"success_auc": pytest.approx(20 / 21), "precision_20": 1.0,
                                            "num_frames": 60}
    assert results["per_sequence"]["b"]["precision_20"] == pytest.approx(1 / 60)  # only the initial frame
    paths = plot_otb(results, tmp_path / "plots", label="api")
    assert [p.name for p in paths] == ["success_plot.png", "precision_plot.png"]
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in paths)
    csv_path = write_per_sequence_csv(results, tmp_path / "scores.csv")
    assert csv_path.read_text().splitlines()[0] == "sequence,num_frames,success_auc,precision_20"
    with pytest.raises(KeyError, match="no predictions for sequence"):
        evaluate_sequences({}, {"a": gt})
