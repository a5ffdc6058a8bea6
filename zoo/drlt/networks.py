"""DRLT's networks (§3.1, §4.2): a frozen CNN observation encoder, the trainable FC + LSTM, the Gaussian policy.

Substitution: the paper's encoder is YOLO fine-tuned on PASCAL VOC, whose first FC layer sees the whole 7×7 grid,
so its features say *where* things are. YOLO is not available here; a timm backbone takes its place, and its last
feature map is average-pooled to a small grid (default 3×3) and flattened, which keeps that "where" (a global pool
would throw it away). The backbone stays frozen, as in the paper.
"""

from __future__ import annotations

import cv2
import numpy as np
import timm
import torch
from torch import nn
from torch.nn import functional as F


class FrozenBackbone(nn.Module):
    """Frames -> one feature vector per frame: timm features of the last stage, pooled to grid×grid, flattened."""

    def __init__(self, name: str, input_size: int, grid_size: int):
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-1,))
        self.body.requires_grad_(False)
        self.input_size = input_size
        self.grid_size = grid_size
        self.feature_dim = self.body.feature_info.channels()[-1] * grid_size * grid_size
        data_config = timm.data.resolve_model_data_config(self.body)
        # Derived from the backbone's name, so not stored in the checkpoint.
        self.register_buffer("mean", torch.tensor(data_config["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_config["std"]).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: BatchNorm keeps its running statistics

    def preprocess(self, frames: list[np.ndarray]) -> torch.Tensor:
        """H×W×3 uint8 RGB frames -> (B, 3, S, S) normalised tensor (each frame resized to S×S, as YOLO does)."""
        size = (self.input_size, self.input_size)
        resized = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
        images = torch.from_numpy(resized).to(self.mean.device).permute(0, 3, 1, 2).float().div_(255)
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feature_map = self.body(images)[-1]
        pooled = F.adaptive_avg_pool2d(feature_map, self.grid_size).flatten(1)
        # Standardised per frame, so the FC above sees the same input range whatever the backbone's weights (a
        # randomly initialised timm backbone gives features of std ~1e-3, below layer_norm's eps).
        centred = pooled - pooled.mean(-1, keepdim=True)
        return centred / centred.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)


class RecurrentTracker(nn.Module):
    """o_t = ReLU(FC([i_t, s_t])) (the paper's extra FC layer), h_t = LSTM(h_{t-1}, o_t) (Eq. 1), μ_t = h_t[-4:].

    μ_t is read straight from the last four hidden units, as in the paper, so it lies in (-1, 1); a location needs
    [0, 1], so boxes are clamped to [0, 1] where they are used (`as_location`), never squashed by a sigmoid (whose
    image of (-1, 1) would be only (0.27, 0.73)).
    """

    def __init__(self, feature_dim: int, hidden_size: int):
        super().__init__()
        if hidden_size < 4:
            raise ValueError(f"hidden_size must be ≥ 4 (μ is the last four hidden units), got {hidden_size}")
        self.observation = nn.Linear(feature_dim + 4, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=1, batch_first=True)

    def forward(
        self,
        features: torch.Tensor,
        location_inputs: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """features (B, T, D), location_inputs s_t (B, T, 4) -> μ (B, T, 4), (h, c) each (1, B, hidden)."""
        observation = F.relu(self.observation(torch.cat([features, location_inputs], dim=-1)))
        hidden, state = self.lstm(observation, state)
        return hidden[..., -4:], state


def as_location(mu_or_sample: torch.Tensor) -> torch.Tensor:
    """A valid location (x, y, w, h) ∈ [0, 1] from the raw network output or a policy sample."""
    return mu_or_sample.clamp(0.0, 1.0)


class GaussianLocationPolicy:
    """π(l | Z_t) = N(μ_t, σ² I) (Eq. 8), σ fixed; sampled with its own generator so runs resume exactly."""

    def __init__(self, sigma: float, seed: int):
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, mu: torch.Tensor, episodes: int) -> torch.Tensor:
        """N sampled location sequences around μ (…) -> (N, …), no gradient (the actions)."""
        noise = torch.randn((episodes, *mu.shape), generator=self.generator).to(mu.device)
        return mu.detach().unsqueeze(0) + self.sigma * noise

    def log_prob(self, mu: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """ln π(l | μ), summed over the four coordinates; differentiable w.r.t. μ (Eq. 9 is its gradient)."""
        return torch.distributions.Normal(mu.unsqueeze(0), self.sigma).log_prob(actions).sum(-1)
