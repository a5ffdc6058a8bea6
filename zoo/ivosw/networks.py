"""IVOS-W's recommendation network ("Brain"): a Q-value per frame from the per-frame state [q_n, h_n] (Eq. 1).

The paper calls it a Bi-LSTM and leaves the details to its supplement; the shapes here are the authors' code's
(`models/agent.py: Brain`, seeds.md §2):
- per-frame encoder Linear(2, 128)-ReLU-Linear(128, 128);
- ONE LSTMCell(128, 128) run over the frames forwards (n = 0 → N−1) and backwards (n = N−1 → 0), the same cell with
  the same weights for both directions (not a two-cell bidirectional LSTM), each direction from a zero state; the
  cell has no bias (the code builds it with ``bias=False``);
- per frame concat(h_fw[n], h_bw[n]) (256) → ReLU → Linear(256, 128) → ReLU → Linear(128, 1).
Input (B, N, 2), output (B, N); the recommended frame is the arg-max (`recommend`). Nothing depends on N, so the net
trained on N' = 25 frames runs on whole test videos.

The policy and target networks are two copies of this module (`zoo.rl.dqn.hard_update`).
The quality network (ResNet-50 on the ROI with the probability map) is not here yet.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.rl.dqn import masked_argmax

STATE_FEATURES = 2  # [q_n, h_n]


class Brain(nn.Module):
    def __init__(self, hidden: int = 128, head_hidden: int = 128, lstm_bias: bool = False):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(STATE_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.cell = nn.LSTMCell(hidden, hidden, bias=lstm_bias)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * hidden, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states (B, N, 2) → Q-values (B, N)."""
        if states.dim() != 3 or states.shape[-1] != STATE_FEATURES:
            raise ValueError(f"states must be (B, N, {STATE_FEATURES}), got {tuple(states.shape)}")
        batch, frames, _ = states.shape
        features = self.encoder(states)  # (B, N, H)
        # Both directions run together as one batch of 2B through the one cell: rows :B read frame n, rows B: read
        # frame N−1−n. `torch.lstm` with the cell's own weights is the cell's arithmetic stepped in C++ (4× faster
        # than a Python loop of `self.cell` on a 100-frame video; equal to it up to float rounding, tested).
        sequence = torch.cat([features, features.flip(1)], dim=0)  # (2B, N, H)
        zeros = sequence.new_zeros(1, sequence.shape[0], self.cell.hidden_size)
        weights = [self.cell.weight_ih, self.cell.weight_hh]
        if self.cell.bias:
            weights += [self.cell.bias_ih, self.cell.bias_hh]
        hidden, _, _ = torch.lstm(sequence, (zeros, zeros), weights, self.cell.bias, 1, 0.0, self.training, False,
                                  True)  # (2B, N, H), backward rows in reversed frame order
        forward, backward = hidden[:batch], hidden[batch:].flip(1)
        return self.head(torch.cat([forward, backward], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def recommend(self, states: torch.Tensor, valid_frames: torch.Tensor | None = None) -> torch.Tensor:
        """The arg-max-Q frame per row (B,); ``valid_frames`` (B, N) bool excludes frames. The paper masks nothing
        (a frame may be recommended again; Eq. 4 only discourages it), so None is the paper's policy."""
        return masked_argmax(self(states), valid_frames)
