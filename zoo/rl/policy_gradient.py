"""REINFORCE (Williams 1992) with an empirical per-step baseline, as pure tensor functions.

Shapes: episodes first, then whatever batch/time dimensions the caller has, e.g. (N, B, T). The baseline of a step
is the mean over the N episodes of that step's credit (DRLT's Algorithm 1, line 10), so it is computed inside the
batch and needs no learned value function.
"""

from __future__ import annotations

import torch


def per_step_baseline(credits: torch.Tensor) -> torch.Tensor:
    """b = mean over episodes (dim 0) of the credit of each step; shape of `credits` without dim 0."""
    return credits.mean(dim=0)


def rewards_to_go(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """R_t = Σ_{t' ≥ t} r_t' along the last dimension (time); masked steps add nothing."""
    if mask is not None:
        rewards = rewards * mask
    return rewards.flip(-1).cumsum(-1).flip(-1)


def reinforce_loss(
    log_probs: torch.Tensor,
    credits: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Surrogate loss whose gradient is minus Eq. 7 of DRLT: -(1/N) Σ_i Σ_t ∇ ln π(l_t^i) (R_t^i - b_t).

    log_probs: (N, …, T) log π of the sampled actions, differentiable w.r.t. the policy parameters.
    credits: (N, …, T) the return credited to each action (the step reward, or the reward to go); not differentiated.
    mask: (…, T) or (N, …, T) bool, False where a step does not exist (padding, frames without ground truth).
    Sums over time, averages over episodes and any batch dimensions in between.
    Returns {"loss_actor", "baseline", "advantage"} (the last two detached, for logging and tests).
    """
    if log_probs.shape != credits.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and credits {tuple(credits.shape)} must match")
    credits = credits.detach()
    if mask is None:
        mask = torch.ones_like(credits, dtype=torch.bool)
    mask = mask.expand_as(credits)
    baseline = per_step_baseline(credits)
    advantage = (credits - baseline) * mask
    per_episode = (log_probs * advantage).sum(dim=-1)
    return {"loss_actor": -per_episode.mean(), "baseline": baseline.detach(), "advantage": advantage.detach()}
