"""Discounted returns: the regression targets of a critic, as pure tensor functions."""

from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, gamma: float, mask: torch.Tensor | None = None,
                       bootstrap: torch.Tensor | None = None) -> torch.Tensor:
    """G_t = sum_{i>=t} gamma^(i-t) r_i along the last dimension (ACIS Eq. 6-7; Sutton & Barto Eq. 3.8).

    `rewards` is (..., T). `mask` (same shape, bool) marks the steps that belong to the episode: a
    reward outside it is ignored and its return is 0, so a batch of episodes of different lengths can be
    padded to one T. The recursion G_t = r_t + gamma * G_{t+1} runs backwards, so the cost is O(T).

    `bootstrap` (shape rewards.shape[:-1]) is the value of the state after the last step for episodes that were cut
    off there, not finished: it starts the recursion, so G_t gains gamma^(T-t) * bootstrap. Pass 0 for finished
    episodes; with `mask` it counts only where the last step lies inside the episode.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if mask is not None:
        if mask.shape != rewards.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} differs from rewards shape {tuple(rewards.shape)}")
        rewards = rewards * mask.to(rewards.dtype)
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    if bootstrap is not None:
        if bootstrap.shape != running.shape:
            raise ValueError(f"bootstrap shape {tuple(bootstrap.shape)} differs from {tuple(running.shape)}, the "
                             "rewards' without their last (time) dimension")
        running = bootstrap.to(rewards)
        if mask is not None:
            running = running * mask[..., -1].to(rewards.dtype)
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        returns[..., t] = running
    if mask is not None:
        returns = returns * mask.to(returns.dtype)
    return returns

