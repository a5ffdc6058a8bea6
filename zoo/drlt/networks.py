"""DRLT's networks (§3.1, §4.2): a frozen CNN observation encoder, the trainable FC + LSTM, the Gaussian policy.

Substitution: the paper's encoder is YOLO fine-tuned on PASCAL VOC, whose first FC layer sees the whole 7×7 grid,
so its features say *where* things are. YOLO is not available here; a frozen timm backbone takes its place. One
stage of it gives a feature map per frame (`FrozenBackbone`), which is what gets cached; everything the FC layer
sees is derived from that map by `RecurrentTracker`, in one of two observations:

- ``"paper"``: the map average-pooled to grid×grid, flattened and standardised, beside s_t (the normalised first box
  on the first frame, zeros after it): the paper's o_t = [i_t, s_t].
- ``"template"`` (default for new models): the paper's o_t plus what ties it to the target named by s_1. YOLO
  detects VOC classes, so the paper's features already point at "the person"; ImageNet features of a backbone do
  not, and with s_1 as 4 inputs beside ~1,000 feature dimensions a trained tracker ignored s_1 (the issue that
  introduced this mode measured it). The template observation adds, every frame: the cosine similarity map between
  the target's descriptor (the first frame's feature cells inside s_1) and the current map; its soft-argmax over the
  whole frame and inside a Gaussian window around the previous estimate μ_{t-1} (fed back detached; the sampled
  actions l_t are still never fed back); the previous estimate and the first box. These small inputs are
  multiplied by `location_scale` so that the FC layer cannot drown them. Nothing here is trained: the FC, the LSTM
  and the policy are the paper's.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import timm
import torch
from torch import nn
from torch.nn import functional as F

OBSERVATIONS = ("paper", "template")
OUTPUTS = ("absolute", "residual")


class FrozenBackbone(nn.Module):
    """Frames -> one feature map per frame, (B, C, S, S): stage `feature_stage` of a timm backbone (frozen)."""

    def __init__(self, name: str, input_size: int, feature_stage: int = -1):
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(feature_stage,))
        self.body.requires_grad_(False)
        # channels-last convolutions run ~1.4x faster on CPU (measured: 25 -> 36 frames/s for Lite0 at 224 on 2
        # cores) with the same results to 1e-6; the state dict stays contiguous, as safetensors and caches expect.
        self.body = self.body.to(memory_format=torch.channels_last)
        self.register_state_dict_post_hook(_contiguous_state)
        self.input_size = input_size
        self.feature_stage = feature_stage
        channels = self.body.feature_info.channels()[-1]
        size = math.ceil(input_size / self.body.feature_info.reduction()[-1])
        self.feature_shape = (channels, size, size)
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
        return ((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feature_map = self.body(images.contiguous(memory_format=torch.channels_last))[-1].contiguous()
        if tuple(feature_map.shape[1:]) != self.feature_shape:
            raise RuntimeError(f"backbone gave {tuple(feature_map.shape[1:])}, expected {self.feature_shape}")
        return unit_cells(feature_map)


def _contiguous_state(module, state_dict, prefix, local_metadata) -> None:
    for key, value in state_dict.items():
        if key.startswith(prefix) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


def unit_cells(feature_maps: torch.Tensor) -> torch.Tensor:
    """(…, C, S, S) -> the same with every cell's C-vector of unit length (float32): the template match is then a
    dot product, computed once per frame here instead of once per training step."""
    return F.normalize(feature_maps.float(), dim=-3)


def standardised_grid(feature_maps: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(…, C, S, S) -> (…, C·g²): average-pooled to g×g as `adaptive_avg_pool2d` pools (as one matrix product, ~10x
    faster on CPU for S not divisible by g), flattened, standardised per frame (so the FC sees the same range
    whatever the backbone's weights: a random timm backbone gives features of std ~1e-3, below layer_norm's eps)."""
    size = feature_maps.shape[-1]
    pool_1d = torch.zeros(grid_size, size, device=feature_maps.device)
    for index in range(grid_size):
        start, stop = (index * size) // grid_size, -(-((index + 1) * size) // grid_size)
        pool_1d[index, start:stop] = 1.0 / (stop - start)
    pool = torch.kron(pool_1d, pool_1d)  # (g², S²): cell (i, j) of the grid averages rows i and columns j
    pooled = (feature_maps.float().flatten(-2) @ pool.T).flatten(-2)  # a plain matrix product, no permuted copy
    centred = pooled - pooled.mean(-1, keepdim=True)
    return centred / centred.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)


def cell_centres(size: int, device=None) -> torch.Tensor:
    return (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size


def template_descriptor(feature_map: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) unit-cell map of the first frame, (B, 4) centre-size box s_1 -> (B, C) unit descriptor of the
    target: the normalised sum of the cells whose centres lie inside the box (at least the cell under the centre)."""
    size = feature_map.shape[-1]
    centres = cell_centres(size, feature_map.device)
    half = (box[:, 2:] / 2).clamp(min=0.5 / size)  # (B, 2): never narrower than one cell
    inside_x = (centres[None, :] - box[:, :1]).abs() <= half[:, :1]  # (B, S)
    inside_y = (centres[None, :] - box[:, 1:2]).abs() <= half[:, 1:]
    mask = (inside_y[:, :, None] & inside_x[:, None, :]).float()  # (B, S, S)
    return F.normalize(torch.einsum("bchw,bhw->bc", feature_map.float(), mask), dim=1)


class RecurrentTracker(nn.Module):
    """o_t = ReLU(FC(observation_t)) (the paper's extra FC layer), h_t = LSTM(h_{t-1}, o_t) (Eq. 1), μ_t = h_t[-4:].

    `output="residual"` reads the last four hidden units as a move instead: μ_t = μ_{t-1} + residual_scale·h_t[-4:]
    (μ_0 = s_1, the previous estimate fed back detached). An untrained network then repeats the first box instead of
    drawing random boxes, and the box size is kept unless the network changes it: with REINFORCE's noisy gradient,
    learning where to move from there was several times faster than learning absolute boxes from scratch. The
    paper's reading is `output="absolute"`.

    μ_t is read straight from the last four hidden units, as in the paper, so it lies in (-1, 1); a location needs
    [0, 1], so boxes are clamped to [0, 1] where they are used (`as_location`), never squashed by a sigmoid (whose
    image of (-1, 1) would be only (0.27, 0.73)).
    """

    def __init__(self, feature_shape: tuple[int, int, int], hidden_size: int, observation: str = "paper",
                 grid_size: int = 3, location_scale: float = 1.0, window: float = 0.15, temperature: float = 0.05,
                 output: str = "absolute", residual_scale: float = 0.5):
        super().__init__()
        if hidden_size < 4:
            raise ValueError(f"hidden_size must be ≥ 4 (μ is the last four hidden units), got {hidden_size}")
        if observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {observation!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.residual_scale = residual_scale
        channels, size, _ = feature_shape
        self.feature_shape = tuple(feature_shape)
        self.observation_kind = observation
        self.grid_size = grid_size
        self.location_scale = location_scale
        self.window = window
        self.temperature = temperature
        observation_dim = channels * grid_size * grid_size + 4  # grid_size 0: no global features (template only)
        if observation == "template":
            observation_dim += size * size + 6 + 8
        self.observation = nn.Linear(observation_dim, hidden_size)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=1, batch_first=True)
        if output == "residual":
            self._start_without_moving()

    @torch.no_grad()
    def _start_without_moving(self) -> None:
        """Zero the cell-gate rows of the four output units, so that their cell, hence μ_t - μ_{t-1}, starts at 0
        (a random initialisation would make the untrained tracker drift by a random move every frame); their
        gradients are not zero, so they learn to move."""
        hidden = self.lstm.hidden_size
        rows = slice(3 * hidden - 4, 3 * hidden)  # PyTorch orders the gates i, f, g, o
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(self.lstm, name)[rows] = 0.0

    def _lstm_step(self, observation: torch.Tensor, state):
        """One step of `self.lstm` (same weights and result; `torch.lstm_cell` is ~5x faster than a length-1 call)."""
        if state is None:
            zeros = observation.new_zeros(1, observation.shape[0], self.lstm.hidden_size)
            state = (zeros, zeros)
        hidden, cell = torch.lstm_cell(observation, (state[0][0], state[1][0]), self.lstm.weight_ih_l0,
                                       self.lstm.weight_hh_l0, self.lstm.bias_ih_l0, self.lstm.bias_hh_l0)
        return hidden.unsqueeze(0), cell.unsqueeze(0)

    def _soft_argmax(self, scores: torch.Tensor) -> torch.Tensor:
        """(…, S, S) scores -> (…, 3): the softmax-weighted cell centre (x, y) and the peak score."""
        centres = cell_centres(scores.shape[-1], scores.device)
        weights = torch.softmax(scores.flatten(-2) / self.temperature, dim=-1).view_as(scores)
        return torch.stack([(weights.sum(-2) * centres).sum(-1), (weights.sum(-1) * centres).sum(-1),
                            scores.amax((-2, -1))], dim=-1)

    def _windowed(self, similarity: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """(B, S, S) similarity, (B, 4) previous estimate -> (B, 3) soft-argmax inside a Gaussian window around it."""
        centres = cell_centres(similarity.shape[-1], similarity.device)
        distance2 = (centres[None, None, :] - previous[:, None, None, 0]) ** 2 \
            + (centres[None, :, None] - previous[:, None, None, 1]) ** 2
        return self._soft_argmax(similarity * torch.exp(-distance2 / (2 * self.window ** 2)))

    def initial_state(self, first_map: torch.Tensor, first_box: torch.Tensor) -> dict:
        """The per-episode state before frame 1: no LSTM state yet, the target's descriptor, the previous estimate."""
        state = {"lstm": None, "template_box": first_box.float(), "previous": first_box.float()}
        if self.observation_kind == "template":
            state["descriptor"] = template_descriptor(first_map, first_box.float())
        return state

    def forward(self, feature_maps: torch.Tensor, location_inputs: torch.Tensor, state: dict) -> tuple[torch.Tensor,
                                                                                                       dict]:
        """feature_maps (B, T, C, S, S) with unit cells (`unit_cells`; float16 is fine), s_t (B, T, 4), the episode
        state -> μ (B, T, 4), the state after frame T."""
        feature_maps = feature_maps.float()
        if self.grid_size > 0:
            grid = standardised_grid(feature_maps, self.grid_size)
        else:
            grid = feature_maps.new_zeros(*feature_maps.shape[:2], 0, dtype=torch.float32)
        location_inputs = location_inputs * self.location_scale
        if self.observation_kind == "paper" and self.output == "absolute":  # no feedback: one LSTM call
            observation = F.relu(self.observation(torch.cat([grid, location_inputs], dim=-1)))
            hidden, lstm_state = self.lstm(observation, state["lstm"])
            return hidden[..., -4:], {**state, "lstm": lstm_state}
        lstm_state, previous, outputs = state["lstm"], state["previous"], []
        if self.observation_kind == "template":  # everything but the window is known for the whole chunk
            batch, steps, _, size, _ = feature_maps.shape
            similarity = (state["descriptor"][:, None, None, :] @ feature_maps.flatten(-2)).view(batch, steps, size,
                                                                                                  size)
            global_match = self._soft_argmax(similarity)  # (B, T, 3)
        for t in range(feature_maps.shape[1]):
            inputs = [grid[:, t], location_inputs[:, t]]
            if self.observation_kind == "template":
                small = torch.cat([global_match[:, t], self._windowed(similarity[:, t], previous), previous,
                                   state["template_box"]], dim=1) * self.location_scale
                inputs += [similarity[:, t].flatten(1), small]
            observation = F.relu(self.observation(torch.cat(inputs, dim=-1)))
            lstm_state = self._lstm_step(observation, lstm_state)
            mu = lstm_state[0][0, :, -4:]
            if self.output == "residual":
                mu = previous + self.residual_scale * mu
            previous = as_location(mu.detach())
            outputs.append(mu)
        return torch.stack(outputs, dim=1), {**state, "lstm": lstm_state, "previous": previous}


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
