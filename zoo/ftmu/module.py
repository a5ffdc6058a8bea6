"""FTMU training: the template-update agent trained by one-step actor-critic (Sec. 3.5, Eqs. 8-11) on 10-frame clips
of the training videos, 20 clips a batch (Sec. 4.2), in one LightningModule with manual optimisation.

One training step, top to bottom (`FTMUModule.training_step`):
1. Roll out each clip of the batch with the current policy, sampling a ~ π(·|s) (`ClipEnvironment.rollout`): the
   clip's first frame gives each target's box, the `Tracker` (`zoo.ftmu.env`) processes the next `clip_length`
   frames and records every decision (s_t, a_t, J_t).
2. Transitions per target: r_t = Eq. 7 of J_t, s_{t+1} = the state of the target's next decision; the clip's last
   decision is terminal (V = 0 after it, as the authors' code bootstraps `next_value=0`).
3. δ_t = r_t + γV(s_{t+1}) − V(s_t) with the critic before its update (Eq. 9); critic loss ½δ² (Eq. 8), actor loss
   −log π(a_t|s_t)·δ_t (Eqs. 10-11). The two nets share no parameter, so one backward pass of the summed losses and
   one step of each optimiser equals the paper's critic-then-actor update (and keeps DDP to one all-reduce).
4. Both learning rates decay by 1% every `decay_every` updates.

``mode="supervised"`` is Table 2's "Ours (supervised)": the label of a decision is fixed by the ground truth before
the action (replace iff IoU(P_mask, GT) >= IoU(T_mask, GT)), the rollout follows the labels, and the actor learns
them by cross-entropy; the critic is not used.

Exact resume: the `environment_steps` (decisions of every process) / `updates` counters are buffers (in the
checkpoint); each rollout samples
from a generator seeded by (seed, update, rank), and clips are shuffled by an epoch-seeded sampler, so a run resumed
from an epoch-end checkpoint takes the same actions as one that never stopped.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from datamodules.vos_io import boxes_from_mask
from zoo.ftmu.env import KEEP, REPLACE, Episode, Tracker, reward
from zoo.ftmu.networks import Actor, Critic
from zoo.rl.actor_critic import actor_critic_losses

MODES = ("rl", "supervised")


class ClipEnvironment:
    """The training videos as an environment: clips (sequence, first frame) and their roll-outs.

    Decoded frames and ground truth are kept in memory (each frame is visited by many clips and epochs)."""

    def __init__(self, sequences, tracker: Tracker, clip_length: int = 10):
        self.sequences, self.tracker, self.clip_length = list(sequences), tracker, clip_length
        self._frames: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def frame(self, sequence: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        key = (sequence, index)
        if key not in self._frames:
            video = self.sequences[sequence]
            self._frames[key] = (video.frame(index), video.require_mask(index))
        return self._frames[key]

    def clips(self, stride: int = 1) -> list[tuple[int, int]]:
        """Every (sequence, start) whose clip fits the video and whose first frame shows at least one target."""
        found = []
        for sequence, video in enumerate(self.sequences):
            annotated = set(video.annotated_frames)
            for start in range(0, len(video) - self.clip_length, stride):
                if not annotated.issuperset(range(start, start + self.clip_length + 1)):
                    continue
                labels = video.require_mask(start)
                if any((labels == target).any() for target in video.object_ids):
                    found.append((sequence, start))
        return found

    def rollout(self, sequence: int, start: int, policy) -> Episode:
        video = self.sequences[sequence]
        frame, labels = self.frame(sequence, start)
        boxes = boxes_from_mask(labels, video.object_ids)
        episode = self.tracker.start(video.name, start, frame, boxes)
        for index in range(start + 1, start + self.clip_length + 1):
            frame, labels = self.frame(sequence, index)
            self.tracker.step(episode, index, frame, policy, ground_truth=labels)
        return episode


REWARD_ON = ("prediction", "final")


def decision_jaccard(decision, reward_on: str = "prediction") -> float:
    """J_t of Eq. 7. "prediction" (the paper's text): IoU of the preliminary result P_mask with the ground truth,
    whatever the action. "final" (a flag, not the paper's): IoU of the mask the frame outputs after the action,
    P_mask on a0 and the kept template's mask on a1, so the action's effect shows in its own reward."""
    if reward_on == "prediction" or decision.action == REPLACE:
        return decision.jaccard
    return decision.template_jaccard


def transitions(episodes: list[Episode], reward_on: str = "prediction") -> dict[str, torch.Tensor]:
    """Decisions -> (states, actions, rewards, next_states, done, labels) of every target's consecutive decisions."""
    states, actions, rewards, next_states, done, labels = [], [], [], [], [], []
    for episode in episodes:
        by_target: dict[int, list] = {}
        for decision in episode.decisions:
            by_target.setdefault(decision.target, []).append(decision)
        for decisions in by_target.values():
            for index, decision in enumerate(decisions):
                last = index == len(decisions) - 1
                states.append(decision.state)
                next_states.append(decision.state if last else decisions[index + 1].state)
                done.append(last)
                actions.append(decision.action)
                rewards.append(float(reward(decision_jaccard(decision, reward_on))))
                labels.append(decision.label)
    if not states:
        return {}
    return {
        "states": torch.stack(states),
        "next_states": torch.stack(next_states),
        "actions": torch.tensor(actions),
        "rewards": torch.tensor(rewards, dtype=torch.float32),
        "done": torch.tensor(done),
        "labels": torch.tensor(labels),
    }


class FTMUModule(pl.LightningModule):
    def __init__(
        self,
        state_dim: int = 2560,
        hidden: tuple[int, ...] = (2048, 512),
        mode: str = "rl",
        actor_lr: float = 1e-4,
        critic_lr: float = 5e-4,
        lr_decay: float = 0.99,
        decay_every: int = 200,
        gamma: float = 0.9,
        value_scale: float = 100.0,
        reward_on: str = "prediction",
        seed: int = 0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if reward_on not in REWARD_ON:
            raise ValueError(f"reward_on must be one of {REWARD_ON}, got {reward_on!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = Actor(state_dim, tuple(hidden))
            self.critic = Critic(state_dim, tuple(hidden), value_scale)
        self.register_buffer("environment_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.environment: ClipEnvironment | None = None  # attached by the recipe; not part of the checkpoint

    # -- policies ------------------------------------------------------------------------------------------------

    def sampling_policy(self, generator: torch.Generator):
        def policy(states: torch.Tensor, jaccards: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                probabilities = F.softmax(self.actor(states.to(self.device)).float(), dim=-1).cpu()
            return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)

        return policy

    @staticmethod
    def label_policy(states: torch.Tensor, jaccards: torch.Tensor) -> torch.Tensor:
        """Supervised labels (replace iff the prediction is at least as good as the template); NaN J (no ground
        truth) replaces."""
        prediction, template = jaccards[:, 0], jaccards[:, 1]
        keep = prediction < template
        return torch.where(keep, KEEP, REPLACE)

    # -- training ------------------------------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("mode", self.hparams.mode)
        if saved != self.hparams.mode:
            raise ValueError(f"the checkpoint was trained in mode '{saved}', not '{self.hparams.mode}': resume it "
                             f"with --mode {saved}, or start a '{self.hparams.mode}' run in another run directory")

    def training_step(self, batch: list[tuple[int, int]], batch_idx: int):
        if self.environment is None:
            raise RuntimeError("attach a ClipEnvironment first: module.environment = ClipEnvironment(...)")
        generator = torch.Generator().manual_seed(
            int(self.hparams.seed) * 1_000_003 + int(self.updates) * 101 + self.global_rank
        )
        supervised = self.hparams.mode == "supervised"
        policy = self.label_policy if supervised else self.sampling_policy(generator)
        episodes = [self.environment.rollout(sequence, start, policy) for sequence, start in batch]
        batch_data = {key: value.to(self.device)
                      for key, value in transitions(episodes, self.hparams.reward_on).items()}
        steps = len(batch_data.get("states", ()))
        # counted over every DDP process (DDP copies the launching process's buffers to the others at each step)
        total = self.trainer.strategy.reduce(torch.tensor(float(steps), device=self.device), reduce_op="sum")
        self.environment_steps += int(total)

        actor_optimizer, critic_optimizer = self.optimizers()
        actor_optimizer.zero_grad()
        critic_optimizer.zero_grad()
        logged = {}
        if steps == 0:  # nothing to learn from, but every DDP process must run the same backward passes
            loss = 0.0 * sum(p.sum() for p in self.parameters())
        elif supervised:
            loss = F.cross_entropy(self.actor(batch_data["states"]), batch_data["labels"])
            loss = loss + 0.0 * self.critic(batch_data["states"]).sum()
            logged["train/loss_actor"] = loss.detach()
        else:
            logits = self.actor(batch_data["states"])
            log_probs = F.log_softmax(logits, dim=-1).gather(1, batch_data["actions"][:, None]).squeeze(1)
            losses = actor_critic_losses(
                log_probs, batch_data["rewards"], self.critic(batch_data["states"]),
                self.critic(batch_data["next_states"]), batch_data["done"], self.hparams.gamma,
            )
            loss = losses["loss_actor"] + losses["loss_critic"]
            logged.update({"train/loss_actor": losses["loss_actor"].detach(),
                           "train/loss_critic": losses["loss_critic"].detach(),
                           "train/td_error": losses["td_error"].abs().mean()})
        self.manual_backward(loss)
        actor_optimizer.step()
        critic_optimizer.step()
        for scheduler in self.lr_schedulers():
            scheduler.step()
        self.updates += 1
        if steps:
            logged["train/reward"] = batch_data["rewards"].mean()
            logged["train/replace_rate"] = (batch_data["actions"] == REPLACE).float().mean()
        logged["train/steps"] = float(steps)
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=max(len(batch), 1))
        return loss.detach()

    def configure_optimizers(self):
        actor = torch.optim.Adam(self.actor.parameters(), lr=self.hparams.actor_lr)
        critic = torch.optim.Adam(self.critic.parameters(), lr=self.hparams.critic_lr)
        decay, every = self.hparams.lr_decay, self.hparams.decay_every

        def schedule(update: int) -> float:
            return decay ** (update // every)

        return [actor, critic], [torch.optim.lr_scheduler.LambdaLR(actor, schedule),
                                 torch.optim.lr_scheduler.LambdaLR(critic, schedule)]
