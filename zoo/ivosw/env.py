"""IVOS-W's decision process (Yin et al., "Learning to Recommend Frame for Interactive Video Object Segmentation in the
Wild", CVPR 2021, Sec. 3.1) as pure tensor functions: the state (Eq. 1), the rewards (Eqs. 2-4) and the double-DQN
loss with task decomposition (Eqs. 5-6).

An episode on a video of N frames (training: N' = 25 consecutive frames around the first scribbled frame; testing:
the whole video) has T interaction rounds (T = 5 in training, 8 in testing). In round 1 the user scribbles a frame of
their choice (DAVIS's initial scribble) and the VOS algorithm segments every frame. After each round r < T the agent
sees s = CONCAT(q, h) and recommends the frame annotated in round r + 1; the (simulated) user scribbles on it and the
VOS algorithm refines the masks. T rounds thus make T − 1 decisions, and the one that leads to round T is terminal
(``done``). `episode_transitions` turns one episode's record into these transitions.

State (Eq. 1, `state`): per frame n, [q_n, h_n], shape (N, 2).
- q ∈ [0, 1]^N, the segmentation quality: per-frame J&F averaged over the objects (Eq. 7). The ground truth when
  training and in the "Oracle" setting; the quality network's prediction in the "Wild" setting (that network ends
  without a sigmoid, so its q may leave [0, 1]; it is not clipped).
- h ∈ {0, …, T}^N, how often each frame has been annotated, the user's round-1 frame included (the authors' code counts
  it, and the paper's range h ≤ T needs it: T rounds annotate T frames). h_t counts the rounds before the action a_t.
- No normalisation: the paper and the authors' code feed q and the raw counts as they are.

Rewards.
- Goal (Eq. 3; Eq. 2 with ``margin=False``, `goal_reward`): r_goal = (P − (μ̂ + σ̂)) / σ̂, P the mean J&F over the
  episode's frames after the round the action led to; μ̂, σ̂ the mean and sample standard deviation (ddof = 1, as the
  authors' code) of P over 30 random-policy episodes with the same (sequence, initial scribble, round)
  (`RandomPolicyStatistics`). Eq. 3 is positive only when P beats the random policy by more than one σ̂.
- Auxiliary (Eq. 4, `auxiliary_reward`): +1 if a_t = argmin h_t, else −1; with ties every least-annotated frame counts
  as the argmin (the authors' `repeat_selection`: "is the chosen frame among the least annotated").

Loss (Eqs. 5-6 and task decomposition, `agent_loss`), δ = 0.1, γ = 0.95, Q^P the policy (online) network and Q^T
the target network, a' = argmax_a Q^P(s_{t+1}, a) (double Q-learning):
    y_step = δ·r_aux_t + γ·Q^T(s_{t+1}, a')      (Eq. 5, t < T)
    y_done = δ·r_goal_t                            (Eq. 5, t = T)
- Without decomposition (Eq. 5 as written): one target per transition, y_done where done else y_step, and
  L = (1/B) Σ_i (Q^P(s_i, a_i) − y_i)² (Eq. 6). r_goal is not used where not done (the paper sets it to 0 there).
- With decomposition (the default; Sec. 3.1 "Task decomposition"): the task of T rounds is split into the sub-tasks
  T' = 1, …, T, each maximising the performance after its last round. A transition at step t is the *terminal* step of
  sub-task T' = t, with target y_done (r_goal computed with that round's μ̂, σ̂), and an *intermediate* step of every
  sub-task T' > t, with target y_step; at t = T no sub-task continues, so only y_done applies. Hence
      L = (1/B) Σ_i [ (Q_i − y_done,i)² + (1 − done_i)·(Q_i − y_step,i)² ],
  i.e. both MSE terms of the authors' `update_agent` (each averaged over the batch, then added), with the step term
  dropped on terminal transitions. Decomposition adds exactly (1/B) Σ_{i not done} (Q_i − y_done,i)² to the loss
  without it.

Where the authors' code (`svip-lab/IVOS-W@341cd27`, see seeds.md §2) departs from the paper, the paper is followed:
- The code's update ignores the stored ``done``: it regresses the terminal transitions on y_step as well,
  bootstrapping from a state past the episode's end. Here the step term is dropped where done (Eq. 5 has only
  δ·r_goal at t = T, and no sub-task of the decomposition goes beyond T).
- The code stores in each transition an h that already counts the action being taken (and an s' whose h counts the
  next recommendation), while at inference h counts only past rounds. Here h_t counts the rounds before a_t in
  training and inference alike (Eq. 1; Eq. 4 judges a_t against the history h_t).
- The code divides by σ̂ unguarded; here σ̂ <= 0 (a sequence where every random run scores the same) is an error. The
  code avoids most such sequences by dropping those whose random-policy gain is under 0.05 (``sample_th``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch

from zoo.rl.dqn import double_dqn_targets, td_loss

DELTA = 0.1  # reward scale δ of Eq. 5
GAMMA = 0.95  # discount γ of Eq. 5
RANDOM_RUNS = 30  # random-policy episodes per (sequence, scribble) behind μ̂, σ̂
TRAIN_ROUNDS, TEST_ROUNDS = 5, 8  # T (Sec. 4.2)
SUBSEQUENCE = 25  # N' (Sec. 4.2)


# -- state (Eq. 1) ----------------------------------------------------------------------------------------------------


def recommendation_counts(frames: Sequence[int] | torch.Tensor, num_frames: int) -> torch.Tensor:
    """h: how often each of ``num_frames`` frames occurs in ``frames`` (the frames annotated so far, the user's round-1
    frame included), as a float (N,) tensor."""
    frames = torch.as_tensor(frames, dtype=torch.long).reshape(-1)
    if frames.numel() and (frames.min() < 0 or frames.max() >= num_frames):
        raise ValueError(f"frame indices {frames.tolist()} outside [0, {num_frames})")
    return torch.bincount(frames, minlength=num_frames).to(torch.float32)


def state(quality: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """s = CONCAT(q, h) per frame (Eq. 1): (…, N) and (…, N) → (…, N, 2) float32, [..., 0] = q, [..., 1] = h."""
    quality, counts = torch.as_tensor(quality), torch.as_tensor(counts)
    if quality.shape != counts.shape:
        raise ValueError(f"quality {tuple(quality.shape)} and counts {tuple(counts.shape)} must match")
    return torch.stack([quality.to(torch.float32), counts.to(torch.float32)], dim=-1)


# -- rewards (Eqs. 2-4) -----------------------------------------------------------------------------------------------


def goal_reward(performance, mu, sigma, margin: bool = True) -> torch.Tensor:
    """Eq. 3, (P − (μ̂ + σ̂)) / σ̂; with ``margin=False`` Eq. 2, (P − μ̂) / σ̂. Broadcasts; σ̂ must be > 0."""
    performance, mu, sigma = (torch.as_tensor(v, dtype=torch.float32) for v in (performance, mu, sigma))
    if (sigma <= 0).any():
        raise ValueError("sigma must be positive (the random policy's runs differ); drop sequences where they do not")
    return (performance - mu - (sigma if margin else 0.0)) / sigma


def auxiliary_reward(counts: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """Eq. 4: +1 where a_t is a least-annotated frame under h_t (ties included), −1 elsewhere.
    counts (…, N) = h_t before the action, actions (…,) frame indices → (…,) float32."""
    counts, actions = torch.as_tensor(counts), torch.as_tensor(actions, dtype=torch.long)
    chosen = counts.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    fewest = chosen == counts.min(dim=-1).values
    return torch.where(fewest, 1.0, -1.0).to(torch.float32)


class RandomPolicyStatistics:
    """Accumulates the performance P of random-policy episodes per key, e.g. (sequence, scribble, round), and returns
    (μ̂, σ̂): the mean and the sample standard deviation (ddof = 1), the statistics of Eqs. 2-3. The paper runs the
    random policy 30 times per training (sequence, scribble); ``min_runs`` (at least 2) guards σ̂ against too few."""

    def __init__(self, min_runs: int = 2):
        if min_runs < 2:
            raise ValueError("the sample standard deviation needs at least 2 runs")
        self.min_runs = int(min_runs)
        self.values: dict[Hashable, list[float]] = {}

    def add(self, key: Hashable, performance: float) -> None:
        self.values.setdefault(key, []).append(float(performance))

    def count(self, key: Hashable) -> int:
        return len(self.values.get(key, ()))

    def __contains__(self, key: Hashable) -> bool:
        return self.count(key) >= self.min_runs

    def __len__(self) -> int:
        return len(self.values)

    def mean_std(self, key: Hashable) -> tuple[float, float]:
        runs = self.values.get(key, [])
        if len(runs) < self.min_runs:
            raise KeyError(f"{key!r} has {len(runs)} random-policy runs, need {self.min_runs}")
        mean = math.fsum(runs) / len(runs)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in runs) / (len(runs) - 1))
        return mean, std

    def __getitem__(self, key: Hashable) -> tuple[float, float]:
        return self.mean_std(key)

    def state_dict(self) -> dict:
        return {"min_runs": self.min_runs, "values": {key: list(runs) for key, runs in self.values.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self.min_runs = int(state["min_runs"])
        self.values = {key: [float(v) for v in runs] for key, runs in state["values"].items()}


# -- episodes ---------------------------------------------------------------------------------------------------------


def episode_transitions(quality: torch.Tensor, frames: Sequence[int] | torch.Tensor,
                        complete: bool = True) -> dict[str, torch.Tensor]:
    """The transitions of one episode of R rounds.

    quality: (R, N), q after each round 1..R. frames: (R,), the frame annotated in each round (frames[0] the user's).
    Decision k = 0..R−2 is taken after round k+1: s_k = (q after round k+1, h of frames[:k+1]), a_k = frames[k+1],
    s'_k = (q after round k+2, h of frames[:k+2]); its r_aux judges a_k against h of s_k (Eq. 4). ``complete``: the
    episode ran to its T = R rounds, so its last decision is terminal. Returns {"state" (R−1, N, 2), "action",
    "next_state", "aux_reward", "done", "round" (the 1-based round each decision leads to, 2..R: the round of the μ̂, σ̂
    behind its r_goal)}."""
    quality = torch.as_tensor(quality, dtype=torch.float32)
    frames = torch.as_tensor(frames, dtype=torch.long).reshape(-1)
    rounds, num_frames = quality.shape
    if frames.numel() != rounds or rounds < 2:
        raise ValueError(f"need R >= 2 rounds with one annotated frame each, got {rounds} and {frames.numel()} frames")
    counts = torch.stack([recommendation_counts(frames[: r + 1], num_frames) for r in range(rounds)])  # after round r+1
    states = state(quality, counts)
    actions = frames[1:]
    done = torch.zeros(rounds - 1, dtype=torch.bool)
    done[-1] = complete
    return {
        "state": states[:-1],
        "action": actions,
        "next_state": states[1:],
        "aux_reward": auxiliary_reward(counts[:-1], actions),
        "done": done,
        "round": torch.arange(2, rounds + 1),
    }


# -- loss (Eqs. 5-6, task decomposition) ------------------------------------------------------------------------------


def agent_loss(
    q_values: torch.Tensor,
    actions: torch.Tensor,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
    aux_rewards: torch.Tensor,
    goal_rewards: torch.Tensor,
    done: torch.Tensor,
    gamma: float = GAMMA,
    delta: float = DELTA,
    decomposition: bool = True,
    kind: str = "mse",
) -> dict[str, torch.Tensor]:
    """Eq. 6 over a batch of B transitions, with or without task decomposition (module docstring).

    q_values: (B, N) Q^P(s, ·), differentiable; actions (B,); next_q_online / next_q_target: (B, N) Q^P(s', ·) and
    Q^T(s', ·) (not differentiated); aux_rewards, goal_rewards (B,) the unscaled r_aux (Eq. 4) and r_goal (Eq. 3, of
    the round each transition leads to); done (B,) bool. ``kind="huber"`` swaps the squared error for Huber's.
    Returns {"loss", "loss_step", "loss_done", "target_step", "target_done", "q_taken"}; loss = loss_step + loss_done,
    each term averaged over all B transitions."""
    done = done.to(torch.bool)
    q_taken = q_values.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    target_step = double_dqn_targets(delta * aux_rewards, next_q_online, next_q_target, done, gamma)
    target_done = (delta * goal_rewards).to(q_taken.dtype).detach()
    not_done = (~done).to(q_taken.dtype)
    loss_step = td_loss(q_taken, target_step, kind, weights=not_done)
    loss_done = td_loss(q_taken, target_done, kind, weights=None if decomposition else done.to(q_taken.dtype))
    return {
        "loss": loss_step + loss_done,
        "loss_step": loss_step,
        "loss_done": loss_done,
        "target_step": target_step,
        "target_done": target_done,
        "q_taken": q_taken.detach(),
    }
