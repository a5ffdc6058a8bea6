"""Progress reports on stderr, so that stdout keeps the results.

`progress(...)` is one bar per long loop when stderr is a terminal (tqdm), and otherwise a plain line every
`ZOO_PROGRESS_SECONDS` seconds (default 30) plus one at the end, instead of a log file full of `\\r` redraws.
`TrainingProgress` is one such bar over a whole `Trainer.fit` (all epochs), in place of Lightning's bar, which
writes to stdout and starts over every epoch. `quiet_lightning()` drops Lightning's advertising tips
(`ZOO_LIGHTNING_TIPS=1` keeps them); `expected_warnings(...)` hides the Lightning warnings a recipe causes on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings

from lightning.pytorch.callbacks import Callback
from tqdm.auto import tqdm

from recipes._run_dir import is_launcher


class _Lines:
    """The tqdm methods the recipes use, printing a line at most every `interval` seconds."""

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, interval=30.0):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = self._first = initial
        self.interval, self.postfix = interval, ""
        self._started = self._printed = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def set_postfix(self, refresh=False, **values):
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def update(self, n=1):
        self.n += n
        if time.monotonic() - self._printed >= self.interval:
            self._print()

    def close(self):
        if self.iterable is not None or self.n > self._first or self.total == 0:
            self._print()
        self.iterable, self._first = None, self.n  # prints once, however often it is closed

    def _print(self):
        elapsed = time.monotonic() - self._started
        count = f"{self.n}/{self.total} ({self.n / self.total:.0%})" if self.total else str(self.n)
        rate = (self.n - self._first) / elapsed if elapsed > 0 else 0.0
        line = f"{self.desc}: {count} {self.unit}, {rate:.3g} {self.unit}/s, {elapsed:.0f} s"
        if self.total and rate > 0 and self.n < self.total:
            line += f", ~{(self.total - self.n) / rate:.0f} s left"
        print(line + (f"; {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)
        self._printed = time.monotonic()


def progress(iterable=None, *, total=None, desc="", unit="it", initial=0):
    if not is_launcher():
        return tqdm(iterable, total=total, disable=True)  # one report per run: the other DDP ranks stay quiet
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, dynamic_ncols=True)
    return _Lines(iterable, total=total, desc=desc, unit=unit, initial=initial,
                  interval=float(os.environ.get("ZOO_PROGRESS_SECONDS", 30)))


def _short(key: str) -> str:
    return key.removeprefix("train/")


class TrainingProgress(Callback):
    """One report over every training batch of a fit; `postfix(trainer, module)` -> dict of what to show (default:
    the metrics logged with prog_bar=True)."""

    def __init__(self, desc: str, unit: str = "batch", postfix=None, steps_per_batch: int = 1):
        # steps_per_batch: optimiser steps Lightning counts per batch (manual optimisation with two optimisers: 2)
        self.desc, self.unit, self.postfix, self.steps_per_batch = desc, unit, postfix, steps_per_batch
        self.bar = None

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        per_epoch = trainer.num_training_batches
        total = per_epoch * trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if trainer.max_steps and trainer.max_steps > 0:
            batches = trainer.max_steps // self.steps_per_batch
            total = min(total or batches, batches)
        done = trainer.current_epoch * per_epoch if per_epoch != float("inf") else 0
        self.bar = progress(total=total, desc=self.desc, unit=self.unit, initial=min(done, total or done))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.bar is None:
            return
        values = self.postfix(trainer, pl_module) if self.postfix else {
            _short(key): f"{float(value):.3g}" for key, value in trainer.progress_bar_metrics.items()}
        self.bar.set_postfix(refresh=False, **values)
        self.bar.update(1)

    def on_train_end(self, trainer, pl_module):
        self._close()

    def on_exception(self, trainer, pl_module, exception):
        self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    if os.environ.get("ZOO_LIGHTNING_TIPS") == "1":
        return
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(existing, _NoTips) for existing in logger.filters):
        logger.addFilter(_NoTips())


FROZEN_MODULES = r"Found \d+ module\(s\) in eval mode"  # frozen backbones and decoders stay in eval mode


@contextlib.contextmanager
def expected_warnings(*messages: str):
    with warnings.catch_warnings():
        for message in messages:
            warnings.filterwarnings("ignore", message=message)
        yield
