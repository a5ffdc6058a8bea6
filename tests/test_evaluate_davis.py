"""`python -m zoo.evaluate davis` on the golden trees and on DAVIS-layout folders built from them."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from datamodules.vos_io import read_label_png, write_label_png
from zoo.evaluate import main as evaluate_main

OFFICIAL_KEYS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


@pytest.fixture(scope="module")
def official(golden):
    return json.loads((golden / "expected.json").read_text())["davis"]["davis2017_official"]


def copy_tree(source, target, keep=lambda path: True):
    for path in sorted(source.rglob("*.png")):
        if keep(path):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


def test_gt_dir_on_the_golden_tree_matches_the_official_values_and_csvs(golden, official, tmp_path, capsys):
    results_dir = tmp_path / "results"
    copy_tree(golden / "davis" / "pred", results_dir)
    results = evaluate_main(
        ["davis", "--gt-dir", str(golden / "davis" / "gt"), "--results-dir", str(results_dir),
         "--workers", "2", "--json", str(tmp_path / "out.json")]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out.json").read_text()) == json.loads(json.dumps(results))
    for key in OFFICIAL_KEYS:
        assert results[key] == pytest.approx(official["global"][key], abs=1e-9)
    assert list(results["per_object"]) == list(official["per_object"])
    for name, expected in official["per_object"].items():
        assert results["per_object"][name]["F-Decay"] == pytest.approx(expected["F_decay"], abs=1e-9)
    assert results["num_objects"] == official["global"]["num_objects_total"]

    with open(results_dir / "global_results-val.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == OFFICIAL_KEYS
    assert rows[1] == [f"{official['global'][key]:.3f}" for key in OFFICIAL_KEYS]
    with open(results_dir / "per-sequence_results-val.csv") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert rows[1:] == [
        [name, f"{values['J_mean']:.3f}", f"{values['F_mean']:.3f}"] for name, values in official["per_object"].items()
    ]


def test_davis_root_layout_with_image_set_and_without_first_and_last_predictions(golden, official, tmp_path):
    root = tmp_path / "DAVIS"
    copy_tree(golden / "davis" / "gt", root / "Annotations" / "480p")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("d_gapid\nb_reappear\n")
    results_dir = tmp_path / "results"
    gt_dir = golden / "davis" / "gt"
    last_frames = {seq: max(path.name for path in (gt_dir / seq).glob("*.png")) for seq in official["per_frame"]}
    copy_tree(
        golden / "davis" / "pred",
        results_dir,
        keep=lambda path: path.name not in ("00000.png", last_frames[path.parent.name]),
    )
    results = evaluate_main(["davis", "--davis-root", str(root), "--results-dir", str(results_dir), "--workers", "1"])
    assert list(results["per_object"]) == ["d_gapid_1", "d_gapid_2", "d_gapid_3", "b_reappear_1", "b_reappear_2"]
    expected_j = np.mean([official["per_object"][name]["J_mean"] for name in results["per_object"]])
    assert results["J-Mean"] == pytest.approx(expected_j, abs=1e-12)
    one = evaluate_main(
        ["davis", "--davis-root", str(root), "--results-dir", str(results_dir), "--sequences", "b_reappear"]
    )
    assert one["J&F-Mean"] == pytest.approx(official["per_sequence"]["b_reappear"]["JF_mean"], abs=1e-12)


def test_clear_errors_name_the_file_and_the_fix(golden, tmp_path):
    gt_dir = golden / "davis" / "gt"
    results_dir = tmp_path / "results"
    copy_tree(golden / "davis" / "pred" / "e_lateobj", results_dir / "e_lateobj")
    (results_dir / "e_lateobj" / "00004.png").unlink()
    base = ["davis", "--gt-dir", str(gt_dir), "--results-dir", str(results_dir), "--sequences", "e_lateobj"]
    with pytest.raises(SystemExit, match=r"missing prediction .*e_lateobj/00004\.png"):
        evaluate_main(base)
    labels = read_label_png(golden / "davis" / "pred" / "e_lateobj" / "00004.png")
    labels[0, 0] = 2  # e_lateobj has one object in its first ground-truth frame
    write_label_png(results_dir / "e_lateobj" / "00004.png", labels)
    with pytest.raises(SystemExit, match=r"e_lateobj.*predicted id 2"):
        evaluate_main(base)
    (tmp_path / "DAVIS" / "Annotations" / "480p").mkdir(parents=True)
    davis_root = ["davis", "--davis-root", str(tmp_path / "DAVIS"), "--results-dir", str(results_dir)]
    with pytest.raises(SystemExit, match=r"no ground-truth label PNGs in .*DAVIS/Annotations/480p/e_lateobj"):
        evaluate_main(davis_root)  # no image set: the results' sequences, which this root lacks
    (tmp_path / "DAVIS" / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "DAVIS" / "ImageSets" / "2017" / "train.txt").write_text("e_lateobj\n")
    with pytest.raises(SystemExit, match=r"no image set 'val' in .*ImageSets/2017 .*available: train"):
        evaluate_main(davis_root)
    write_label_png(results_dir / "e_lateobj" / "00004.png", labels[:50])
    with pytest.raises(SystemExit, match=r"00004\.png is 128×50, but the sequence's masks are 128×96"):
        evaluate_main(base)


def test_unsupervised_task_reads_annotations_unsupervised_and_equals_the_metric(golden, tmp_path):
    from zoo.metrics.davis import DAVISUnsupervised

    root, results_dir = tmp_path / "DAVIS", tmp_path / "results"
    metric = DAVISUnsupervised()
    for sequence in ("a_multi", "d_gapid"):
        paths = sorted((golden / "davis" / "gt" / sequence).glob("*.png"))
        gt = np.stack([read_label_png(path) for path in paths])
        gt[:, :4] = 255  # a void band, as the unsupervised annotations have
        pred = np.stack([read_label_png(golden / "davis" / "pred" / sequence / path.name) for path in paths])
        pred = np.where(pred > 0, 4 - pred, 0).astype(np.uint8)  # proposals numbered differently from the objects
        for path, gt_labels, pred_labels in zip(paths, gt, pred):
            write_label_png(root / "Annotations_unsupervised" / "480p" / sequence / path.name, gt_labels)
            write_label_png(results_dir / sequence / path.name, pred_labels)
        metric.update(pred, gt, sequence)
    results = evaluate_main(
        ["davis", "--davis-root", str(root), "--results-dir", str(results_dir), "--task", "unsupervised",
         "--sequences", "a_multi", "d_gapid"]
    )  # fmt: skip
    expected = metric.compute()
    for key in OFFICIAL_KEYS:
        assert results[key] == pytest.approx(float(expected[key]), abs=1e-12)
    assert results["per_object"]["a_multi_1"]["pred_id"] == 1 and results["per_object"]["a_multi_1"]["gt_object"] == 3
    assert results["evaluated_frames"] == 12 + 8  # every frame in the unsupervised task


def test_fast_palette_reader_equals_read_label_png_and_declines_other_pngs(golden, tmp_path):
    import cv2

    from zoo.evaluation.davis import read_palette_png_fast

    for path in sorted((golden / "davis480" / "pred" / "big_b").glob("*.png"))[:3]:
        assert np.array_equal(read_palette_png_fast(path), read_label_png(path))
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 6, size=(30, 41)).astype(np.uint8)
    write_label_png(tmp_path / "noisy.png", noisy)
    fast = read_palette_png_fast(tmp_path / "noisy.png")
    assert fast is None or np.array_equal(fast, noisy)
    cv2.imwrite(str(tmp_path / "grey.png"), noisy)  # greyscale, filtered rows: left to read_label_png
    assert read_palette_png_fast(tmp_path / "grey.png") is None
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert read_palette_png_fast(tmp_path / "broken.png") is None


def test_real_davis_annotations_decode_identically_and_score_perfectly_against_themselves(realdata, tmp_path):
    from zoo.evaluation.davis import read_palette_png_fast

    root = realdata / "DAVIS"
    if not (root / "Annotations" / "480p" / "blackswan").is_dir():
        pytest.skip("../shared/realdata/DAVIS/Annotations/480p/blackswan is absent")
    for path in sorted((root / "Annotations" / "480p").rglob("*.png")):
        fast = read_palette_png_fast(path)
        assert fast is None or np.array_equal(fast, read_label_png(path)), path
    copy_tree(root / "Annotations" / "480p" / "blackswan", tmp_path / "blackswan")
    results = evaluate_main(
        ["davis", "--davis-root", str(root), "--results-dir", str(tmp_path), "--sequences", "blackswan"]
    )
    assert [results[key] for key in OFFICIAL_KEYS] == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    labels = read_label_png(tmp_path / "blackswan" / "00002.png")
    write_label_png(tmp_path / "blackswan" / "00002.png", np.roll(labels, 20, axis=1))  # beyond the 8 px tolerance
    shifted = evaluate_main(
        ["davis", "--davis-root", str(root), "--results-dir", str(tmp_path), "--sequences", "blackswan"]
    )
    assert 0.5 < shifted["J-Mean"] < 1.0 and 0.5 < shifted["F-Mean"] < 1.0
