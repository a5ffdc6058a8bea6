"""ACIS defects, each pinned by a test that fails on the defect: one checkpoint per Table 1 row, the signs of the
actor and of BL-Trunc's truncation, the baselines' soft-Dice assignment, the bootstrap of episodes cut off at the
sequence length, and RNGs restored only when a Trainer resumes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import shutil

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal
from torch.utils.data import DataLoader

from test_acis import TINY, fit_one_batch, tiny_batch, tiny_module
from test_acis_resume import write_small
from zoo.acis.env import bce_assignment, hungarian_assignment, score_matrix
from zoo.acis.module import ActorCriticModule, prepare_batch
from zoo.acis.networks import state_pyramid
from zoo.rl.returns import discounted_returns

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def without_trainer(module: ActorCriticModule) -> ActorCriticModule:
    """Lets the update methods run outside `Trainer.fit`: plain optimizers (lr 0) and backward, no clipping."""
    optimizers = [torch.optim.SGD(module.actor.parameters(), lr=0.0)]
    if module.critic is not None:
        optimizers.append(torch.optim.SGD(module.critic.parameters(), lr=0.0))
    module.optimizers = lambda: optimizers if len(optimizers) > 1 else optimizers[0]
    module.manual_backward = lambda loss: loss.backward()
    module.clip_gradients = lambda *args, **kwargs: None
    module.toggled_optimizer = lambda optimizer: contextlib.nullcontext()
    return module


def inputs(module: ActorCriticModule, batch: dict):
    image, gts = prepare_batch(batch, module.config)
    with torch.no_grad():
        aux = module.preproc.channels(image)
    return image, aux, state_pyramid(image, aux, TINY.levels), gts


def painting(masks):
    """A decoder stand-in that paints the given (H, W) masks in turn, whatever the action."""
    queue = iter(masks)
    return lambda action, pyramid: ((2 * next(queue).float() - 1) * 20)[None, None]


# --- 2a. the actor ascends Q ------------------------------------------------------------------------------------
class LatentDecoder(torch.nn.Module):
    """A frozen decoder whose mask moves with the action (the randomly initialised one barely depends on it)."""

    def __init__(self, latent_size: int, size: int):
        super().__init__()
        self.register_buffer("basis", torch.randn(latent_size, size, size, generator=torch.Generator().manual_seed(0)))

    def forward(self, action, pyramid):
        return torch.einsum("bl,lhw->bhw", action, self.basis)[:, None]


class LeafCritic(torch.nn.Module):
    """A fixed critic that values a mask by how much of it lies on the leaves: mean(m * (+1 leaf, -1 background))."""

    def __init__(self, labels: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", 2 * (labels > 0).float()[:, None] - 1)
        self.scale = torch.nn.Parameter(torch.ones(()))  # the critic optimizer's only parameter; lr 0 keeps it

    def forward(self, image, accumulated, mask, aux):
        return self.scale * (mask * self.weight).flatten(1).mean(1)


def test_one_actor_step_raises_the_fixed_critics_q_of_the_mean_action(monkeypatch):
    """Algorithm 1: theta <- theta + alpha grad_a Q(s, a) grad_theta mu(s). With the critic fixed (lr 0), the
    actions at their mean, beta = 0 (AC-NoKL) and the termination term out of the way, one actor step of
    `actor_critic_update` must raise Q(s_1, D(mu(s_1)))."""
    monkeypatch.setattr(Normal, "rsample", lambda self, sample_shape=torch.Size(): self.mean)
    monkeypatch.setattr(ActorCriticModule, "termination_loss", staticmethod(lambda logit, step, counts: 0 * logit.sum()))
    module = tiny_module(mode="AC-NoKL", curriculum=[[0, 1]], critic_lr_factor=0.0, lr=1e-3, weight_decay=0.0)
    batch = tiny_batch(seed=0)  # the batch `fit_one_batch` trains on
    module.decoder = LatentDecoder(TINY.latent_size, TINY.height)
    module.critic = LeafCritic(batch["labels"])

    def q_of_the_mean():
        image, aux, pyramid, _ = inputs(module, batch)
        empty = torch.zeros_like(image[:, :1])
        with torch.no_grad():
            policy, _, _ = module.actor(image, empty, aux)
            return module.critic(image, empty, torch.sigmoid(module.decoder(policy.mean, pyramid)), aux)

    before = q_of_the_mean()
    fit_one_batch(module)
    assert module.critic.scale.item() == 1.0
    gain = q_of_the_mean() - before
    assert (gain > 1e-6).all(), gain  # |Q| is about 0.2 here: a gain of 1e-6 is far above float32 rounding


# --- 2b. BL-Trunc truncates, BL does not ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["BL", "BL-Trunc"])
def test_baseline_gradient_reaches_the_previous_step_only_without_truncation(mode):
    module = without_trainer(tiny_module(mode=mode))
    image, aux, pyramid, gts = inputs(module, tiny_batch())
    seen, forward = [], module.actor.forward

    def recording(image, accumulated, aux, hidden=None):
        if accumulated.requires_grad:
            accumulated.retain_grad()
        seen.append((accumulated, hidden))
        return forward(image, accumulated, aux, hidden)

    module.actor.forward = recording
    counts = torch.tensor([len(gt) for gt in gts])
    module.baseline_update(image, aux, pyramid, gts, counts, 3)
    assert len(seen) == 3
    for accumulated, hidden in seen[1:]:  # step t's inputs are step t-1's outputs
        carried = [accumulated, *hidden]
        if mode == "BL":
            assert all(x.requires_grad for x in carried)
            assert accumulated.grad is not None and accumulated.grad.abs().sum() > 0
        else:
            assert not any(x.requires_grad for x in carried)


# --- 3. the baselines' assignment: soft Dice, fixed tie-break ---------------------------------------------------
def leaves_of_three_sizes():
    gt = torch.zeros(3, 32, 32, dtype=torch.bool)
    gt[0, :4, :4] = True  # 16 px
    gt[1, 8:16, 8:16] = True  # 64 px
    gt[2, 20:32, 20:32] = True  # 144 px
    return gt


def test_assignment_of_masks_below_one_half_follows_soft_dice_and_prefers_larger_leaves():
    gt = leaves_of_three_sizes()
    uniform = torch.full((2, 32, 32), 0.3)
    # binarised at 0.5 every score is 0: the matching is just the label order
    assert hungarian_assignment(score_matrix(uniform, gt)) == {0: 0, 1: 1}
    # equally bad predictions: the larger leaves, the earlier step the larger one
    assert bce_assignment(uniform, gt) == {0: 2, 1: 1}
    for order in ([2, 0, 1], [1, 2, 0]):  # the same leaves in another label order get the same targets
        assert {t: order[k] for t, k in bce_assignment(uniform, gt[order]).items()} == {0: 2, 1: 1}
    leaning = uniform.clone()
    leaning[0] = 0.02
    leaning[0][gt[1]] = 0.45  # below 0.5 everywhere, but its soft Dice with the middle leaf is about 0.5
    assert bce_assignment(leaning, gt) == {0: 1, 1: 2}
    assert bce_assignment(leaning, gt) == bce_assignment(leaning.clone(), gt.clone())


def test_baseline_update_trains_each_step_towards_its_soft_dice_leaf():
    module = without_trainer(tiny_module(mode="BL", beta_kl=0.0))
    image, aux, pyramid, gts = inputs(module, tiny_batch(batch_size=1))
    gt = gts[0]
    assert [int(m.sum()) for m in gt] == [100, 140, 60]
    first = torch.full(gt.shape[1:], 0.02)
    first[gt[2]] = 0.45  # leans to the smallest leaf
    second = torch.full(gt.shape[1:], 0.3)  # no leaf clears the floor: the largest
    probabilities = [first, second, second]
    queue = iter(probabilities)
    module.decoder.forward = lambda action, pyramid: torch.logit(next(queue))[None, None]
    logs = module.baseline_update(image, aux, pyramid, gts, torch.tensor([3]), 2)

    def bce(step, leaf):
        return float(F.binary_cross_entropy_with_logits(torch.logit(probabilities[step]), gt[leaf].float()))

    mask_loss = float(logs["train/loss_actor"] - logs["train/termination"])  # beta = 0: no KL term
    assert mask_loss == pytest.approx((bce(0, 2) + bce(1, 1)) / 2, rel=1e-5)
    assert mask_loss != pytest.approx((bce(0, 0) + bce(1, 1)) / 2, rel=1e-3)  # the binarised, label-order matching


# --- 4. episodes cut off at the sequence length bootstrap -------------------------------------------------------
def test_discounted_returns_bootstrap_from_the_value_after_the_last_step():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 9.0]])
    in_episode = torch.tensor([[True, True, True], [True, True, False]])
    returns = discounted_returns(rewards, 0.9, in_episode, bootstrap=torch.tensor([10.0, 10.0]))
    # the second episode ended inside the window: its bootstrap does not count
    expected = torch.tensor([[1 + 0.81 * 2 + 0.729 * 10, 0.9 * 2 + 0.81 * 10, 2 + 0.9 * 10], [0.5 + 0.45, 0.5, 0.0]])
    torch.testing.assert_close(returns, expected)
    torch.testing.assert_close(discounted_returns(rewards, 0.9, bootstrap=torch.zeros(2)), discounted_returns(rewards, 0.9))
    with pytest.raises(ValueError, match="bootstrap shape"):
        discounted_returns(rewards, 0.9, bootstrap=torch.zeros(3))


def critic_targets(batch, steps, bootstrap_value=5.0):
    """The critic's regression targets of one `actor_critic_update` on a one-image batch whose decoder paints the
    leaves in turn (rewards 1, 1, ...), with a critic that says 0 while it learns and `bootstrap_value` when asked
    without gradient (only the bootstrap asks so); also the states it was asked about."""
    module = without_trainer(tiny_module(critic_warmup=10_000))
    image, aux, pyramid, gts = inputs(module, batch)
    module.decoder.forward = painting(list(gts[0]) * 2)
    asked, losses = [], []

    def critic(image, accumulated, mask, aux):
        if torch.is_grad_enabled():
            return torch.zeros(len(image), requires_grad=True)
        asked.append(accumulated.clone())
        return torch.full((len(image),), bootstrap_value)

    module.critic.forward = critic
    module.manual_backward = lambda loss: losses.append(float(loss))
    module.actor_critic_update(image, aux, pyramid, gts, torch.tensor([len(gts[0])]), steps)
    # loss_t = (0 - G_t)^2 / (steps in the episode), and every G_t here is positive
    return [math.sqrt(loss * steps) for loss in losses], asked, gts[0]


def test_a_truncated_episodes_critic_target_bootstraps_and_a_finished_ones_does_not():
    gamma, value = 0.9, 5.0
    targets, asked, leaves = critic_targets(tiny_batch(batch_size=1), steps=2, bootstrap_value=value)  # 3 leaves
    assert targets == pytest.approx([1 + gamma * (1 + gamma * value), 1 + gamma * value], rel=1e-5)
    assert len(asked) == 1  # Q(s_T, .) at the state after the last step: the first two leaves painted
    torch.testing.assert_close(asked[0][0, 0], (leaves[0] | leaves[1]).float(), atol=1e-6, rtol=0)

    two_leaves = {key: value[:1] for key, value in tiny_batch(batch_size=2).items()}
    targets, asked, leaves = critic_targets(two_leaves, steps=2, bootstrap_value=value)
    assert len(leaves) == 2 and asked == []
    assert targets == pytest.approx([1 + gamma, 1.0], rel=1e-5)


# --- 5. RNGs come back only when a Trainer resumes --------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_fit(tmp_path_factory):
    module = tiny_module()
    trainer = fit_one_batch(module)
    path = tmp_path_factory.mktemp("rng") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_load_from_checkpoint_leaves_the_global_rngs_alone(saved_fit):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = torch.get_rng_state(), np.random.get_state(), random.getstate()
    ActorCriticModule.load_from_checkpoint(saved_fit, weights_only=True)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), before[1]))
    assert random.getstate() == before[2]


def test_a_resumed_fit_restores_the_rngs_saved_with_the_checkpoint(saved_fit):
    saved = torch.load(saved_fit, weights_only=True)["acis_rng"]

    def resumed_from_another_state(seed):
        """The RNGs when the resumed epoch starts (the DataLoader has drawn its base seed from torch's by then)."""
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        at_start = []

        class Record(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                at_start.append((torch.get_rng_state(), np.random.get_state()[1:3], random.getstate()))

        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, callbacks=[Record()])
        trainer.fit(tiny_module(), DataLoader([tiny_batch()], batch_size=None), ckpt_path=saved_fit)
        assert len(at_start) == 1  # resumed in the second epoch
        return at_start[0]

    first, second = resumed_from_another_state(1), resumed_from_another_state(2)
    assert torch.equal(first[0], second[0])
    numpy_keys, numpy_position = first[1]
    assert np.array_equal(numpy_keys, saved["numpy_keys"].numpy()) and numpy_position == saved["numpy_position"]
    assert first[2][1] == tuple(saved["python_state"].tolist())


def test_a_trainer_refuses_to_resume_another_modes_checkpoint(saved_fit):
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match="trained as 'AC', not 'AC-NoKL'"):  # the same shapes: only the mode differs
        trainer.fit(tiny_module(mode="AC-NoKL"), DataLoader([tiny_batch()], batch_size=None), ckpt_path=saved_fit)


# --- 1. one checkpoint per Table 1 row --------------------------------------------------------------------------
def tiny_benchmark():
    from recipes import acis_cvppp
    from recipes._acis_common import Schedule

    # critic_warmup 0: the actor moves in the one epoch, so the rows' weights differ
    schedule = Schedule(preproc_epochs=1, cvae_epochs=1, init_epochs=1, train_epochs=1, batch_size=4,
                        critic_warmup=0, critic_iter=1, curriculum=[[0, 2]], bl_curriculum=[[0, 2]])
    return dataclasses.replace(acis_cvppp.CVPPP, write_synthetic=write_small, embedded_config=TINY,
                               embedded_schedule=schedule)


def test_each_table1_row_trains_evaluates_and_reports_its_own_checkpoint(tmp_path, capsys):
    from recipes._acis_common import main

    benchmark, run_dir = tiny_benchmark(), tmp_path / "run"
    checkpoints = run_dir / "checkpoints"

    def recipe(*argv):
        return main(benchmark, ["--run-dir", str(run_dir), "--checkpoint-every", "0", *argv])

    def mode_of(folder):
        return torch.load(checkpoints / folder / "last.ckpt", weights_only=True)["hyper_parameters"]["mode"]

    def reported():
        return (json.loads((run_dir / "metrics.json").read_text())["ablation"],
                json.loads((run_dir / "results.json").read_text())["ablation"])

    def critic_repeats_of(folder):
        return torch.load(checkpoints / folder / "last.ckpt", weights_only=True)["hyper_parameters"].get("critic_repeats")

    for ablation in ("AC", "AC-NoKL"):
        results = recipe("--ablation", ablation, *(["--critic-repeats"] if ablation == "AC-NoKL" else []))
        assert results["ablation"] == ablation and reported() == (ablation, ablation)
    assert (mode_of("train-AC"), mode_of("train-AC-NoKL")) == ("AC", "AC-NoKL")
    # the recipe hands --critic-repeats to the critic's rows, and the embedded profile leaves it off
    assert (critic_repeats_of("train-AC"), critic_repeats_of("train-AC-NoKL")) == (None, True)
    assert not (checkpoints / "train").exists()
    recipe("--stage", "eval", "--ablation", "AC")  # AC again, from its own checkpoint
    assert reported() == ("AC", "AC")

    with pytest.raises(SystemExit, match=r"train-BL/last.ckpt is missing: no 'BL' model was trained .*"
                                         r"trained there: AC, AC-NoKL.*--stage train --ablation BL"):
        recipe("--stage", "eval", "--ablation", "BL")

    recipe("--stage", "train", "--ablation", "BL", "--critic-repeats")
    assert critic_repeats_of("train-BL") is None  # no critic, nothing to hand over
    # a BL file where BL-Trunc's belongs (same shapes): refused by name, never reported as BL-Trunc
    shutil.copytree(checkpoints / "train-BL", checkpoints / "train-BL-Trunc")
    with pytest.raises(SystemExit, match=r"train-BL-Trunc/last.ckpt holds a model trained as 'BL', not 'BL-Trunc'.*"
                                         r"--ablation BL to use it"):
        recipe("--stage", "eval", "--ablation", "BL-Trunc")
    with pytest.raises(SystemExit, match=r"train-BL-Trunc/last.ckpt .*'BL'.*'BL-Trunc'"):
        recipe("--stage", "train", "--ablation", "BL-Trunc")  # nor resumed as BL-Trunc
    shutil.rmtree(checkpoints / "train-BL-Trunc")
    recipe("--ablation", "BL-Trunc")
    assert reported() == ("BL-Trunc", "BL-Trunc")
    recipe("--stage", "eval", "--ablation", "BL")
    assert reported() == ("BL", "BL")
    assert (mode_of("train-BL"), mode_of("train-BL-Trunc")) == ("BL", "BL-Trunc")
    bl, bl_trunc = (torch.load(checkpoints / f / "last.ckpt", weights_only=True)["state_dict"]
                    for f in ("train-BL", "train-BL-Trunc"))
    assert any(not torch.equal(bl[k], bl_trunc[k]) for k in bl if k.startswith("actor."))

    # a run dir from before the per-row folders: its `train` checkpoint moves to the row it was trained as
    (checkpoints / "train-AC").rename(checkpoints / "train")
    capsys.readouterr()
    recipe("--stage", "eval", "--ablation", "AC")
    assert reported() == ("AC", "AC") and mode_of("train-AC") == "AC" and not (checkpoints / "train").exists()
    assert "holds a 'AC' model: moved it to" in capsys.readouterr().err
