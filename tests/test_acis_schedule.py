"""ACIS schedules: the authors' piecewise-constant lr / lambda_KL (beta) / sequence-length steps by epoch, applied at
every epoch start, resumed exactly, and wired by the recipe into each stage (scaled with --epochs-scale)."""

from __future__ import annotations

import dataclasses

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from recipes import _acis_common, acis_cvppp, acis_kitti
from recipes._acis_common import paper_schedule
from test_acis import TINY, tiny_batch, tiny_module
from test_acis_resume import write_small
from zoo.acis.module import ActorCriticModule, CVAEModule, scheduled_settings

pytestmark = pytest.mark.usefixtures("torch_one_thread")

PAPER = paper_schedule()


def at(module, epoch):
    settings = module.settings(epoch)
    return settings.get("seq_len"), settings["lr"], settings["beta_kl"]


def authors(epoch: int) -> int:
    """The last stage's own epoch of the authors' epoch number (their AC run starts at 601)."""
    return epoch - 601


def test_the_ac_rows_follow_the_authors_schedule_from_their_epoch_601():
    module = tiny_module(epoch_schedule=PAPER.ac_epoch_schedule)
    assert PAPER.train_epochs == 9400  # their epochs 601 ... 10000
    expected = {
        601: (5, 5e-4, 1e-4), 4999: (5, 5e-4, 1e-4),
        5000: (5, 5e-5, 1e-4), 6999: (5, 5e-5, 1e-4),
        7000: (10, 5e-5, 1e-4), 7999: (10, 5e-5, 1e-4),
        8000: (10, 1e-5, 1e-5), 8999: (10, 1e-5, 1e-5),
        9000: (15, 1e-6, 1e-5), 10000: (15, 1e-6, 1e-5),
    }
    for epoch, (length, lr, beta) in expected.items():
        assert at(module, authors(epoch)) == pytest.approx((length, lr, beta)), epoch


def test_the_bl_rows_change_only_the_length_and_the_first_stages_follow_the_authors():
    module = tiny_module(mode="BL-Trunc", epoch_schedule=PAPER.bl_epoch_schedule)
    lengths = {601: 5, 4000: 5, 4001: 10, 8999: 10, 9000: 21, 10000: 21}
    for epoch, length in lengths.items():
        assert at(module, authors(epoch)) == pytest.approx((length, 5e-4, 1e-4)), epoch

    cvae = [scheduled_settings(PAPER.cvae_epoch_schedule, epoch, {"lr": PAPER.cvae_lr, "lambda_kl": 1.0})
            for epoch in (0, 399, 400, 599, 600, 799)]
    assert [s["lr"] for s in cvae] == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5, 2e-6, 2e-6])
    assert PAPER.cvae_epochs == 800 and PAPER.cvae_lambda_kl == 1.0 and all(s["lambda_kl"] == 1.0 for s in cvae)

    init = tiny_module(mode="BL-Trunc", sampled_states=True, epoch_schedule=PAPER.init_epoch_schedule)
    assert PAPER.init_epochs == 600 and PAPER.init_rollout == 1  # the authors' length 1: one step per update
    assert [init.settings(e)["beta_kl"] for e in (0, 399, 400, 599)] == [0.1, 0.1, 0.0, 0.0]
    assert all(init.settings(e)["lr"] == 5e-4 for e in (0, 599))


def test_kitti_trains_with_the_cvppp_schedule():
    assert acis_kitti.PAPER_SCHEDULE == acis_cvppp.PAPER_SCHEDULE == paper_schedule()


def test_an_epoch_schedule_refuses_names_it_does_not_know():
    with pytest.raises(ValueError, match="not \\['beta'\\]"):
        tiny_module(epoch_schedule=[[0, {"beta": 1e-3}]])
    with pytest.raises(ValueError, match="lambda_kl"):
        CVAEModule(TINY.to_dict(), epoch_schedule=[[0, {"seq_len": 3}]])


class Record(pl.Callback):
    """Per training batch: the epoch, the optimizers' lrs and what the module trains with (sequence length and beta,
    or the cVAE's lambda_KL)."""

    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lrs = tuple(optimizer.param_groups[0]["lr"] for optimizer in trainer.optimizers)
        if isinstance(pl_module, CVAEModule):
            self.seen.append((trainer.current_epoch, *lrs, pl_module.settings()["lambda_kl"]))
        else:
            self.seen.append((trainer.current_epoch, *lrs, pl_module.sequence_length(), pl_module.beta_kl))


def fit(module, max_epochs, ckpt_path=None):
    record = Record()
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=[record])
    trainer.fit(module, DataLoader([tiny_batch()], batch_size=None), ckpt_path=ckpt_path)
    return trainer, record.seen


def matches(seen, expected) -> bool:
    return len(seen) == len(expected) and all(got == pytest.approx(want) for got, want in zip(seen, expected))


STEPS = [[0, {"seq_len": 2, "lr": 1e-3, "beta_kl": 0.5}], [2, {"seq_len": 3, "lr": 1e-4, "beta_kl": 0.0}]]


def test_a_fit_applies_the_epoch_schedule_and_a_resumed_fit_restores_it(tmp_path):
    # the critic's lr is critic_lr_factor (2) times the actor's; the update-counted curriculum ([[0, 3]]) is overridden
    first_epochs = [(0, 1e-3, 2e-3, 2, 0.5), (1, 1e-3, 2e-3, 2, 0.5)]
    trainer, seen = fit(tiny_module(epoch_schedule=STEPS), max_epochs=2)
    assert matches(seen, first_epochs)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["epoch_schedule"] == STEPS

    # the checkpoint's optimizers still hold the lr of epoch 1: the resumed epoch 2 must set its own
    _, resumed = fit(tiny_module(epoch_schedule=STEPS), max_epochs=3, ckpt_path=path)
    _, uninterrupted = fit(tiny_module(epoch_schedule=STEPS), max_epochs=3)
    assert matches(resumed, [(2, 1e-4, 2e-4, 3, 0.0)])
    assert matches(uninterrupted, first_epochs + resumed)
    assert ActorCriticModule.load_from_checkpoint(path, weights_only=True).epoch_schedule == STEPS

    no_kl = [step[:4] + (0.0,) for step in first_epochs]
    assert matches(fit(tiny_module(mode="AC-NoKL", epoch_schedule=STEPS), max_epochs=2)[1], no_kl)


def test_the_cvae_fit_applies_its_lr_and_lambda_kl_steps():
    steps = [[0, {"lr": 1e-3}], [1, {"lr": 1e-5, "lambda_kl": 0.0}]]
    module = CVAEModule(TINY.to_dict(), lr=2e-4, epoch_schedule=steps)
    _, seen = fit(module, max_epochs=2)
    assert seen == [(0, 1e-3, 1.0), (1, 1e-5, 0.0)]


class StageBuilt(Exception):
    pass


def test_the_recipe_gives_every_stage_its_epoch_schedule_scaled_with_the_epochs(tmp_path, monkeypatch):
    """`--profile paper` without training: each stage's module is built, its identity and epochs recorded."""
    benchmark = dataclasses.replace(acis_cvppp.CVPPP, write_synthetic=write_small, paper_config=TINY,
                                    embedded_config=TINY)
    built = {}

    def record_and_stop(args, run, stage, max_epochs, identity, **options):
        built[stage] = (max_epochs, identity["hparams"])
        raise StageBuilt

    def fresh(module_class, path, mode=None):  # no earlier stage was trained: untrained modules stand in
        return module_class(TINY.to_dict(), **({"mode": mode} if mode else {}))

    monkeypatch.setattr(_acis_common, "stage_trainer", record_and_stop)
    monkeypatch.setattr(_acis_common, "load", fresh)

    def stage(name, *argv):
        with pytest.raises(StageBuilt):
            _acis_common.main(benchmark, ["--run-dir", str(tmp_path / "run"), "--stage", name, *argv])

    scale = ["--profile", "paper", "--epochs-scale", "0.1"]
    for name in ("cvae", "init"):
        stage(name, *scale)
    for ablation in ("AC-NoKL", "BL-Trunc"):
        stage("train", "--ablation", ablation, *scale)
    max_epochs, hparams = built["cvae"]
    assert max_epochs == 80 and (hparams["lr"], hparams["lambda_kl"]) == (2e-4, 1.0)
    assert hparams["epoch_schedule"] == [[0, {"lr": 2e-4}], [40, {"lr": 2e-5}], [60, {"lr": 2e-6}]]
    assert built["init"][0] == 60
    assert built["init"][1]["epoch_schedule"] == [[0, {"lr": 5e-4, "beta_kl": 0.1}], [40, {"beta_kl": 0.0}]]
    max_epochs, hparams = built["train-AC-NoKL"]
    assert max_epochs == 940 and hparams["mode"] == "AC-NoKL"
    assert [start for start, _ in hparams["epoch_schedule"]] == [0, 440, 640, 740, 840]
    assert hparams["epoch_schedule"][1][1] == {"lr": 5e-5}
    max_epochs, hparams = built["train-BL-Trunc"]
    assert hparams["epoch_schedule"] == [[0, {"seq_len": 5}], [340, {"seq_len": 10}], [840, {"seq_len": 21}]]

    # a profile without epoch schedules leaves them out of the identity: checkpoints from before they existed resume
    stage("cvae")
    assert "epoch_schedule" not in built["cvae"][1] and built["cvae"][1]["lr"] == benchmark.embedded_schedule.cvae_lr
