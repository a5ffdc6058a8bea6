"""Bad-input catalogue of `python -m zoo.evaluate` (issue 10): each test is named after the input it breaks, which
must end in a one-line error naming the file and the fix (before any score is printed), or in what the official
toolkit does."""

import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from datamodules.vos_io import read_label_png, write_label_png
from zoo.evaluate import main


@pytest.fixture
def otb(golden, tmp_path):
    """An OTB tree of the golden ground truth (no images) and a copy of the golden results."""
    data_dir, results_dir = tmp_path / "otb", tmp_path / "results"
    for gt_file in sorted((golden / "otb" / "gt").glob("*.txt")):
        (data_dir / gt_file.stem).mkdir(parents=True)
        shutil.copy(gt_file, data_dir / gt_file.stem / "groundtruth_rect.txt")
    shutil.copytree(golden / "otb" / "pred", results_dir)
    return ["otb", "--data-dir", str(data_dir), "--results-dir", str(results_dir)], data_dir, results_dir


def set_row(path, line_number, row):
    lines = path.read_text().splitlines()
    lines[line_number - 1] = row
    path.write_text("\n".join(lines) + "\n")


# -- OTB ---------------------------------------------------------------------------------------------------------


def test_otb_flipped_prediction_corners_are_refused(otb):
    # (x + w, y + h, -w, -h) has the right centre, so it used to score precision@20 = 1.0.
    args, data_dir, results_dir = otb
    gt = np.loadtxt(data_dir / "s1_plain" / "groundtruth_rect.txt", delimiter=",")
    flipped = np.column_stack([gt[:, :2] + gt[:, 2:], -gt[:, 2:]])
    np.savetxt(results_dir / "s1_plain.txt", flipped, fmt="%.3f", delimiter=",")
    with pytest.raises(SystemExit, match=r"s1_plain\.txt, line 1: .*negative width or height.*top-left"):
        main(args)


def test_otb_infinite_prediction_is_refused(otb):
    args, _, results_dir = otb
    set_row(results_dir / "s1_plain.txt", 7, "inf,10,20,20")
    with pytest.raises(SystemExit, match=r"s1_plain\.txt, line 7: .*not finite.*NaN"):
        main(args)


def test_otb_infinite_ground_truth_is_refused(otb):
    args, data_dir, _ = otb
    set_row(data_dir / "s3_outside" / "groundtruth_rect.txt", 4, "10,10,inf,20")
    with pytest.raises(SystemExit, match=r"s3_outside/groundtruth_rect\.txt, line 4: .*not finite"):
        main(args)


def test_otb_json_output_that_is_a_directory_is_refused_before_scoring(otb, tmp_path, capsys):
    args, _, _ = otb
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit, match=r"--json .*out is a directory.*file name"):
        main([*args, "--json", str(tmp_path / "out")])
    assert capsys.readouterr().out == ""


def test_otb_json_output_under_a_file_is_refused_before_scoring(otb, tmp_path, capsys):
    args, _, _ = otb
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit, match=r"--json .*taken is a file, not a folder"):
        main([*args, "--json", str(tmp_path / "taken" / "out.json")])
    assert capsys.readouterr().out == ""


def test_otb_plot_output_that_is_a_file_is_refused_before_scoring(otb, tmp_path, capsys):
    args, _, _ = otb
    (tmp_path / "plots.png").write_text("")
    with pytest.raises(SystemExit, match=r"--plot .*plots\.png is a file.*folder"):
        main([*args, "--plot", str(tmp_path / "plots.png")])
    assert capsys.readouterr().out == ""


def test_otb_csv_output_that_is_a_directory_is_refused_before_scoring(otb, tmp_path, capsys):
    args, _, _ = otb
    (tmp_path / "scores").mkdir()
    with pytest.raises(SystemExit, match=r"--csv .*scores is a directory"):
        main([*args, "--csv", str(tmp_path / "scores")])
    assert capsys.readouterr().out == ""


# -- DAVIS -------------------------------------------------------------------------------------------------------


@pytest.fixture
def davis(golden, tmp_path):
    """--gt-dir / --results-dir copies of two golden sequences: a_multi (3 objects, 12 frames), e_lateobj (1, 9)."""
    gt_dir, results_dir = tmp_path / "gt", tmp_path / "results"
    for sequence in ("a_multi", "e_lateobj"):
        shutil.copytree(golden / "davis" / "gt" / sequence, gt_dir / sequence)
        shutil.copytree(golden / "davis" / "pred" / sequence, results_dir / sequence)
    args = ["davis", "--gt-dir", str(gt_dir), "--results-dir", str(results_dir), "--workers", "1"]
    return args, gt_dir, results_dir


def test_davis_json_output_that_is_a_directory_is_refused_before_scoring(davis, tmp_path, capsys):
    args, _, results_dir = davis
    with pytest.raises(SystemExit, match=r"--json .*results is a directory"):
        main([*args, "--json", str(results_dir)])
    assert capsys.readouterr().out == "" and not list(results_dir.glob("*.csv"))


def test_davis_official_csv_path_that_is_a_directory_is_refused_before_scoring(davis, capsys):
    args, _, results_dir = davis
    (results_dir / "global_results-val.csv").mkdir()
    with pytest.raises(SystemExit, match=r"global_results-val\.csv is a directory"):
        main(args)
    assert capsys.readouterr().out == ""


def test_davis_missing_ground_truth_frame_is_refused(davis):
    args, gt_dir, _ = davis
    (gt_dir / "a_multi" / "00005.png").unlink()
    with pytest.raises(SystemExit, match=r"ground truth .*a_multi/00005\.png is missing"):
        main(args)


def test_davis_non_numeric_ground_truth_name_is_refused(davis):
    args, gt_dir, results_dir = davis
    shutil.copy(gt_dir / "a_multi" / "00003.png", gt_dir / "a_multi" / "00003 (copy).png")
    shutil.copy(results_dir / "a_multi" / "00003.png", results_dir / "a_multi" / "00003 (copy).png")
    with pytest.raises(SystemExit, match=r"00003 \(copy\)\.png.*not a frame number"):
        main(args)


def _save_as_binary(folder):
    """Every prediction of `folder` re-saved as a 0/255 greyscale mask (all objects merged)."""
    for path in folder.glob("*.png"):
        Image.fromarray(np.where(read_label_png(path) > 0, 255, 0).astype(np.uint8), mode="L").save(path)


def test_davis_binary_prediction_of_a_multi_object_sequence_stops(davis):
    # The official tool reads 255 as an id above the 3 objects and stops; it must not become object 1.
    args, _, results_dir = davis
    _save_as_binary(results_dir / "a_multi")
    with pytest.raises(SystemExit, match=r"a_multi/0000\d\.png is a binary 0/255 mask.*3 objects.*official tool stops"):
        main(args)


def test_davis_binary_prediction_of_a_single_object_sequence_is_scored(davis):
    args, _, results_dir = davis
    _save_as_binary(results_dir / "e_lateobj")
    assert "e_lateobj_1" in main([*args, "--sequences", "e_lateobj"])["per_object"]


def test_davis_stray_id_in_first_ground_truth_frame_is_refused(davis):
    args, gt_dir, _ = davis
    labels = read_label_png(gt_dir / "a_multi" / "00000.png")
    labels[0, 0] = 200
    write_label_png(gt_dir / "a_multi" / "00000.png", labels)
    with pytest.raises(SystemExit, match=r"a_multi/00000\.png: .*id 200.*renumber"):
        main(args)


def test_davis_antialiased_ground_truth_is_refused(davis):
    args, gt_dir, _ = davis
    for path in (gt_dir / "e_lateobj").glob("*.png"):
        binary = (read_label_png(path) > 0).astype(np.uint8) * 255
        Image.fromarray(cv2.GaussianBlur(binary, (7, 7), 2)).save(path)
    with pytest.raises(SystemExit, match=r"e_lateobj/0000\d\.png: .*anti-aliased"):
        main(args)


def test_davis2016_release_layout_is_evaluated(realdata, tmp_path):
    root = realdata / "DAVIS2016"
    names = []
    for line in (root / "ImageSets" / "480p" / "val.txt").read_text().splitlines():
        name = line.split()[0].split("/")[-2]
        if name not in names:
            names.append(name)
    for name in names:
        shutil.copytree(root / "Annotations" / "480p" / name, tmp_path / name)
    results = main(["davis", "--davis-root", str(root), "--results-dir", str(tmp_path), "--workers", "1"])
    assert results["num_sequences"] == len(names) and results["J-Mean"] == 1.0


def test_davis_root_without_a_set_file_evaluates_the_results_sequences(davis, tmp_path, capsys):
    _, gt_dir, results_dir = davis
    root = tmp_path / "DAVIS"
    shutil.copytree(gt_dir, root / "Annotations" / "480p")
    shutil.rmtree(results_dir / "a_multi")
    results = main(["davis", "--davis-root", str(root), "--results-dir", str(results_dir), "--workers", "1"])
    assert list(results["per_object"]) == ["e_lateobj_1"]
    assert "no image set file" in capsys.readouterr().err


# -- CVPPP / KITTI -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["cvppp", "kitti"])
def test_json_output_that_is_a_directory_is_refused_before_scoring(benchmark, golden, tmp_path, capsys):
    folder = golden / benchmark
    args = [benchmark, "--gt-dir", str(folder / "gt"), "--pred-dir", str(folder / "pred"), "--json", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"--json .* is a directory"):
        main(args)
    assert capsys.readouterr().out == ""
