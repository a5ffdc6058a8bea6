"""`python -m recipes.alba_davis` end to end on a tiny synthetic DAVIS 2017 tree: inputs cached, warm-up, RL, every
Table 1 row in the DAVIS layout with official CSVs, the saved model loading and segmenting, and a re-run that finds
its inputs in the cache (no detector call) and trains no more."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes import alba_davis

TINY = ["--synthetic-train", "2", "--synthetic-val", "1", "--synthetic-frames", "4", "--synthetic-size", "64", "80",
        "--clip-length", "3", "--warmup-epochs", "1", "--rl-updates", "1", "--rollouts", "2",
        "--rl-episodes-per-batch", "1", "--max-proposals", "4", "--width", "0.0625", "--size", "80",
        "--threads", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("alba")
    run_dir = root / "run"
    summary = alba_davis.main([*TINY, "--run-dir", str(run_dir), "--cache-dir", str(root / "cache")])
    return run_dir, root / "cache", summary


def test_run_directory_holds_every_row_and_the_official_outputs(run):
    run_dir, _, summary = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == list(alba_davis.ROWS)
    sequence = next(iter(metrics["rl"]["per_sequence"]))
    for slug in alba_davis.ROWS:
        pngs = sorted((run_dir / "results" / slug / sequence).glob("*.png"))
        assert len(pngs) == 4, slug
        assert (run_dir / "results" / slug / "global_results-val.csv").is_file()
        assert 0.0 <= metrics[slug]["summary"]["J&F-Mean"] <= 1.0
        assert all(alba_davis.ROWS[slug][0] in summary["table1"] for slug in alba_davis.ROWS)
    for name in ("table1.md", "per_sequence.csv", "grouping.png", "results.json", "model/config.json",
                 "model/model.safetensors"):
        assert (run_dir / name).is_file(), name
    assert summary["synthetic"] is True and "synthetic" in summary["trained_on"]
    assert summary["counts"]["detector_calls"] == 3 * 4  # every distinct frame of the 3 videos once
    # the greedy oracle reads the ground truth: it is the upper bound of every row here
    assert metrics["oracle"]["summary"]["J&F-Mean"] >= max(m["summary"]["J&F-Mean"] for m in metrics.values())


def test_saved_model_segments_raw_frames_with_at_most_20_ids(run):
    from datamodules.davis import DAVIS
    from datamodules.synthetic_vos import synthetic_root
    from zoo.hub import load_folder

    run_dir, cache, _ = run
    model = load_folder(run_dir / "model", expected_type="alba")
    sequence = DAVIS(synthetic_root("davis2017", num_train=2, num_val=1, num_frames=4, height=64, width=80, seed=0),
                     split="val", task="unsupervised")[0]
    frames = [sequence.frame(i) for i in range(3)]
    labels = model.segment(frames, video="segment-test", cache_dir=cache)
    assert labels.shape == (3, 64, 80) and labels.dtype == np.uint8 and labels.max() <= 20
    with pytest.raises(ValueError, match="frames is empty"):
        model.segment([])
    with pytest.raises(ValueError, match="uint8 RGB"):
        model.segment([frames[0][..., 0]])


def test_rerun_reads_the_cache_and_trains_no_more(run, capsys):
    run_dir, cache, _ = run
    state_before = (run_dir / "model" / "model.safetensors").read_bytes()
    summary = alba_davis.main([*TINY, "--run-dir", str(run_dir), "--cache-dir", str(cache), "--rows", "vanilla"])
    assert summary["counts"]["detector_calls"] == 0 and summary["counts"]["flow_calls"] == 0
    assert "using it (--restart starts over)" in capsys.readouterr().err
    assert (run_dir / "model" / "model.safetensors").read_bytes() == state_before


def test_a_missing_data_dir_is_a_one_line_error_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        alba_davis.main(["--data-dir", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "run")])
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


@pytest.mark.parametrize("benchmark", ["fbms", "youtube-vos"])
def test_other_benchmarks_in_their_own_layouts(tmp_path, benchmark):
    """FBMS scores only its sparsely annotated frames (every 4th here) but writes every frame; YouTube-VOS runs on the
    RVOS-style split of its train set given as two video lists."""
    tiny = [*TINY]
    tiny[tiny.index("--synthetic-frames") + 1] = "9"
    summary = alba_davis.main([*tiny, "--benchmark", benchmark, "--rows", "vanilla", "oracle",
                               "--run-dir", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    (sequence, scores), = metrics["vanilla"]["per_sequence"].items()
    assert scores["frames"] == 9
    assert scores["scored_frames"] == (3 if benchmark == "fbms" else 9)
    assert len(list((tmp_path / "run" / "results" / "vanilla" / sequence).glob("*.png"))) == 9
    assert summary["benchmark"].startswith("FBMS" if benchmark == "fbms" else "YouTube-VOS")
