"""A clean terminal: progress on stderr as plain lines when it is not a terminal, no Lightning tips, and the
benchmarks' stdout one JSON line whatever the benchmark prints."""

from __future__ import annotations

import json
import logging
import os
import sys
import types

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from recipes import _progress, benchmark
from recipes._progress import TrainingProgress, progress, quiet_lightning


def test_without_a_terminal_progress_is_a_few_plain_lines_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("ZOO_PROGRESS_SECONDS", "3600")
    assert not sys.stderr.isatty()
    total = sum(progress(range(500), desc="updates", unit="upd"))
    assert total == sum(range(500))
    out, err = capsys.readouterr()
    assert out == "" and "\r" not in err
    assert err.splitlines()[0].startswith("updates: 500/500 (100%) upd, ")
    assert len(err.splitlines()) == 1  # only the closing line within the hour


def test_plain_lines_come_at_most_once_per_interval(capsys, monkeypatch):
    clock = iter(range(0, 10_000, 10))  # each reading of the clock is 10 s later
    monkeypatch.setattr(_progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("ZOO_PROGRESS_SECONDS", "30")
    with progress(total=6, desc="epochs") as bar:
        for _ in range(6):
            bar.set_postfix(loss="0.5")
            bar.update()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("epochs: 6/6 (100%)") and lines[-1].endswith("; loss=0.5")


def test_a_fit_reports_one_progress_over_all_epochs_and_no_tips(capfd, monkeypatch):
    monkeypatch.setenv("ZOO_PROGRESS_SECONDS", "3600")
    quiet_lightning()

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch).pow(2).mean()
            self.log("train/loss", loss, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[TrainingProgress("fit")])
    trainer.fit(Tiny(), DataLoader(torch.ones(4, 1), batch_size=2))
    out, err = capfd.readouterr()
    assert out == ""
    assert "Tip" not in err
    reports = [line for line in err.splitlines() if line.startswith("fit:")]
    assert len(reports) == 1 and reports[0].startswith("fit: 6/6 (100%) batch") and "loss=" in reports[0]


def test_tips_are_dropped_and_other_lightning_lines_kept(monkeypatch):
    monkeypatch.delenv("ZOO_LIGHTNING_TIPS", raising=False)
    quiet_lightning()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    target = logging.getLogger("lightning.pytorch")
    target.addHandler(handler)
    try:
        from lightning.pytorch.utilities.rank_zero import rank_zero_info

        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        rank_zero_info("GPU available: False, used: False")
    finally:
        target.removeHandler(handler)
    assert seen == ["GPU available: False, used: False"]


def test_benchmark_stdout_is_one_json_line_whatever_the_benchmark_prints(capfd, monkeypatch):
    fake = types.ModuleType("recipes.benchmarks.noisy")
    fake.add_arguments = lambda parser: None

    def run(args):
        print("Downloading: https://example.org/weights.pth")
        os.write(1, b"a native library's line\n")
        return {"fps": 1.5}

    fake.run = run
    monkeypatch.setitem(sys.modules, "recipes.benchmarks.noisy", fake)
    monkeypatch.setattr(benchmark, "BENCHMARKS", ["noisy"])
    benchmark.main(["noisy"])
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1 and json.loads(out)["fps"] == 1.5
    assert "Downloading:" in err and "a native library's line" in err
