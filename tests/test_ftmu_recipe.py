"""`python -m recipes.ftmu_davis` end to end on a tiny synthetic DAVIS tree: training of both agents, every Table 2
row, the run directory a user and `zoo.publish` read, the saved model, and a resumed re-run that trains no more."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes import ftmu_davis
from recipes._ftmu_common import ROWS

TINY = ["--synthetic-train", "2", "--synthetic-val", "1", "--synthetic-frames", "13", "--synthetic-size", "72", "96",
        "--updates", "2", "--clips-per-batch", "3", "--hidden", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ftmu") / "run"
    summary = ftmu_davis.main([*TINY, "--run-dir", str(run_dir)])
    return run_dir, summary


def test_run_directory_holds_every_row_and_the_official_outputs(run):
    run_dir, summary = run
    sequence = json.loads((run_dir / "results.json").read_text())["results"][0]["data"].split(" (")[0]
    for slug in ROWS:
        pngs = sorted((run_dir / "results" / slug / sequence).glob("*.png"))
        assert len(pngs) == 13, slug
        assert (run_dir / "results" / slug / "global_results-val.csv").is_file()
    assert [r["task_name"] for r in summary["results"]] == ["Box-initialised VOS, Table 2 row: " + ROWS["full"].title]
    assert all(ROWS[slug].title in summary["table2"] for slug in ROWS)  # the other rows are the card's context
    assert summary["synthetic"] is True and "synthetic" in summary["trained_on"]
    for name in ("table2.md", "per_sequence.csv", "actions.png", "metrics.json", "model/config.json",
                 "model/model.safetensors"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for slug, row in metrics.items():
        assert 0.0 <= row["summary"]["J&F-Mean"] <= 1.0
        assert set(row["breakdown_seconds_per_frame"]) == {"segmentation", "matching", "agent", "redetection"}
    # the fixed rows need no agent: no update never replaces, always-update always does
    no_update = metrics["no-update"]["per_sequence"][sequence]
    iou_update = metrics["iou-update"]["per_sequence"][sequence]
    assert no_update["replace_rate"] == 0.0 and iou_update["replace_rate"] == 1.0
    assert no_update["redetections"] == 0 and iou_update["redetections"] == 0


def test_saved_model_segments_a_video_with_the_given_ids(run):
    from datamodules.davis import DAVIS
    from zoo.hub import load_folder

    run_dir, _ = run
    model = load_folder(run_dir / "model", expected_type="ftmu")
    assert model.backbone_weights.startswith("package:") or model.backbone_weights == "hub"
    sequence = DAVIS(ftmu_davis.synthetic_root("davis2017", num_train=2, num_val=1, num_frames=13, height=72,
                                               width=96, seed=0), split="val")[0]
    frames = [sequence.frame(i) for i in range(5)]
    boxes = {k: (b[0], b[1], b[2] - b[0], b[3] - b[1]) for k, b in sequence.first_frame_boxes().items()}
    labels = model.segment(frames, {7 if k == 1 else k: box for k, box in boxes.items()})
    assert labels.shape == (5, 72, 96) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 7, *[k for k in boxes if k != 1]}
    with pytest.raises(ValueError, match="w, h > 0"):
        model.segment(frames, {1: (0, 0, 0, 5)})


def test_rerun_resumes_and_trains_no_more(run, capsys):
    run_dir, summary = run
    state_before = (run_dir / "model" / "model.safetensors").read_bytes()
    ftmu_davis.main([*TINY, "--run-dir", str(run_dir), "--rows", "full"])
    assert "using it (--restart starts over)" in capsys.readouterr().err  # the finished fit is reused
    assert (run_dir / "model" / "model.safetensors").read_bytes() == state_before


def test_a_missing_data_dir_is_a_one_line_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ftmu_davis.main(["--data-dir", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "run")])
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
