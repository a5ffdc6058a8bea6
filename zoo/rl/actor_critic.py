"""One-step (TD(0)) actor-critic, as pure tensor functions (Sutton & Barto Sec. 13.5; FTMU Eqs. 8-11).

    δ_t = r_t + γ·V(s_{t+1})·(1 − done_t) − V(s_t)                  (FTMU Eq. 9)
    critic: w ← w + l_c·δ_t·∇_w V(s_t)                             (Eq. 8: semi-gradient, the target is not differentiated)
    actor:  θ ← θ + l_a·∇_θ log π(a_t | s_t)·δ_t, A(s_t, a_t) = δ_t (Eqs. 10-11; δ from the critic before its update)

As losses to minimise with any optimiser: critic ½·δ², actor −log π(a_t|s_t)·δ_t with δ detached, both averaged.
"""

from __future__ import annotations

import torch


def td_errors(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, done: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """δ_t of Eq. 9; ``next_values`` is not differentiated (Eq. 8 differentiates V(s_t) only)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    target = rewards + gamma * next_values.detach() * (~done).to(values.dtype)
    return target - values


def actor_critic_losses(log_probs: torch.Tensor, rewards: torch.Tensor, values: torch.Tensor,
                        next_values: torch.Tensor, done: torch.Tensor, gamma: float) -> dict[str, torch.Tensor]:
    """{"loss_critic", "loss_actor", "td_error"} for a batch of transitions (all tensors of shape (B,))."""
    delta = td_errors(rewards, values, next_values, done, gamma)
    return {
        "loss_critic": 0.5 * delta.pow(2).mean(),
        "loss_actor": -(log_probs * delta.detach()).mean(),
        "td_error": delta.detach(),
    }
