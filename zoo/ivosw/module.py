"""IVOS-W agent training (Yin et al., CVPR 2021, Sec. 3.1 and 4.2; the authors' `train_agent.py`, seeds.md §2): a
double DQN whose policy and target networks are `Brain`s, trained by experience replay on interactive sessions, in
one LightningModule with manual optimisation.

The environment (`InteractiveVideo`): one training video (the paper: a 25-frame subsequence of a DAVIS sequence with
one of its initial scribbles) behind any interactive VOS method. `reset()` runs round 1 on the user's frame,
`annotate(frame)` one more round on the frame the agent recommends; each returns a `Round`: the per-frame quality q
the agent sees (Oracle: J&F against the ground truth; Wild: the quality network's prediction) and the per-frame J&F
behind the goal reward. Nothing else is asked of it, so a recipe wraps an `InteractiveEngine` and the robot, and a
test a synthetic video whose hard frames are known. Attach the videos with ``module.videos = [...]`` (not part of
the checkpoint); every video must have the same number of frames, since the replay buffer stores fixed shapes.

Before learning (`on_train_start`, skipped when a resumed checkpoint already holds them):
1. `collect_random_statistics`: `random_runs` (30) random-policy episodes per video give μ̂, σ̂ of the performance
   after every round, per (video key, round), for Eqs. 2-3;
2. `warm_buffer`: random-policy episodes fill the replay buffer with `warmup_transitions` transitions (the paper:
   "we fill the experience buffer by randomly selecting the frames"; default: the whole 5,760-transition buffer).

One training step (one video index from `train_dataloader`, one episode per video of the batch):
1. the episode: round 1 is the user's, then T − 1 = 4 decisions ε-greedy on the policy's Q over the frames, ε from
   `epsilon_schedule` at the count of decisions taken so far (0.7 → 0.25 over 5000, exponential);
2. its transitions (`zoo.ivosw.env.episode_transitions`) go into the replay buffer with the raw ingredients of both
   rewards (r_aux, and P, μ̂, σ̂ of the round each decision leads to);
3. `updates_per_episode` (14, the authors' 3·T − 1) double-DQN updates on batches of 32 sampled from the buffer:
   `agent_loss` (Eq. 6, task decomposition unless turned off), gradients clamped to ±1 as the authors' code does,
   Adam (5e-6, weight decay 5e-4), then the target network is hard-copied with probability 0.05.

Ablation flags (Tables 4-7), applied when a batch is turned into a loss, so the stored buffer does not depend on them:
``goal_reward`` "eq3" / "eq2"; ``rewards`` "both" / "goal" (r_aux taken as 0) / "aux" (r_goal taken as 0);
``state_features`` "both" / "quality" / "counts": the other feature is zeroed at the network's input, which is the
same function class as a Brain without that input (a zero input adds nothing but the bias the layer has anyway);
``decomposition`` on / off. A checkpoint refuses to resume under other flags (`on_load_checkpoint`).

Randomness and resume: every draw comes from a generator seeded by (seed, stream, counter, rank): the training
step's ε-greedy actions and replay samples by the episode counter and the rank, a target copy by the update counter
only (every DDP process copies at the same updates). The counters `environment_steps` (agent decisions of every
process: the ε step), `episodes`, `updates` and `target_copies` are buffers, the target network a submodule, and the
replay buffer of each process and the random-policy statistics travel in the checkpoint (`on_save_checkpoint`), so a
resumed run takes the same actions and samples as one that never stopped. Under DDP each process plays its own
videos (Lightning's sampler splits them) and keeps its own buffer; the gradients are all-reduced, the counters summed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from zoo.ivosw.env import (
    DELTA, GAMMA, RANDOM_RUNS, TRAIN_ROUNDS, RandomPolicyStatistics, agent_loss, episode_transitions, goal_reward,
    recommendation_counts, state,
)
from zoo.ivosw.networks import Brain
from zoo.rl.dqn import epsilon_greedy, epsilon_schedule, stochastic_hard_update
from zoo.rl.replay import ReplayBuffer

GOAL_REWARDS = ("eq3", "eq2")
REWARDS = ("both", "goal", "aux")
STATE_FEATURES = ("both", "quality", "counts")
TASK_FLAGS = ("goal_reward", "rewards", "state_features", "decomposition")  # a checkpoint resumes only under these
CHECKPOINT_KEY = "ivosw_agent"
# generator streams (`seeded_generator`): one per purpose, so that no two purposes share draws
EPISODE_STREAM, TARGET_STREAM, STATISTICS_STREAM, WARMUP_STREAM = 1, 2, 3, 4


@dataclass
class Round:
    """What one interaction round leaves: the frame annotated, q (N,) the agent's state sees, and the per-frame J&F
    (N,) against the ground truth, whose mean is the performance P of the goal reward."""

    frame: int
    quality: torch.Tensor
    performance: torch.Tensor


class InteractiveVideo(Protocol):
    key: Hashable  # e.g. (sequence, scribble): μ̂, σ̂ are kept per (key, round); str / int / tuples (checkpointed)
    num_frames: int

    def reset(self) -> Round:
        """Start a new session on the video and run round 1 on the user's frame."""

    def annotate(self, frame: int) -> Round:
        """Run the next round with the (simulated) user annotating ``frame``."""


@dataclass
class EpisodeRecord:
    key: Hashable
    frames: torch.Tensor  # (R,) the frame annotated in each round, frames[0] the user's
    quality: torch.Tensor  # (R, N) q after each round
    performance: torch.Tensor  # (R,) P, the mean J&F over the frames after each round


def play_episode(video: InteractiveVideo, rounds: int, choose: Callable[[torch.Tensor], int]) -> EpisodeRecord:
    """Round 1, then ``rounds`` − 1 rounds on the frames ``choose`` picks from the state s = (q, h) (N, 2) (Eq. 1)."""
    first = video.reset()
    played = [first]
    for _ in range(rounds - 1):
        counts = recommendation_counts([r.frame for r in played], video.num_frames)
        frame = int(choose(state(played[-1].quality, counts)))
        played.append(video.annotate(frame))
        if played[-1].frame != frame:
            raise ValueError(f"video {video.key!r} annotated frame {played[-1].frame} when asked for {frame}")
    return EpisodeRecord(
        key=video.key,
        frames=torch.tensor([r.frame for r in played]),
        quality=torch.stack([torch.as_tensor(r.quality, dtype=torch.float32) for r in played]),
        performance=torch.stack([torch.as_tensor(r.performance, dtype=torch.float32).mean() for r in played]),
    )


def seeded_generator(seed: int, stream: int, counter: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one (seed, stream, counter, rank). numpy's SeedSequence hashes the four numbers, so every
    tuple gets its own stream however large the counter grows (a linear mix like seed·a + counter·b + rank repeats)."""
    entropy = np.random.SeedSequence([int(seed), int(stream), int(counter), int(rank)]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(entropy[0]) % 2**63)


def _random_frame(generator: torch.Generator) -> Callable[[torch.Tensor], int]:
    return lambda s: int(torch.randint(0, s.shape[0], (), generator=generator))


class IVOSWAgentModule(pl.LightningModule):
    def __init__(
        self,
        hidden: int = 128,
        head_hidden: int = 128,
        rounds: int = TRAIN_ROUNDS,
        lr: float = 5e-6,
        weight_decay: float = 5e-4,
        grad_clamp: float = 1.0,
        batch_size: int = 32,
        gamma: float = GAMMA,
        delta: float = DELTA,
        buffer_capacity: int = 5760,
        warmup_transitions: int | None = None,
        updates_per_episode: int = 3 * TRAIN_ROUNDS - 1,
        epsilon_start: float = 0.7,
        epsilon_end: float = 0.25,
        epsilon_steps: int = 5000,
        target_update_probability: float = 0.05,
        random_runs: int = RANDOM_RUNS,
        goal_reward: str = "eq3",
        rewards: str = "both",
        state_features: str = "both",
        decomposition: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        for name, value, allowed in (("goal_reward", goal_reward, GOAL_REWARDS), ("rewards", rewards, REWARDS),
                                     ("state_features", state_features, STATE_FEATURES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        warmup_transitions = buffer_capacity if warmup_transitions is None else int(warmup_transitions)
        if not batch_size <= warmup_transitions <= buffer_capacity:
            raise ValueError(f"warmup_transitions ({warmup_transitions}) must lie between the batch size "
                             f"({batch_size}) and the buffer capacity ({buffer_capacity})")
        if rounds < 2:
            raise ValueError(f"an episode needs at least 2 rounds (one decision), got {rounds}")
        self.save_hyperparameters()
        self.hparams.warmup_transitions = warmup_transitions
        self.automatic_optimization = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = Brain(hidden, head_hidden)
            self.target = Brain(hidden, head_hidden)
        self.target.load_state_dict(self.policy.state_dict())
        self.target.requires_grad_(False)  # moved only by hard copies (and so ignored by DDP's gradient reduction)
        for name in ("environment_steps", "episodes", "updates", "target_copies"):
            self.register_buffer(name, torch.zeros((), dtype=torch.long))
        self.replay = ReplayBuffer(buffer_capacity)
        self.statistics = RandomPolicyStatistics()
        self.videos: list[InteractiveVideo] | None = None  # attached by the recipe; not part of the checkpoint

    # -- the networks --------------------------------------------------------------------------------------------

    def q_values(self, states: torch.Tensor, network: Brain | None = None) -> torch.Tensor:
        """Q (B, N) of states (B, N, 2) through the policy (or ``network``), the ``state_features`` ablation applied."""
        keep = {"both": (1.0, 1.0), "quality": (1.0, 0.0), "counts": (0.0, 1.0)}[self.hparams.state_features]
        states = states.to(self.device, torch.float32) * torch.tensor(keep, device=self.device)
        return (network or self.policy)(states)

    @torch.no_grad()
    def recommend(self, quality: torch.Tensor, counts: torch.Tensor) -> int | torch.Tensor:
        """The frame to annotate next: arg-max Q, never exploring. quality, counts (N,) → int; (B, N) → (B,)."""
        states = state(torch.as_tensor(quality), torch.as_tensor(counts))
        single = states.dim() == 2
        frames = self.q_values(states[None] if single else states).argmax(-1).cpu()
        return int(frames[0]) if single else frames

    @property
    def epsilon(self) -> float:
        return self._epsilon(int(self.environment_steps))

    def _epsilon(self, step: int) -> float:
        return epsilon_schedule(step, self.hparams.epsilon_start, self.hparams.epsilon_end, self.hparams.epsilon_steps)

    # -- episodes and transitions --------------------------------------------------------------------------------

    def _require_videos(self) -> list[InteractiveVideo]:
        if not self.videos:
            raise RuntimeError("attach the training videos first: module.videos = [InteractiveVideo, ...]")
        if len({video.num_frames for video in self.videos}) != 1:
            raise ValueError("every training video must have the same number of frames (the paper's N' = 25 "
                             f"subsequences), got {sorted({video.num_frames for video in self.videos})}")
        return self.videos

    def transitions(self, record: EpisodeRecord) -> dict[str, torch.Tensor]:
        """An episode's transitions, with P, μ̂, σ̂ of the round each decision leads to (the goal reward's inputs)."""
        steps = episode_transitions(record.quality, record.frames)
        rounds = steps.pop("round")
        moments = torch.tensor([self.statistics.mean_std((record.key, int(r))) for r in rounds])
        return {**steps, "performance": record.performance[rounds - 1], "mu": moments[:, 0].float(),
                "sigma": moments[:, 1].float()}

    def collect_random_statistics(self, runs: int | None = None) -> None:
        """μ̂, σ̂ of P after every round from ``runs`` random-policy episodes per video (videos already done are
        skipped). Seeded by the video's index, not the rank: every DDP process computes the same statistics."""
        runs = self.hparams.random_runs if runs is None else runs
        for index, video in enumerate(self._require_videos()):
            if all((video.key, r) in self.statistics for r in range(2, self.hparams.rounds + 1)):
                continue
            generator = seeded_generator(self.hparams.seed, STATISTICS_STREAM, index)
            for _ in range(runs):
                record = play_episode(video, self.hparams.rounds, _random_frame(generator))
                for r in range(2, self.hparams.rounds + 1):
                    self.statistics.add((video.key, r), float(record.performance[r - 1]))
            for r in range(2, self.hparams.rounds + 1):
                if self.statistics.mean_std((video.key, r))[1] <= 0:  # Eqs. 2-3 divide by σ̂
                    raise ValueError(f"video {video.key!r}: every random-policy run scores the same after round {r}; "
                                     "drop it (the authors drop sequences whose random-policy gain is under 0.05)")

    def warm_buffer(self, transitions: int | None = None) -> None:
        """Random-policy episodes, the videos in turn, until the buffer holds ``transitions`` (default
        ``warmup_transitions``)."""
        wanted = self.hparams.warmup_transitions if transitions is None else transitions
        videos = self._require_videos()
        generator = seeded_generator(self.hparams.seed, WARMUP_STREAM, len(self.replay), self.global_rank)
        played = 0
        while len(self.replay) < wanted:
            video = videos[(played + self.global_rank) % len(videos)]
            self.replay.extend(self.transitions(play_episode(video, self.hparams.rounds, _random_frame(generator))))
            played += 1

    def on_train_start(self) -> None:
        self.collect_random_statistics()
        if len(self.replay) < self.hparams.warmup_transitions:
            self.warm_buffer()

    # -- learning ------------------------------------------------------------------------------------------------

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`agent_loss` of a replay batch under the reward / state / decomposition flags."""
        batch = {key: value.to(self.device) for key, value in batch.items()}
        with torch.no_grad():
            next_online = self.q_values(batch["next_state"])
            next_target = self.q_values(batch["next_state"], self.target)
        aux = batch["aux_reward"]
        goal = goal_reward(batch["performance"], batch["mu"], batch["sigma"], margin=self.hparams.goal_reward == "eq3")
        if self.hparams.rewards == "goal":
            aux = torch.zeros_like(aux)
        elif self.hparams.rewards == "aux":
            goal = torch.zeros_like(goal)
        return agent_loss(self.q_values(batch["state"]), batch["action"], next_online, next_target, aux,
                          goal.to(self.device), batch["done"], self.hparams.gamma, self.hparams.delta,
                          decomposition=self.hparams.decomposition)

    def _update(self, generator: torch.Generator) -> torch.Tensor:
        optimizer = self.optimizers()
        losses = self.batch_loss(self.replay.sample(self.hparams.batch_size, generator))
        optimizer.zero_grad()
        self.manual_backward(losses["loss"])
        for parameter in self.policy.parameters():  # the authors' `param.grad.data.clamp_(-1, 1)`
            if parameter.grad is not None:
                parameter.grad.clamp_(-self.hparams.grad_clamp, self.hparams.grad_clamp)
        optimizer.step()
        copy = seeded_generator(self.hparams.seed, TARGET_STREAM, int(self.updates))
        self.target_copies += int(stochastic_hard_update(self.target, self.policy,
                                                         self.hparams.target_update_probability, copy))
        self.updates += 1
        return losses["loss"].detach()

    def training_step(self, batch, batch_idx: int):
        videos = self._require_videos()
        if len(self.replay) < self.hparams.batch_size:
            raise RuntimeError("the replay buffer is not warm: call warm_buffer() (on_train_start does)")
        generator = seeded_generator(self.hparams.seed, EPISODE_STREAM, int(self.episodes), self.global_rank)
        first_step, decisions = int(self.environment_steps), 0

        def explore(s: torch.Tensor) -> int:
            nonlocal decisions
            with torch.no_grad():
                q = self.q_values(s[None])
            decisions += 1
            return int(epsilon_greedy(q, self._epsilon(first_step + decisions - 1), generator)[0])

        indices = [int(i) for i in torch.as_tensor(batch).reshape(-1)]
        records = [play_episode(videos[i], self.hparams.rounds, explore) for i in indices]
        for record in records:
            self.replay.extend(self.transitions(record))
        # counted over every DDP process (DDP copies the launching process's buffers to the others at each step)
        totals = self.trainer.strategy.reduce(torch.tensor([float(decisions), float(len(records))],
                                                           device=self.device), reduce_op="sum")
        self.environment_steps += int(totals[0])
        self.episodes += int(totals[1])
        losses = [self._update(generator) for _ in range(self.hparams.updates_per_episode)]
        logged = {"train/performance": torch.stack([r.performance[-1] for r in records]).mean(),
                  "train/epsilon": self._epsilon(first_step)}
        if losses:
            logged["train/loss"] = torch.stack(losses).mean()
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=max(len(records), 1))
        return logged.get("train/loss")

    def train_dataloader(self):
        # one episode per video and step; Lightning's DistributedSampler gives each DDP process its share
        return DataLoader(range(len(self._require_videos())), batch_size=1, shuffle=False, collate_fn=list)

    def configure_optimizers(self):
        return torch.optim.Adam(self.policy.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        local = self.replay.state_dict()
        if dist.is_available() and dist.is_initialized():
            per_rank = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, local)  # every rank runs this hook; rank 0 writes the file
        else:
            per_rank = [local]
        checkpoint[CHECKPOINT_KEY] = {"replay_per_rank": per_rank, "statistics": self.statistics.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved_flags = checkpoint.get("hyper_parameters", {})
        for flag in TASK_FLAGS:
            if flag in saved_flags and saved_flags[flag] != self.hparams[flag]:
                raise ValueError(f"the checkpoint was trained with {flag}={saved_flags[flag]!r}, not "
                                 f"{self.hparams[flag]!r}: resume it with the same flags, or start the ablation in "
                                 "another run directory")
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            return
        self.statistics.load_state_dict(saved["statistics"])
        per_rank = saved["replay_per_rank"]
        attached = self._trainer is not None
        world_size, rank = (self.trainer.world_size, self.global_rank) if attached else (1, 0)
        if len(per_rank) != world_size:
            if not attached:
                return  # loaded for inference: the buffers are not needed
            raise ValueError(f"the checkpoint holds the replay buffers of {len(per_rank)} process(es) but this run "
                             f"has {world_size}: resume with the same number of devices")
        self.replay.load_state_dict(per_rank[rank])
