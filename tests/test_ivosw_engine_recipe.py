"""`python -m recipes.ivosw_engine_davis` end to end on a tiny synthetic DAVIS tree (random backbone): results.json
with every row per held-out sequence, a model folder `zoo.load` reads, and a re-run that resumes instead of training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recipes import ivosw_engine_davis

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["--synthetic-train", "2", "--synthetic-val", "1", "--synthetic-frames", "5", "--epochs", "1",
        "--steps-per-epoch", "2", "--batch-size", "2", "--short-side", "64", "--rounds", "2", "--random-backbone",
        "--threads", "1"]


def test_the_recipe_trains_evaluates_and_writes_a_loadable_engine(tmp_path, capsys):
    import zoo
    from zoo.interactive.matching_engine import MatchingEngine

    run_dir = tmp_path / "run"
    summary = ivosw_engine_davis.main([*TINY, "--run-dir", str(run_dir)])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["backbone_weights"] == "random" and results["synthetic"]
    (name, row), = results["per_sequence"].items()
    assert set(row["semi_supervised"]) == {*ivosw_engine_davis.ENGINE_ROWS, "repeat_first_mask"}
    for engine in ivosw_engine_davis.ENGINE_ROWS:
        assert len(row["interactive"][engine]["curve"]) == 2 and all(0 <= v <= 1 for v in
                                                                     row["interactive"][engine]["curve"])
    assert summary["summary"]["semi_supervised_jf"]["matching"] == row["semi_supervised"]["matching"]
    engine = zoo.load(run_dir / "model")
    assert isinstance(engine, MatchingEngine) and engine.short_side == 64 and not engine.refine
    frames = [np.zeros((32, 48, 3), np.uint8)] * 3
    engine.start(frames, 1)
    assert engine.interact_mask(0, np.ones((32, 48), np.uint8)).labels.shape == (3, 32, 48)
    capsys.readouterr()
    again = ivosw_engine_davis.main([*TINY, "--run-dir", str(run_dir)])  # finished: resumes, trains no more
    assert "finished after 1 epoch" in capsys.readouterr().err
    assert again["seconds"]["when_trained"]["training"] == pytest.approx(summary["seconds"]["training"])
    assert again["per_sequence"] == summary["per_sequence"] or all(  # the same scores; only the timings may differ
        again["per_sequence"][n]["semi_supervised"] == summary["per_sequence"][n]["semi_supervised"]
        for n in summary["per_sequence"])
