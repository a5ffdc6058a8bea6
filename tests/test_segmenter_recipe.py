"""recipes.segmenter_vos end to end on synthetic frames alone: a run stopped mid-epoch resumes when its command is
run again, it learns (held-out sequences, against the same detector at random init), and its run directory is
complete and publishable."""

import contextlib
import io
import json

import pytest

from recipes import segmenter_vos

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmenter_recipe")
    argv = ["--realdata", "none", "--synthetic-dir", str(root / "synthetic"), "--synthetic-sequences", "5",
            "--short-side", "240", "--min-size", "240", "--checkpoint-every", "1",
            "--run-dir", str(root / "run"), "--threads", "2"]
    segmenter_vos.main(argv + ["--steps", "70", "--skip-baseline"])  # ends mid-epoch (50 steps an epoch)
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        metrics = segmenter_vos.main(argv + ["--steps", "140"])
    return root / "run", printed.getvalue(), metrics


def test_rerun_with_more_steps_continues_from_the_last_checkpoint(run):
    run_dir, printed, _ = run
    assert f"{run_dir / 'checkpoints' / 'last.ckpt'}: finished after" in printed  # the 70-step run's checkpoint
    import torch

    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 140


def test_training_beats_random_init_on_held_out_synthetic_sequences(run):
    _, _, metrics = run
    trained, random_init = metrics["zoo_segmenter"], metrics["random_init_detector"]
    assert trained["covered@0.5"] >= random_init["covered@0.5"] + 0.3
    assert trained["mean_best_iou"] > random_init["mean_best_iou"] + 0.2


def test_run_directory_is_complete_and_publishable(run, tmp_path):
    from zoo.hub import load_folder
    from zoo.paths import REPO_ROOT
    from zoo.publish import publish

    run_dir, _, metrics = run
    for name in ("model/config.json", "model/model.safetensors", "metrics.json", "results.json",
                 "per_sequence.csv", "held_out_proposals.png", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    values = {m["type"]: m["value"] for m in results["results"][-1]["metrics"]}  # the last: all frames
    assert values["covered_iou50"] == round(metrics["zoo_segmenter"]["covered@0.5"], 4)
    out = publish(run_dir, "segmenter-vos", out=tmp_path / "segmenter-vos",
                  card_template=REPO_ROOT / "model_cards" / "segmenter-vos.md")
    assert load_folder(out, expected_type="segmenter").backbone_weights.startswith("package:")
