"""`recipes._run_dir`: resume after a kill, atomic checkpoints, one run per directory, the Ctrl-C hint."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from recipes._run_dir import AtomicCheckpointIO, RunDirectory, checkpoint_state, recorded_commands
from zoo.paths import REPO_ROOT


class Line(pl.LightningModule):
    """Four batches an epoch, no shuffling: an interrupted and resumed fit ends where an uninterrupted one does."""

    def __init__(self, stop_at_batch: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(2, 1)
        self.batches = 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        if self.batches == self.hparams.stop_at_batch:
            raise KeyboardInterrupt
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.1)

    def train_dataloader(self):
        x = torch.linspace(-1, 1, 32).reshape(16, 2)
        return DataLoader(list(zip(x, x.sum(1, keepdim=True) * 3)), batch_size=4)


@pytest.fixture
def sigint_restored():
    """Lightning ignores SIGINT after it caught a KeyboardInterrupt; give the test session its Ctrl-C back."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def train(run_dir, epochs=3, restart=False, stop_at_batch=None, identity=None, **callback):
    """One recipe-shaped fit inside a RunDirectory; returns the module."""
    module = Line(stop_at_batch)
    identity = identity or {"lr": 0.1}
    with RunDirectory(run_dir, restart=restart, command=["python", "-m", "recipes.line", "--run-dir", str(run_dir)]) as run:
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, plugins=[run.checkpoint_io()],
                             callbacks=[run.checkpoint_callback(identity=identity, **callback)])
        trainer.fit(module, ckpt_path=run.resume_checkpoint(identity=identity))
    return module


def test_a_killed_fit_resumes_where_it_stopped_and_ends_like_an_uninterrupted_one(tmp_path, capsys, sigint_restored):
    straight = train(tmp_path / "straight")
    state = checkpoint_state(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert state["complete"] and state["epochs"] == 3

    with pytest.raises(SystemExit) as stopped:
        train(tmp_path / "run", stop_at_batch=11)  # in the third epoch: the checkpoint of epoch 2 is on disk
    assert stopped.value.code == 130
    hint = capsys.readouterr().err
    assert "run the same command again" in hint and "python -m recipes.line --run-dir" in hint
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint_state(last)["epochs"] == 2 and not checkpoint_state(last)["complete"]

    resumed = train(tmp_path / "run")
    assert f"resuming from {last} (interrupted after 2 epoch(s)" in capsys.readouterr().err
    assert resumed.batches == 4  # only the third epoch ran again
    torch.testing.assert_close(resumed.layer.weight, straight.layer.weight)
    assert sorted(path.name for path in last.parent.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt beside a stale one
    assert checkpoint_state(last)["complete"]


def test_restart_deletes_the_checkpoints_and_trains_from_the_start(tmp_path, capsys):
    train(tmp_path)
    module = train(tmp_path, restart=True)
    assert "--restart: removed 1 checkpoint(s)" in capsys.readouterr().err
    assert module.batches == 12


def test_checkpoints_every_n_epochs_or_minutes(tmp_path, sigint_restored):
    for name, callback, expected in (("none", {"every_n_epochs": 0}, None), ("every2", {"every_n_epochs": 2}, 2),
                                     ("minutes", {"every_n_epochs": 0, "every_minutes": 0.0}, 3)):
        with pytest.raises(SystemExit):
            train(tmp_path / name, epochs=5, stop_at_batch=15, **callback)  # stops in the fourth epoch
        last = tmp_path / name / "checkpoints" / "last.ckpt"
        assert (checkpoint_state(last)["epochs"] if last.exists() else None) == expected, name


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    train(tmp_path, identity={"lr": 0.1, "seed": 0})
    with pytest.raises(SystemExit, match=r"other settings \(seed: 0 -> 1\); pass --restart"):
        train(tmp_path, identity={"lr": 0.1, "seed": 1})


def test_a_truncated_checkpoint_is_named_with_the_way_out(tmp_path):
    train(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(SystemExit, match=rf"{last} cannot be read .* --restart"):
        train(tmp_path)
    with pytest.raises(RuntimeError, match=rf"{last} cannot be read"):
        AtomicCheckpointIO().load_checkpoint(last)


def test_a_failed_write_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes()

    def disk_full(obj, handle):
        handle.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left") as error:
        io.save_checkpoint({"step": torch.tensor(2)}, path)
    assert "the previous one, if any, is intact" in str(error.value.__notes__)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary file is gone too


def test_a_second_run_into_the_directory_fails_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from recipes._run_dir import RunDirectory\n"
         "with RunDirectory(sys.argv[1], command=['python', '-m', 'recipes.holder']):\n"
         "    print('locked', flush=True); time.sleep(120)", str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SystemExit, match=rf"in use by process {holder.pid} on .*python -m recipes.holder"):
            with RunDirectory(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait()
    assert f"process {holder.pid}" in (tmp_path / ".lock").read_text()
    with RunDirectory(tmp_path) as run:
        assert f"process {os.getpid()}" in (tmp_path / ".lock").read_text()
        with pytest.raises(SystemExit, match="in use by"):  # one run per directory within a process too
            RunDirectory(run.path).__enter__()
    assert not (tmp_path / ".lock").exists()


def test_every_entry_records_its_command_in_the_directory(tmp_path):
    run_dir = tmp_path / "run"
    train(run_dir, epochs=1)
    train(run_dir, epochs=2)
    assert recorded_commands(run_dir) == [f"python -m recipes.line --run-dir {run_dir}"] * 2
    assert recorded_commands(tmp_path / "never-used") == []


def test_a_checkpoint_carries_its_training_time_through_resumes_and_copies(tmp_path, monkeypatch, sigint_restored):
    import shutil

    import recipes._run_dir as run_dir_module

    seconds = [0.0]  # a clock that advances one second per training batch, so the record is exact
    monkeypatch.setattr(run_dir_module, "_clock", lambda: seconds[0])
    monkeypatch.setattr(Line, "on_train_batch_end", lambda self, *_: seconds.__setitem__(0, seconds[0] + 1))

    train(tmp_path / "straight")
    assert checkpoint_state(tmp_path / "straight" / "checkpoints" / "last.ckpt")["train_seconds"] == 12

    with pytest.raises(SystemExit):
        train(tmp_path / "run", stop_at_batch=11)  # the checkpoint after 2 epochs (8 batches) survives
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert checkpoint_state(last)["train_seconds"] == 8
    seconds[0] += 100  # time between the runs is not training time
    train(tmp_path / "run")
    assert checkpoint_state(last)["train_seconds"] == 12  # 8 before the kill and the 4 batches of the resumed epoch

    shutil.copytree(tmp_path / "run" / "checkpoints", tmp_path / "copy" / "checkpoints")  # continued elsewhere
    train(tmp_path / "copy", epochs=5)
    assert checkpoint_state(tmp_path / "copy" / "checkpoints" / "last.ckpt")["train_seconds"] == 20


def test_a_checkpoint_without_a_training_time_passes_on_none(tmp_path):
    train(tmp_path, epochs=1)
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    del checkpoint["run_directory"]["train_seconds"]  # as written before the record existed
    torch.save(checkpoint, last)
    train(tmp_path, epochs=2)
    assert checkpoint_state(last)["train_seconds"] is None  # not the resumed run's time alone, passed off as the whole
