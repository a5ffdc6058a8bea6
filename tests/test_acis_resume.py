"""The ACIS recipes checkpoint within a stage: Ctrl-C (or a kill) in a stage loses at most `--checkpoint-every`
epochs, re-running the command resumes inside the stage and skips finished ones, and a later stage never starts
from an unfinished one."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
from pathlib import Path

import pytest

from datamodules.synthetic_cvppp import write_synthetic_cvppp
from recipes import _acis_common, acis_cvppp
from recipes._acis_common import Schedule
from recipes._run_dir import checkpoint_state
from zoo.acis.module import PreprocessingModule


def write_small(root) -> Path:
    root = Path(root)
    return root if (root / "A1").is_dir() else write_synthetic_cvppp(root, num_images=12, size=(96, 96))


SMALL = dataclasses.replace(
    acis_cvppp.CVPPP, write_synthetic=write_small,
    embedded_schedule=Schedule(preproc_epochs=3, cvae_epochs=1, init_epochs=1, train_epochs=1, batch_size=4))


def test_a_stage_resumes_from_its_last_epoch_checkpoint_and_a_finished_stage_is_skipped(tmp_path, monkeypatch, capsys):
    argv = ["--run-dir", str(tmp_path / "run"), "--stage", "preproc", "--checkpoint-every", "1"]
    step = PreprocessingModule.training_step

    def interrupted_in_the_third_epoch(self, batch, batch_idx):
        if self.current_epoch == 2:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(PreprocessingModule, "training_step", interrupted_in_the_third_epoch)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:
            _acis_common.main(SMALL, argv)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C once it caught one
    assert stopped.value.code == 130
    last = tmp_path / "run" / "checkpoints" / "preproc" / "last.ckpt"
    assert checkpoint_state(last)["epochs"] == 2 and not checkpoint_state(last)["complete"]
    assert f"resume from {last}, run the same command again:\n  python -m recipes.acis_cvppp --run-dir" in \
        capsys.readouterr().err
    unfinished = tmp_path / "other" / "preproc" / "last.ckpt"  # e.g. the --pretrained-run of a run still going
    unfinished.parent.mkdir(parents=True)
    shutil.copy(last, unfinished)

    monkeypatch.setattr(PreprocessingModule, "training_step", step)
    _acis_common.main(SMALL, argv)
    assert f"resuming from {last} (interrupted after 2 epoch(s)" in capsys.readouterr().err
    state = checkpoint_state(last)
    assert state["complete"] and state["epochs"] == 3
    # the recorded time covers only the epoch trained after the resume, and the record says so
    assert json.loads((tmp_path / "run" / "timings.json").read_text())["epochs"] == {"preproc": [2, 3]}

    _acis_common.main(SMALL, argv)
    err = capsys.readouterr().err
    assert f"{last}: finished after 3 epoch(s)" in err and "[acis] stage preproc" not in err

    with pytest.raises(SystemExit, match=f"{unfinished} is the checkpoint of an unfinished 'preproc' stage"):
        _acis_common.load(PreprocessingModule, unfinished)
