"""ACIS training stages as LightningModules.

1. `PreprocessingModule`: the FCN for foreground and 8-bin angles, trained standalone (Sec. 5.2).
2. `CVAEModule`: cVAE pre-training of mask encoder + decoder, BCE reconstruction + KL to N(0, I) (Sec. 5.2).
3. `ActorCriticModule`: a new recurrent actor encoder over the frozen decoder, trained as
   - `AC` (Algorithm 1): the critic regresses discounted returns of the potential-difference reward; the
     actor ascends grad_a Q * grad_theta mu - beta grad_theta KL; with `AC-NoKL` (beta = 0) and `AC-NoSP`
     (no State Pyramid; its cVAE is pre-trained without it too); `critic_repeats` (a deviation) adds re-taken
     earlier masks, whose outcome Eq. 3 makes exact, to the critic's regression (`repeat_pairs`);
   - `BL` (full BPTT) and `BL-Trunc` (one-step truncation): Hungarian-assigned BCE (Sec. 6.1).
   The authors' "init" stage (the actor at sequence length 1 with BCE) is here `sampled_states=True`:
   `rollout` BCE-trained steps of the actor's own rollout from a state sampled from the ground truth
   (`sampled_state_update`; a deviation).

Manual optimisation everywhere in stage 3 (two optimizers for AC). Two kinds of schedule: `curriculum`
counts updates (the `updates` buffer, so it lives in the state dict), `epoch_schedule` (cVAE and stage 3)
counts the stage's own epochs (the Trainer's epoch, restored when it resumes); see `scheduled_settings`.
RNG states go into the checkpoint as tensors and ints, so `.ckpt` files load with
`torch.load(weights_only=True)`, and come back only when a Trainer resumes a fit from it
(`load_from_checkpoint` leaves the caller's RNGs alone).

DDP: every process runs the same number of backward passes per update (each one all-reduces the gradients):
step counts that depend on the batch are maximised over the processes (`max_over_processes`).
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributions import Normal, kl_divergence

from zoo.acis.env import angle_targets, bce_assignment, episode_rewards, matched_potential, score_matrix, transition
from zoo.acis.model import ACISSegmenter
from zoo.acis.networks import ACISConfig, ActorEncoder, Critic, Decoder, MaskEncoder, PreprocessingNet, state_pyramid
from zoo.metrics.instances import instance_masks
from zoo.rl.returns import discounted_returns

MODES = ("AC", "AC-NoKL", "AC-NoSP", "BL", "BL-Trunc")


def prepare_batch(batch: dict, config: ACISConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Resize a datamodule batch to the network size; split the label maps into per-image instance masks."""
    image, labels = batch["image"].float(), batch["labels"]
    size = (config.height, config.width)
    if tuple(image.shape[-2:]) != size:
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return image, [instance_masks(label_map)[1] for label_map in labels]


def next_leaf_target(gt: torch.Tensor, covered: torch.Tensor, probability: torch.Tensor, order: str = "dice",
                     assigned: torch.Tensor | None = None) -> int | None:
    """The ground-truth leaf (index into gt (N,H,W)) the next prediction should learn, or None (stop).

    Leaves with more than half of their pixels in `covered` (H,W bool) are done, and so are the leaves `assigned`
    (N,) bool marks: those an earlier step of the episode was already trained towards. Without the second rule a
    leaf the actor had predicted faintly (under half of it above 0.5 in M_t) stayed a candidate, and since the next
    prediction still overlapped it best, the target was the same leaf again: the init stage taught the actor to
    repeat leaves (real plants: from the 7th step on most masks repeated an earlier one). Among the others:
    `order="dice"` takes the best soft Dice against `probability` (H,W), the one-prediction case of the
    baselines' Hungarian assignment, falling back to the largest leaf while no Dice reaches 0.2 (a fixed
    tie-break: averaging over equally bad leaves drove the baselines to empty masks); `order="size"`
    always takes the largest.
    """
    gt = gt.float()
    area = gt.flatten(1).sum(1)
    candidates = (gt * covered.float()).flatten(1).sum(1) <= 0.5 * area
    candidates &= area > 0
    if assigned is not None:
        candidates &= ~assigned
    if not candidates.any():
        return None
    dice = 2 * (gt * probability).flatten(1).sum(1) / (area + probability.sum()).clamp(min=1e-6)
    choice = torch.where(candidates, dice, torch.full_like(dice, -1.0))
    if order == "size" or choice.max() < 0.2:
        choice = torch.where(candidates, area, torch.full_like(area, -1.0))
    return int(choice.argmax())


def repeat_action_targets(binary: torch.Tensor, gt: torch.Tensor, returns: torch.Tensor, earlier: list[int],
                          gamma: float, score: str = "dice") -> torch.Tensor:
    """The critic's targets for re-taking an earlier action of one episode: at step t, the mask of step earlier[t] < t.

    That mask lies inside M_t, so Eq. 3 leaves the state as it is, s_{t+1} = s_t, and the one-step target is exact but
    for the value of s_t after it: r' + gamma * G_t, with r' the change of the Eq. 4 potential when the repeated mask
    joins the t predictions so far (0 for a true duplicate) and G_t the return the episode went on to collect from
    s_t. `binary` (T,H,W) holds the episode's binarised masks, `returns` (T,) its G_t; step 0 has nothing to repeat
    (its entry is nan)."""
    targets = torch.full((len(earlier),), float("nan"))
    scores = score_matrix(binary, gt, score)  # (T, N) once: phi of any subset of the steps is a matching on its rows
    for t in range(1, len(earlier)):
        before = matched_potential(scores[:t])
        after = matched_potential(np.concatenate([scores[:t], scores[earlier[t]][None]]))
        targets[t] = after - before + gamma * float(returns[t])
    return targets


def scheduled_settings(schedule: list | None, epoch: int, defaults: dict) -> dict:
    """The settings in force at `epoch` (0-based, counted in the stage's own epochs) under a piecewise-constant
    `schedule` [[from_epoch, {name: value, ...}], ...]: `defaults` updated by every entry that has started, in the
    order of their epochs, so a value holds until a later entry changes it."""
    settings = dict(defaults)
    for start, values in sorted(schedule or [], key=lambda entry: entry[0]):
        if epoch >= start:
            settings.update(values)
    return settings


def check_schedule(schedule: list | None, names: tuple[str, ...]) -> list | None:
    """`schedule` as [[int, dict], ...], refusing names the stage does not schedule (a typo would be ignored)."""
    if schedule is None:
        return None
    checked = []
    for entry in schedule:
        start, values = entry
        unknown = sorted(set(values) - set(names))
        if unknown or int(start) != start or start < 0:
            raise ValueError(f"epoch schedule entry {entry!r}: want [from_epoch >= 0, {{name: value}}] with names "
                             f"among {names}" + (f", not {unknown}" if unknown else ""))
        checked.append([int(start), dict(values)])
    return checked


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def max_over_processes(module: pl.LightningModule, value: int) -> int:
    """`value` maximised over the training processes (itself without a Trainer or with one process).

    A loop whose length depends on the batch must run this many times in every process: each backward pass under
    DDP all-reduces the gradients, and a process that stopped early would leave the others waiting forever."""
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return value
    return int(trainer.strategy.reduce(torch.tensor(value, device=module.device), reduce_op="max"))


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class _RNGCheckpointMixin:
    """Saves and restores the torch / numpy / python RNGs as weights_only-safe tensors and ints."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        _, keys, position, has_gauss, gauss = np.random.get_state()
        version, state, gauss_next = random.getstate()
        checkpoint["acis_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_position": int(position),
            "numpy_gauss": [int(has_gauss), float(gauss)],
            "python_version": int(version),
            "python_state": torch.tensor(state, dtype=torch.int64),
            "python_gauss": gauss_next,
        }

    @classmethod
    def load_from_checkpoint(cls, *args, **kwargs):
        # building the module draws the random initialisation that the checkpoint's weights then replace: loading
        # for inference or as a later stage's start must not move the caller's RNG for it
        with torch.random.fork_rng(devices=[]):
            return super().load_from_checkpoint(*args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("acis_rng")
        # the saved RNGs continue the fit they were saved in; `load_from_checkpoint` (inference, a later stage's
        # start) must not rewind the caller's
        trainer = self._trainer
        if rng is None or trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return
        torch.set_rng_state(rng["torch"])
        has_gauss, gauss = rng["numpy_gauss"]
        np.random.set_state(("MT19937", rng["numpy_keys"].numpy().astype(np.uint32), rng["numpy_position"], int(has_gauss), gauss))
        random.setstate((rng["python_version"], tuple(rng["python_state"].tolist()), rng["python_gauss"]))


class PreprocessingModule(_RNGCheckpointMixin, pl.LightningModule):
    """Cross-entropy on the angle bins (foreground pixels) + BCE on the foreground, Adam (authors' lr 1e-3)."""

    def __init__(self, config: dict, lr: float = 1e-3, weight_decay: float = 1e-4, pretrained_backbone: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.config = ACISConfig.from_dict(config)
        self.net = PreprocessingNet(self.config, pretrained=pretrained_backbone)
        if pretrained_backbone:
            # the checkpoint says where the body's weights came from; loading it later needs no ImageNet weights
            self.config.backbone_weights = self.net.weights_source
            self.hparams.config = self.config.to_dict()
            self.hparams.pretrained_backbone = False

    def training_step(self, batch, batch_idx):
        image, gts = prepare_batch(batch, self.config)
        angle_logits, fg_logit = self.net(image)
        angles = torch.stack([angle_targets(masks) for masks in gts])
        foreground = (angles >= 0).float()[:, None]
        loss = F.binary_cross_entropy_with_logits(fg_logit, foreground)
        if (angles >= 0).any():
            loss = loss + F.cross_entropy(angle_logits, angles, ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(image))
        return loss

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


class CVAEModule(_RNGCheckpointMixin, pl.LightningModule):
    """Reconstruct one randomly chosen ground-truth instance per image through the latent bottleneck.

    Loss per image: the BCE summed over pixels plus lambda_kl * KL(q(a | mask) || N(0, I)), i.e. the
    negative ELBO for lambda_kl = 1 (the authors' pre-training value). `epoch_schedule`
    [[from_epoch, {"lr": .., "lambda_kl": ..}], ...] changes them at the starts of epochs (`scheduled_settings`;
    the authors: lr 2e-4, 2e-5 from epoch 400, 2e-6 from 600).
    """

    SCHEDULED = ("lr", "lambda_kl")

    def __init__(self, config: dict, lr: float = 2e-4, lambda_kl: float = 1.0, weight_decay: float = 1e-4,
                 epoch_schedule: list | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.config = ACISConfig.from_dict(config)
        self.epoch_schedule = check_schedule(epoch_schedule, self.SCHEDULED)
        self.preproc = _freeze(PreprocessingNet(self.config))
        self.encoder = MaskEncoder(self.config)
        self.decoder = Decoder(self.config)

    def training_step(self, batch, batch_idx):
        image, gts = prepare_batch(batch, self.config)
        aux = self.preproc.channels(image)
        targets = torch.stack([
            masks[torch.randint(len(masks), ()).item()] if len(masks) else torch.zeros_like(image[0, 0], dtype=torch.bool)
            for masks in gts
        ]).float()[:, None]
        posterior = self.encoder(image, targets, aux)
        logits = self.decoder(posterior.rsample(), state_pyramid(image, aux, self.config.levels))
        reconstruction = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).sum(1).mean()
        kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(-1).mean()
        loss = reconstruction + self.settings()["lambda_kl"] * kl
        self.log_dict({"train/bce": reconstruction, "train/kl": kl}, prog_bar=True, batch_size=len(image))
        return loss

    def settings(self, epoch: int | None = None) -> dict:
        """lr and lambda_kl at `epoch` (default: the current one)."""
        epoch = self.current_epoch if epoch is None else epoch
        defaults = {"lr": self.hparams.lr, "lambda_kl": self.hparams.lambda_kl}
        return scheduled_settings(self.epoch_schedule, epoch, defaults)

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def on_train_epoch_start(self):
        self.preproc.eval()
        if self.epoch_schedule is not None:
            set_learning_rate(self.trainer.optimizers[0], self.settings()["lr"])


class ActorCriticModule(_RNGCheckpointMixin, pl.LightningModule):
    """Stage 2: the recurrent actor over the frozen decoder (see the module docstring for the modes).

    Schedules: `curriculum` is [[from_update, sequence_length], ...], counted in updates (the CPU-sized
    profiles). `epoch_schedule` is [[from_epoch, {"seq_len": .., "lr": .., "beta_kl": ..}], ...], counted
    in this stage's own epochs (0-based) and applied at every epoch start (`scheduled_settings`): "lr" is the
    actor's (the critic's is `critic_lr_factor` times it), a name it never sets keeps the hparam's value and
    "seq_len" overrides `curriculum`. The authors' schedules are `recipes._acis_common.paper_schedule`.
    `critic_warmup` counts updates without actor steps (authors: 1024); afterwards the actor moves on every
    `critic_iter`-th update and the critic on every update (the authors skip the critic on actor updates;
    here both move).

    Discount: the critic regresses sum_{i>=t} gamma^(i-t) r_i (Eq. 6-7, gamma = 0.9 as the paper). The
    authors' `train.lua` instead squares gamma at every step (weights 1, gamma, gamma^2, gamma^4, ...);
    we follow the paper. An image with more instances than the steps rolled out is cut off, not finished
    (Eq. 6 sums to N): its targets add gamma^(T-t) Q(s_T, D(a_T)), the critic's own estimate after the last step.

    Truncation: AC back-propagates one step (state and LSTM state detached between steps; the authors'
    `-markov` keeps two) and calls backward after every step, so its memory does not grow with the
    sequence length, which is the point of Sec. 5.4. BL back-propagates through the whole sequence.
    """

    SCHEDULED = ("seq_len", "lr", "beta_kl")

    def __init__(
        self,
        config: dict,
        mode: str = "AC",
        score: str = "dice",
        lr: float = 5e-4,
        critic_lr_factor: float = 2.0,
        beta_kl: float = 1e-4,
        gamma: float = 0.9,
        critic_warmup: int = 1024,
        critic_iter: int = 4,
        curriculum: list | None = None,
        grad_clip: float = 1.0,
        weight_decay: float = 1e-5,
        reward_threshold: float = 0.5,
        sampled_states: bool = False,
        rollout: int = 1,
        rollout_fraction: float = 0.0,
        target_order: str = "size",
        epoch_schedule: list | None = None,
        init_dice_weight: float = 0.0,
        init_train_decoder: bool = False,
        init_sample_actions: bool | None = None,
        critic_repeats: bool | None = None,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.config = ACISConfig.from_dict(config)
        self.curriculum = sorted([tuple(step) for step in (curriculum or [[0, 5]])])
        self.epoch_schedule = check_schedule(epoch_schedule, self.SCHEDULED)
        self.preproc = _freeze(PreprocessingNet(self.config))
        self.decoder = _freeze(Decoder(self.config))
        if init_train_decoder:
            if not sampled_states:
                raise ValueError("init_train_decoder fine-tunes the decoder in the init stage (sampled_states=True) only; "
                                 "the AC and BL rows keep the decoder frozen")
            self.decoder.requires_grad_(True)
        self.actor = ActorEncoder(self.config)
        self.critic = Critic(self.config) if self.is_actor_critic else None
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @property
    def is_actor_critic(self) -> bool:
        return self.hparams.mode.startswith("AC")

    @property
    def beta_kl(self) -> float:
        return 0.0 if self.hparams.mode == "AC-NoKL" else self.settings()["beta_kl"]

    def settings(self, epoch: int | None = None) -> dict:
        """The actor's lr, beta_kl and (where the epoch schedule sets it) seq_len at `epoch` (default: the current)."""
        epoch = self.current_epoch if epoch is None else epoch
        return scheduled_settings(self.epoch_schedule, epoch, {"lr": self.hparams.lr, "beta_kl": self.hparams.beta_kl})

    def sequence_length(self) -> int:
        settings = self.settings()
        if "seq_len" in settings:
            return int(settings["seq_len"])
        length = self.curriculum[0][1]
        for start, value in self.curriculum:
            if int(self.updates) >= start:
                length = value
        return length

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # BL and BL-Trunc (or AC and AC-NoKL) share every tensor shape: only the mode tells their weights apart
        saved = checkpoint.get("hyper_parameters", {}).get("mode", self.hparams.mode)
        if saved != self.hparams.mode:
            raise ValueError(f"the checkpoint was trained as '{saved}', not '{self.hparams.mode}': load it as "
                             f"'{saved}', or load the checkpoint of a '{self.hparams.mode}' run")
        super().on_load_checkpoint(checkpoint)

    def load_pretrained(self, preproc: PreprocessingNet, decoder: Decoder, actor: ActorEncoder | None = None) -> None:
        self.preproc.load_state_dict(preproc.state_dict())
        self.decoder.load_state_dict(decoder.state_dict())
        if actor is not None:
            self.actor.load_state_dict(actor.state_dict())

    def to_segmenter(self, **thresholds) -> ACISSegmenter:
        segmenter = ACISSegmenter.from_config(self.config, **thresholds)
        segmenter.preproc.load_state_dict(self.preproc.state_dict())
        segmenter.actor.load_state_dict(self.actor.state_dict())
        segmenter.decoder.load_state_dict(self.decoder.state_dict())
        return segmenter.eval()

    def configure_optimizers(self):
        # `init_train_decoder`: the decoder joins the actor's optimizer (one lr, so the epoch schedule moves both)
        trained = list(self.actor.parameters()) + (
            list(self.decoder.parameters()) if self.hparams.get("init_train_decoder", False) else [])
        actor = torch.optim.Adam(trained, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if self.critic is None:
            return actor
        critic_lr = self.hparams.lr * self.hparams.critic_lr_factor
        critic = torch.optim.Adam(self.critic.parameters(), lr=critic_lr, weight_decay=self.hparams.weight_decay)
        return [actor, critic]

    def on_train_epoch_start(self):
        self.preproc.eval()
        self.decoder.eval()
        if self.epoch_schedule is not None:
            lr = self.settings()["lr"]
            optimizers = self.trainer.optimizers
            set_learning_rate(optimizers[0], lr)
            if len(optimizers) > 1:
                set_learning_rate(optimizers[1], lr * self.hparams.critic_lr_factor)

    def training_step(self, batch, batch_idx):
        image, gts = prepare_batch(batch, self.config)
        counts = torch.tensor([len(masks) for masks in gts], device=image.device)
        with torch.no_grad():
            aux = self.preproc.channels(image)
            pyramid = state_pyramid(image, aux, self.config.levels)
        # + 1: the stop decision is trained too; the most instances of any process's batch, since each AC step is a
        # backward pass (images past their episode weigh nothing in it)
        steps = min(self.sequence_length(), max_over_processes(self, int(counts.max()) + 1))
        if self.hparams.sampled_states and not self.is_actor_critic:
            steps = 1
            logs = self.sampled_state_update(image, aux, pyramid, gts)
        elif self.is_actor_critic:
            logs = self.actor_critic_update(image, aux, pyramid, gts, counts, steps)
        else:
            logs = self.baseline_update(image, aux, pyramid, gts, counts, steps)
        self.updates += 1
        logs["train/seq_len"] = float(steps)
        self.log_dict(logs, prog_bar=True, batch_size=len(image))

    # --- termination -------------------------------------------------------------------------------
    @staticmethod
    def termination_loss(continue_logit: torch.Tensor, step: int, counts: torch.Tensor) -> torch.Tensor:
        """BCE of the continue unit against the ground-truth count: continue (1) while step < N, stop (0)
        at step N; steps after N are not part of the episode. Summed over the batch."""
        in_episode = (step <= counts).float()
        target = (step < counts).float()
        bce = F.binary_cross_entropy_with_logits(continue_logit, target, reduction="none")
        return (bce * in_episode).sum()

    # --- init stage on sampled states --------------------------------------------------------------
    def sampled_state_update(self, image, aux, pyramid, gts) -> dict:
        """The init stage of the recipes (a deviation, see below): `rollout` actor steps, each trained with BCE
        towards the next uncovered leaf, from a start state sampled from the ground truth.

        Why: the authors' init stage (BL-Trunc at sequence length 1) only ever shows the actor M_t = 0 and
        the "continue" target, so it never learns to move on from covered leaves nor to stop; BL-Trunc at
        length 5 collapsed to empty masks here. An actor trained on ground-truth states alone produced good
        masks for two steps, then empty ones: the union of its own soft masks was a state it had never seen.
        So, like DAgger, the states come from the actor's own rollout: the start state M_1 is the union of
        k leaves of a random permutation (all N with probability 0.2, else k ~ U{0..N-1}; k = 0 on a
        `rollout_fraction` share of the updates), LSTM state empty; then the actor takes `rollout` steps on
        its latent means, M_{t+1} = max(M_t, D(mu_t)) as at inference. Each step's BCE target is
        `next_leaf_target` (best soft Dice among the leaves neither half covered nor already a target of this
        episode) and its termination target "continue" iff such a leaf exists; an image leaves the episode after
        its stop step. Gradients are truncated to one step (state and LSTM state detached), so memory does not
        grow with `rollout`.

        Two further deviations, off by default (the `cpu` profile turns both on): `init_dice_weight` adds that
        weight times the soft-Dice loss 1 - 2|p.g| / (|p| + |g|) to each matched leaf's BCE. A leaf is ~1 % of a
        whole plant image, so the pixel-mean BCE is met by faint masks, which the 0.3 binarisation then drops; the
        Dice term is the reward's own score (Eq. 4) and rewards committing to one leaf. `init_train_decoder`
        fine-tunes the cVAE decoder with the actor here (its BatchNorm statistics stay frozen): the decoder was
        trained on the encoder's posterior codes, which the recurrent actor only approximates; the AC and BL rows
        then keep this decoder frozen, as the paper's.

        `init_sample_actions` (None / False: decode the mean) decodes a reparameterised sample a_t ~ pi(. | s_t) instead,
        for the loss, the target and the next state, as the authors' init stage samples (their `-noSampling` comes only
        in its last third, with lambda_KL 0, which leaves sigma as sampling made it). Decoding the mean leaves sigma to
        the KL alone, which pulls it to the prior's 1 (on real plants every latent dimension of the init actor had
        sigma ~1), so the last stage's exploration is whatever the prior says, not what the masks tolerate. Sampling
        lets the mask loss set sigma.
        """
        optimizer = self.optimizers()
        accumulated, hidden = torch.zeros_like(image[:, :1]), None
        assigned = [torch.zeros(len(gt), dtype=torch.bool, device=image.device) for gt in gts]
        if torch.rand(()).item() >= self.hparams.rollout_fraction:
            for i, gt in enumerate(gts):
                order = torch.randperm(len(gt))
                # all leaves covered (a stop example) a fifth of the time, else U{0..N-1}: with U{0..N}
                # stop examples were so rare that the unit learnt to always continue
                covered = len(gt) if torch.rand(()).item() < 0.2 else int(torch.randint(max(len(gt), 1), ()))
                if covered:
                    accumulated[i, 0] = gt[order[:covered]].any(0).float()  # covered, hence done, for good
        steps = self.hparams.rollout
        active = [True] * len(gts)
        mask_total, termination_total = 0.0, 0.0
        optimizer.zero_grad()
        for _ in range(steps):
            # every process runs the same number of backward passes: the rollout ends when no process has an image
            # left in it (a process whose images all stopped adds a zero loss meanwhile)
            if not max_over_processes(self, int(any(active))):
                break
            covered_region = accumulated[:, 0] > 0.5
            policy, continue_logit, hidden = self.actor(image, accumulated, aux, hidden)
            action = policy.rsample() if self.hparams.get("init_sample_actions") else policy.mean
            logit = self.decoder(action, pyramid)[:, 0]
            probability = torch.sigmoid(logit).detach()
            mask_loss, matched, keep_going, in_episode = image.new_zeros(()), 0, [], []
            for i, gt in enumerate(gts):
                target = next_leaf_target(gt, covered_region[i], probability[i], self.hparams.target_order, assigned[i])
                keep_going.append(float(target is not None))
                in_episode.append(float(active[i]))
                if active[i] and target is not None:
                    assigned[i][target] = True
                    mask_loss = mask_loss + self.init_mask_loss(logit[i], gt[target].float())
                    matched += 1
                active[i] = active[i] and target is not None
            in_episode = torch.tensor(in_episode, device=image.device)
            termination = (F.binary_cross_entropy_with_logits(
                continue_logit, torch.tensor(keep_going, device=image.device), reduction="none") * in_episode
            ).sum() / in_episode.sum().clamp(min=1)
            kl = kl_divergence(policy, Normal(0.0, 1.0)).sum(-1).mean()
            loss = mask_loss / max(matched, 1) + self.beta_kl * kl + termination
            if not in_episode.any():  # a step that only other processes' images take: no loss here, the same pass
                loss = loss * 0.0
            self.manual_backward(loss / steps)
            mask_total += float(mask_loss.detach()) / max(matched, 1) / steps
            termination_total += float(termination.detach()) / steps
            accumulated = transition(accumulated, probability[:, None])
            hidden = tuple(h.detach() for h in hidden)
        self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return {"train/loss_actor": torch.tensor(mask_total), "train/termination": torch.tensor(termination_total)}

    def init_mask_loss(self, logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE of one mask logit (H,W) against its leaf, plus `init_dice_weight` times the soft-Dice loss."""
        loss = F.binary_cross_entropy_with_logits(logit, target)
        weight = self.hparams.get("init_dice_weight", 0.0)
        if weight:
            probability = torch.sigmoid(logit)
            dice = 2 * (probability * target).sum() / (probability.sum() + target.sum()).clamp(min=1e-6)
            loss = loss + weight * (1.0 - dice)
        return loss

    # --- BL / BL-Trunc -----------------------------------------------------------------------------
    def baseline_update(self, image, aux, pyramid, gts, counts, steps) -> dict:
        optimizer = self.optimizers()
        truncate = self.hparams.mode == "BL-Trunc"
        accumulated, hidden = torch.zeros_like(image[:, :1]), None
        logits, kls, termination = [], [], image.new_zeros(())
        for t in range(steps):
            if truncate:
                accumulated = accumulated.detach()
                hidden = tuple(h.detach() for h in hidden) if hidden is not None else None
            policy, continue_logit, hidden = self.actor(image, accumulated, aux, hidden)
            logit = self.decoder(policy.mean, pyramid)
            logits.append(logit[:, 0])
            kls.append(kl_divergence(policy, Normal(0.0, 1.0)).sum(-1))
            termination = termination + self.termination_loss(continue_logit, t, counts)
            accumulated = transition(accumulated, torch.sigmoid(logit))
        logits = torch.stack(logits, dim=1)  # (B, T, H, W)
        kls = torch.stack(kls, dim=1)
        mask_loss, matched = image.new_zeros(()), 0
        kl_loss = image.new_zeros(())
        for i, gt in enumerate(gts):
            predicted = min(steps, len(gt))
            if predicted == 0:
                continue
            kl_loss = kl_loss + kls[i, :predicted].sum()
            for t, k in bce_assignment(torch.sigmoid(logits[i, :predicted]).detach(), gt).items():
                mask_loss = mask_loss + F.binary_cross_entropy_with_logits(logits[i, t], gt[k].float())
                matched += 1
        batch = len(gts)
        loss = mask_loss / max(matched, 1) + (self.beta_kl * kl_loss + termination) / batch
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return {"train/loss_actor": loss.detach(), "train/termination": termination.detach() / batch}

    # --- AC ----------------------------------------------------------------------------------------
    def repeat_pairs(self, masks_bt: torch.Tensor, gts: list[torch.Tensor], returns: torch.Tensor, steps: int):
        """`critic_repeats` (a deviation, off by default): beside the actions the actor took, the critic regresses
        at every step t >= 1 one counterfactual action whose outcome is known, the mask of a uniformly drawn earlier
        step of the episode, with `repeat_action_targets`. On real plants the last stage made the actor repeat leaves:
        a critic trained only on the actor's own masks had never seen what a mask inside M_t is worth.
        Returns the repeated masks (B, T, 1, H, W) and their targets (B, T), nan where there is none."""
        batch = masks_bt.shape[0]
        repeated = torch.zeros_like(masks_bt)
        targets = torch.full((batch, steps), float("nan"))
        for i, gt in enumerate(gts):
            length = min(steps, len(gt))
            if length < 2:
                continue
            earlier = [0] + [int(torch.randint(t, ())) for t in range(1, length)]
            binary = masks_bt[i, :length] > self.hparams.reward_threshold
            targets[i, :length] = repeat_action_targets(binary, gt, returns[i, :length].cpu(), earlier,
                                                        self.hparams.gamma, self.hparams.score)
            repeated[i, :length] = masks_bt[i, earlier]
        return repeated[:, :, None], targets.to(masks_bt.device)

    def actor_critic_update(self, image, aux, pyramid, gts, counts, steps) -> dict:
        """One iteration of Algorithm 1: roll out with sampled actions, then update critic and actor.

        On actor iterations the actor loss of each step (-Q(s_t, D(a_t)) + beta KL + termination BCE) is
        back-propagated right away through the frozen decoder into the encoder, with the critic frozen by
        `toggled_optimizer`; the rollout is then the buffer for the critic's regression.
        """
        actor_opt, critic_opt = self.optimizers()
        actor_turn = int(self.updates) >= self.hparams.critic_warmup and int(self.updates) % self.hparams.critic_iter == 0
        batch = len(gts)
        accumulated, hidden = torch.zeros_like(image[:, :1]), None
        states, masks = [], []
        actor_loss_total = 0.0
        if actor_turn:
            actor_opt.zero_grad()
        for t in range(steps):
            acting = (t < counts).float()
            with torch.set_grad_enabled(actor_turn), self.toggled_optimizer(actor_opt):
                policy, continue_logit, hidden = self.actor(image, accumulated, aux, hidden)
                mask = torch.sigmoid(self.decoder(policy.rsample(), pyramid))
                if actor_turn:
                    q_value = self.critic(image, accumulated, mask, aux)
                    kl = kl_divergence(policy, Normal(0.0, 1.0)).sum(-1)
                    loss = (-(q_value * acting).sum() + self.beta_kl * (kl * acting).sum()
                            + self.termination_loss(continue_logit, t, counts)) / batch
                    self.manual_backward(loss)
                    actor_loss_total += loss.detach().item()
            states.append(accumulated)
            masks.append(mask.detach())
            accumulated = transition(accumulated, mask.detach())
            hidden = tuple(h.detach() for h in hidden)
        if actor_turn:
            self.clip_gradients(actor_opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
            actor_opt.step()

        masks_bt = torch.cat(masks, dim=1)  # (B, T, H, W)
        rewards = torch.zeros(batch, steps)
        for i, gt in enumerate(gts):
            length = min(steps, len(gt))
            binary = masks_bt[i, :length] > self.hparams.reward_threshold
            rewards[i, :length] = torch.from_numpy(episode_rewards(binary, gt, self.hparams.score)).float()
        in_episode = torch.arange(steps)[None] < counts.cpu()[:, None]
        bootstrap = torch.zeros(batch)
        cut_off = counts > steps
        if cut_off.any():
            # a_T is drawn as the rollout draws its actions, so the target estimates the same Q of Eq. 6
            with torch.no_grad():
                policy, _, _ = self.actor(image, accumulated, aux, hidden)
                mask = torch.sigmoid(self.decoder(policy.sample(), pyramid))
                bootstrap = (self.critic(image, accumulated, mask, aux) * cut_off).cpu()
        returns = discounted_returns(rewards, self.hparams.gamma, in_episode, bootstrap).to(image.device)
        in_episode = in_episode.to(image.device).float()

        repeats = self.repeat_pairs(masks_bt, gts, returns, steps) if self.hparams.get("critic_repeats") else None
        critic_opt.zero_grad()
        critic_loss_total, terms = 0.0, max(float(in_episode.sum()), 1.0)
        with self.toggled_optimizer(critic_opt):
            for t in range(steps):  # one step at a time keeps the memory flat in the sequence length
                q_value = self.critic(image, states[t], masks[t], aux)
                loss = ((q_value - returns[:, t]) ** 2 * in_episode[:, t]).sum() / terms
                if repeats is not None and t > 0:
                    repeated, targets = repeats[0][:, t], repeats[1][:, t]
                    valid = in_episode[:, t] * torch.isfinite(targets).float()
                    q_repeat = self.critic(image, states[t], repeated, aux)
                    loss = loss + ((q_repeat - targets.nan_to_num()) ** 2 * valid).sum() / terms
                self.manual_backward(loss)
                critic_loss_total += loss.detach().item()
        self.clip_gradients(critic_opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        critic_opt.step()
        logs = {
            "train/loss_value": torch.tensor(critic_loss_total),
            "train/episode_return": (rewards.sum(1) / counts.clamp(min=1).cpu()).mean(),
        }
        if actor_turn:
            logs["train/loss_actor"] = torch.tensor(actor_loss_total)
        return logs
