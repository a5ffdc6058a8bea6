"""Run directories that survive kills: automatic resume, atomic checkpoints, one run at a time.

Every recipe trains inside one of these:

    with RunDirectory(args.run_dir, restart=args.restart, command=["python", "-m", "recipes.x", *argv]) as run:
        identity = {"hparams": dict(module.hparams), "seed": args.seed}     # what must match to resume
        trainer = pl.Trainer(..., plugins=[run.checkpoint_io()],
                             callbacks=[run.checkpoint_callback(identity=identity, every_n_epochs=5, every_minutes=10)])
        trainer.fit(module, ckpt_path=run.resume_checkpoint(identity=identity))

- Entering takes `RUN_DIR/.lock` (`fcntl.flock`, so a dead process never holds it): a second run into the same
  directory stops at once, naming the process that holds it. `restart=True` then deletes `RUN_DIR/checkpoints`.
  Each entry appends its time and command to `RUN_DIR/commands.log` (`recorded_commands(path)` reads them back), so
  a directory that only ran some stages still says how its checkpoints were made.
- `checkpoint_callback(stage=None, ...)` writes `checkpoints[/<stage>]/last.ckpt` every `every_n_epochs` epochs or
  `every_minutes` minutes (checked at epoch ends) and when the fit ends; the file records whether its fit finished,
  the `identity` it was trained with and `train_seconds`, the fit's time summed over every run that trained these
  weights (carried on from the checkpoint a fit resumes, wherever that was copied from; None when a checkpoint on
  the way predates the record).
- `resume_checkpoint(stage=None, identity=None)` is that `last.ckpt`, or None when there is none; it prints one
  line saying it resumes, and stops with the file's name and `--restart` when the file cannot be read or was
  written with another identity. `checkpoint_state(path)` reads what the callback recorded.
- `checkpoint_io()` is the Trainer plugin that writes every checkpoint to a temporary file in the same folder, syncs
  it and renames it over the old one, so a full disk or a kill never leaves a truncated `last.ckpt`.
- Ctrl-C (during or outside `trainer.fit`) prints the command that resumes, and exits with status 130.

Under DDP every rank enters the directory; only the launching process (no RANK / LOCAL_RANK / NODE_RANK other than 0
in its environment) locks it, deletes on restart and prints.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

LAST = "last.ckpt"
STATE_KEY = "run_directory"  # what the checkpoint callback adds to every checkpoint it writes
_TEMPORARY = ".tmp-"
COMMANDS_LOG = "commands.log"
_clock = time.monotonic  # what `train_seconds` is measured with (tests replace it)


def is_launcher() -> bool:
    """False in the processes a DDP launch starts (and on the other nodes)."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _say(message: str) -> None:
    if is_launcher():
        print(message, file=sys.stderr, flush=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temporary file beside the target, fsync, os.replace: the target is the old checkpoint or the
    new one, never a part of one. (Lightning's own transaction writes to /tmp and moves the file, which copies it
    when /tmp is another file system.)"""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{_TEMPORARY}{os.getpid()}-{path.name}")
        try:
            with open(temporary, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                error.add_note(f"writing checkpoint {path} failed; the previous one, if any, is intact")
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as error:
            raise RuntimeError(_unreadable(path, error)) from error


def _unreadable(path, error: BaseException) -> str:
    return (f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); it may be cut short or from another "
            "version. Move it away to keep it, or pass --restart to start over")


def _canonical(identity: dict | None) -> str | None:
    return None if identity is None else json.dumps(identity, sort_keys=True, default=str)


def checkpoint_state(path: Path) -> dict:
    """What `checkpoint_callback` recorded in `path`: {"complete": bool, "epochs": int, "identity": str | None,
    "train_seconds": float | None}.
    Checkpoints written before the callback existed were written when their fit ended: complete, identity unknown.
    Raises SystemExit naming the file when it cannot be read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise SystemExit(_unreadable(path, error)) from error
    state = checkpoint.get(STATE_KEY)
    if state is None:
        return {"complete": True, "epochs": int(checkpoint.get("epoch", 0)), "identity": None, "train_seconds": None}
    return {"train_seconds": None, **state}


class _LastCheckpoint(Callback):
    def __init__(self, path: Path, identity: dict | None, every_n_epochs: int, every_minutes: float | None,
                 on_interrupt):
        self.path, self.identity = path, _canonical(identity)
        self.every_n_epochs, self.every_minutes = max(0, every_n_epochs), every_minutes
        self.on_interrupt = on_interrupt
        self._saved_at = time.monotonic()
        self._state = {}
        self._earlier_seconds = 0.0  # what the resumed checkpoint had trained for (None: not recorded)
        self._fit_started = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._earlier_seconds = (checkpoint.get(STATE_KEY) or {}).get("train_seconds")

    def on_train_start(self, trainer, pl_module) -> None:
        self._fit_started = _clock()

    def _save(self, trainer, epochs: int, complete: bool) -> None:
        seconds = None
        if self._earlier_seconds is not None and self._fit_started is not None:
            seconds = round(self._earlier_seconds + _clock() - self._fit_started, 1)
        self._state = {"complete": complete, "epochs": epochs, "identity": self.identity, "train_seconds": seconds}
        trainer.save_checkpoint(self.path, weights_only=False)  # on every rank: modules may gather state in it
        self._saved_at = time.monotonic()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[STATE_KEY] = dict(self._state)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epochs = trainer.current_epoch + 1
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= epochs:
            return  # on_train_end writes the final one
        due = self.every_n_epochs > 0 and epochs % self.every_n_epochs == 0
        if self.every_minutes is not None:
            due = due or time.monotonic() - self._saved_at >= 60 * self.every_minutes
        if trainer.strategy.broadcast(due):  # rank 0's clock decides for all
            self._save(trainer, epochs, complete=False)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer, trainer.current_epoch, complete=True)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.on_interrupt()


def recorded_commands(path: Path | str) -> list[str]:
    """The commands that entered the run directory, oldest first (empty when it kept no log)."""
    log = Path(path) / COMMANDS_LOG
    if not log.is_file():
        return []
    return [line.split("\t", 1)[1] for line in log.read_text().splitlines() if "\t" in line]


class RunDirectory:
    def __init__(self, path: Path | str, *, restart: bool = False, command: list[str] | None = None):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.restart = restart
        words = list(sys.orig_argv if command is None else command)
        self.command = shlex.join(word for word in words if word != "--restart")  # the resuming command
        self._lock = None
        self._interrupted = False

    # -- lifetime -------------------------------------------------------------------------------------------------
    def __enter__(self) -> "RunDirectory":
        self.path.mkdir(parents=True, exist_ok=True)
        if is_launcher():
            self._acquire()
            with open(self.path / COMMANDS_LOG, "a") as log:
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{self.command}\n")
            for stale in self.checkpoints.rglob(f"{_TEMPORARY}*"):  # left by a kill during a write
                stale.unlink(missing_ok=True)
            if self.restart:
                self.discard_checkpoints()
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        try:
            interrupted = kind is KeyboardInterrupt or (kind is SystemExit and self._interrupted)
            if interrupted:
                self._hint()
                raise SystemExit(130) from None
            return False
        finally:
            self._release()

    def _hint(self) -> None:
        saved = list(self.checkpoints.rglob(LAST)) if self.checkpoints.is_dir() else []
        newest = max(saved, key=lambda path: path.stat().st_mtime, default=None)
        where = f"from {newest}" if newest else "(no checkpoint was written yet: it starts over)"
        _say(f"interrupted; to resume {where}, run the same command again:\n  {self.command}")

    def _acquire(self) -> None:
        lock_path = self.path / ".lock"
        while True:
            handle = open(lock_path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise SystemExit(f"{self.path} is in use by {holder}; wait for that run to end, stop it, or use "
                                 "another --run-dir") from None
            except OSError as error:  # a file system without locks: run unprotected rather than not at all
                handle.close()
                print(f"note: cannot lock {lock_path} ({error}); make sure no other run uses {self.path}",
                      file=sys.stderr)
                return
            try:
                same_file = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and flock
                same_file = False
            if same_file:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()} (`{self.command}`, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / ".lock").unlink(missing_ok=True)
            self._lock.close()  # closing releases the flock
            self._lock = None

    def _mark_interrupted(self) -> None:
        self._interrupted = True

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def last_checkpoint(self, stage: str | None = None) -> Path:
        return (self.checkpoints / stage if stage else self.checkpoints) / LAST

    def discard_checkpoints(self, stage: str | None = None) -> None:
        folder = self.checkpoints / stage if stage else self.checkpoints
        if not is_launcher() or not folder.is_dir():
            return
        removed = len(list(folder.rglob("*.ckpt")))
        shutil.rmtree(folder)
        _say(f"--restart: removed {removed} checkpoint(s) under {folder}")

    def resume_checkpoint(self, stage: str | None = None, identity: dict | None = None) -> Path | None:
        path = self.last_checkpoint(stage)
        if not path.is_file():
            return None
        state = checkpoint_state(path)
        wanted = _canonical(identity)
        if wanted is not None and state["identity"] is not None and state["identity"] != wanted:
            changed = _differences(json.loads(state["identity"]), json.loads(wanted))
            raise SystemExit(f"{path} was written by a run with other settings ({changed}); pass --restart to start "
                             "over, or use another --run-dir")
        if state["complete"]:
            _say(f"{path}: finished after {state['epochs']} epoch(s); using it (--restart starts over)")
        else:
            _say(f"resuming from {path} (interrupted after {state['epochs']} epoch(s); --restart starts over)")
        return path

    def checkpoint_io(self) -> AtomicCheckpointIO:
        return AtomicCheckpointIO()

    def checkpoint_callback(self, stage: str | None = None, *, identity: dict | None = None, every_n_epochs: int = 1,
                            every_minutes: float | None = None) -> Callback:
        return _LastCheckpoint(self.last_checkpoint(stage), identity, every_n_epochs, every_minutes,
                               self._mark_interrupted)


def _differences(old: dict, new: dict, prefix: str = "") -> str:
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            inner = _differences(before, after, f"{prefix}{key}.")
            changes += [inner] if inner else []
        elif before != after:
            changes.append(f"{prefix}{key}: {before!r} -> {after!r}")
    return ", ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")


class EpochSeededSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch), so that a resumed run visits clips in the same order."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 10_007 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def hardware(accelerator: str = "cpu") -> str:
    """What a run's figures were measured on, for results.json and the card."""
    import os
    import platform

    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores), {torch.get_num_threads()} torch thread(s)"
