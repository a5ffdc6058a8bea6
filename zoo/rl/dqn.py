"""Double DQN (van Hasselt, Guez & Silver, AAAI 2016) as pure tensor functions, with ε-greedy exploration and the
target-network updates.

    y = r + γ·(1 − done)·Q_target(s', argmax_{a' valid} Q_online(s', a'))     (van Hasselt et al., Eq. 4)

The online ("policy") network picks the next action and the target network values it, which removes the
over-estimation of max_a' Q_target(s', a'). Targets are never differentiated.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPSILON_KINDS = ("exponential", "linear")


def masked_argmax(q: torch.Tensor, valid_actions: torch.Tensor | None = None) -> torch.Tensor:
    """argmax over the last dimension among the valid actions (bool mask of q's shape); (…,) long."""
    if valid_actions is None:
        return q.argmax(dim=-1)
    if valid_actions.shape != q.shape:
        raise ValueError(f"valid_actions {tuple(valid_actions.shape)} must match q {tuple(q.shape)}")
    return q.masked_fill(~valid_actions, float("-inf")).argmax(dim=-1)


def double_dqn_targets(rewards: torch.Tensor, next_q_online: torch.Tensor, next_q_target: torch.Tensor,
                       done: torch.Tensor, gamma: float, valid_actions: torch.Tensor | None = None) -> torch.Tensor:
    """y of the docstring above for a batch: rewards / done (B,), next_q_* (B, A) for s', valid_actions (B, A) bool
    marks the actions allowed in s' (None: all). A terminal transition's target is its reward (its s' is never
    evaluated, so it may have no valid action); a non-terminal one without any valid action is an error."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if next_q_online.shape != next_q_target.shape:
        raise ValueError(f"online {tuple(next_q_online.shape)} and target {tuple(next_q_target.shape)} Q differ")
    done = done.to(torch.bool)
    if valid_actions is not None:
        stuck = ~valid_actions.any(dim=-1) & ~done
        if stuck.any():
            raise ValueError(f"non-terminal transitions {stuck.nonzero().flatten().tolist()} have no valid action")
    with torch.no_grad():
        next_actions = masked_argmax(next_q_online, valid_actions)
        next_values = next_q_target.gather(-1, next_actions.unsqueeze(-1)).squeeze(-1)
        next_values = torch.where(done, torch.zeros_like(next_values), next_values)
        return rewards.to(next_values.dtype) + gamma * next_values


def td_loss(q_taken: torch.Tensor, targets: torch.Tensor, kind: str = "mse",
            weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of (Q(s, a) − y)² ("mse") or of the Huber loss with threshold 1 ("huber"); ``weights``
    (same shape) multiply each element before the mean (e.g. 0 to drop a term; the mean still divides by B)."""
    if q_taken.shape != targets.shape:
        raise ValueError(f"q_taken {tuple(q_taken.shape)} and targets {tuple(targets.shape)} must match")
    targets = targets.detach()
    if kind == "mse":
        per = F.mse_loss(q_taken, targets, reduction="none")
    elif kind == "huber":
        per = F.smooth_l1_loss(q_taken, targets, reduction="none", beta=1.0)
    else:
        raise ValueError(f"kind must be 'mse' or 'huber', got {kind!r}")
    if weights is not None:
        per = per * weights.to(per.dtype)
    return per.mean()


def epsilon_schedule(step: int | float, start: float = 0.7, end: float = 0.25, steps: int = 5000,
                     kind: str = "exponential", time_constants: float = 5.0) -> float:
    """ε after ``step`` actions.

    "exponential" (IVOS-W Sec. 4.2: "ε decreases from 0.7 to 0.25 over 5000 steps exponentially"; the authors' code
    has ε = 0.25 + 0.45·exp(−0.5·step/500)): ε = end + (start − end)·exp(−time_constants·step/steps), so ``steps``
    spans ``time_constants`` e-foldings (5: 0.7% of the way left at ``steps``, the code's exp(−step/1000)).
    "linear": start + (end − start)·min(step/steps, 1), constant ``end`` after ``steps``.
    """
    if step < 0 or steps <= 0:
        raise ValueError(f"need step >= 0 and steps > 0, got step={step}, steps={steps}")
    if kind == "exponential":
        return end + (start - end) * math.exp(-time_constants * step / steps)
    if kind == "linear":
        return start + (end - start) * min(step / steps, 1.0)
    raise ValueError(f"kind must be one of {EPSILON_KINDS}, got {kind!r}")


def epsilon_greedy(q: torch.Tensor, epsilon: float, generator: torch.Generator | None = None,
                   valid_actions: torch.Tensor | None = None) -> torch.Tensor:
    """Actions for a batch of Q rows (B, A): with probability ε a uniformly random valid action, else the greedy
    one. Draws (on the CPU) from ``generator``: B uniforms, then B random actions, whatever ε is, so the stream of
    draws does not depend on the Q values."""
    batch, actions = q.shape
    explore = torch.rand(batch, generator=generator) < epsilon
    if valid_actions is None:
        random_actions = torch.randint(0, actions, (batch,), generator=generator)
    else:
        weights = valid_actions.detach().cpu().to(torch.float64)
        if (weights.sum(dim=-1) == 0).any():
            raise ValueError("every row needs at least one valid action")
        random_actions = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
    greedy = masked_argmax(q.detach(), valid_actions).cpu()
    return torch.where(explore, random_actions, greedy).to(q.device)


@torch.no_grad()
def hard_update(target: nn.Module, online: nn.Module) -> None:
    """θ_target ← θ_online (parameters and buffers)."""
    target.load_state_dict(online.state_dict())


def stochastic_hard_update(target: nn.Module, online: nn.Module, probability: float = 0.05,
                           generator: torch.Generator | None = None) -> bool:
    """The IVOS-W authors' rule (`Agent.update_agent`): after each gradient update the target network is hard-copied
    from the online one with probability ``probability`` (0.05), so on average every 1/p = 20 updates, at random
    times. One uniform is drawn from ``generator`` per call. Returns whether it copied."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    copy = bool(torch.rand((), generator=generator) < probability)
    if copy:
        hard_update(target, online)
    return copy
