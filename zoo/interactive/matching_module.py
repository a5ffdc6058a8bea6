"""Training the matching engine's key head (`zoo.interactive.matching_engine`) on (memory frames, query frame) pairs.

A sample is one video, a query frame q and 1–3 memory frames of the same video (distinct from q, within
``max_gap`` frames of it). The memory frames' ground-truth masks, area-averaged onto the feature grid
(`grid_masks`), are read to q by the network's memory read; the loss is the cross-entropy of the read probabilities
against q's ground truth on the grid (`grid_targets`: the label covering most of each cell; DAVIS void 255 and cells
mostly void are ignored), on at most ``query_points`` random labelled cells of q (the read costs P·M·P per sample;
sampling query cells keeps a CPU step short without changing the expectation of the loss).

The backbone is frozen, so its features are computed once per frame (`TrainingVideo.build`) and kept as float16;
a training step runs only the key head and the read. `PairDataset` indexes samples by a global position so that
`EpochRangeSampler` gives every epoch new pairs, deterministic in (seed, epoch): a resumed run sees the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from zoo.interactive.matching_engine import (
    MatchingNetwork, frames_tensor, grid_masks, grid_targets, memory_read, network_size, pool_memory,
)

VOID = 255


@dataclass
class TrainingVideo:
    """Cached inputs of one training video: backbone features (T, C, h, w) float16, memory masks (T, K + 1, h, w),
    grid targets (T, h, w) int64 (255 ignored)."""

    name: str
    features: torch.Tensor
    memory: list[torch.Tensor]
    targets: torch.Tensor
    num_objects: int

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    @torch.no_grad()
    def build(cls, network: MatchingNetwork, name: str, frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
              num_objects: int, short_side: int, chunk: int = 8) -> "TrainingVideo":
        height, width = frames[0].shape[:2]
        size = network_size(height, width, short_side)
        grid = (size[0] // 8, size[1] // 8)
        features = []
        for begin in range(0, len(frames), chunk):
            features.append(network.features(frames_tensor(frames[begin:begin + chunk], size)).half())
        memory = [torch.from_numpy(grid_masks(label, num_objects, grid)) for label in labels]
        targets = torch.from_numpy(np.stack([grid_targets(label, num_objects, grid) for label in labels]))
        return cls(name, torch.cat(features), memory, targets, int(num_objects))


class PairDataset(torch.utils.data.Dataset):
    """Sample i (any non-negative int below ``size``): (video index, query frame, memory frames), a function of
    (seed, i) only. Videos are drawn in proportion to the square root of their length (long videos do not swamp the
    short ones); 1, 2 or 3 memory frames with probabilities 0.5, 0.3, 0.2 (fewer when the video is shorter)."""

    def __init__(self, videos: Sequence[TrainingVideo], seed: int = 0, max_gap: int = 30, size: int = 10 ** 9):
        usable = [index for index, video in enumerate(videos) if len(video) >= 2]
        if not usable:
            raise ValueError("need at least one training video with two frames or more")
        self.videos, self.usable, self.seed, self.max_gap, self.size = videos, usable, seed, max_gap, size
        weights = np.sqrt([len(videos[index]) for index in usable])
        self.weights = weights / weights.sum()

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[int, int, tuple[int, ...]]:
        rng = np.random.default_rng([self.seed, int(index)])
        video = int(self.usable[rng.choice(len(self.usable), p=self.weights)])
        length = len(self.videos[video])
        query = int(rng.integers(length))
        near = [t for t in range(max(0, query - self.max_gap), min(length, query + self.max_gap + 1)) if t != query]
        count = min(len(near), int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])))
        memory = tuple(sorted(int(t) for t in rng.choice(near, size=count, replace=False)))
        return video, query, memory


class EpochRangeSampler(torch.utils.data.Sampler):
    """Epoch e visits samples e·n .. (e + 1)·n − 1 of a `PairDataset`: new pairs every epoch, the same on resume."""

    def __init__(self, per_epoch: int):
        self.per_epoch, self.epoch = per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self):
        return iter(range(self.epoch * self.per_epoch, (self.epoch + 1) * self.per_epoch))


class MatchingModule(L.LightningModule):
    """The key head and temperature of `MatchingNetwork`, trained by cross-entropy of the memory read. ``videos``
    (the cached `TrainingVideo` list) is set by the caller and is not part of the checkpoint."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", key_dim: int = 64, hidden: int = 128,
                 lr: float = 1e-3, weight_decay: float = 1e-4, query_points: int = 512, memory_pool: int = 2,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.network = MatchingNetwork(backbone, key_dim, hidden)
        self.videos: list[TrainingVideo] = []
        self._generator = torch.Generator().manual_seed(seed)

    def sample_loss(self, video: TrainingVideo, query: int, memory: Sequence[int],
                    generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Cross-entropy of one sample (None when the query has no labelled cell)."""
        frames = [*memory, query]
        keys = self.network.keys(video.features[frames].float())  # (M + 1, D, h, w)
        dim = keys.shape[1]
        target = video.targets[query].flatten()
        labelled = torch.nonzero(target != VOID).flatten()
        if not len(labelled):
            return None
        if self.hparams.query_points and len(labelled) > self.hparams.query_points:
            pick = torch.randperm(len(labelled), generator=generator or self._generator)[:self.hparams.query_points]
            labelled = labelled[pick]
        query_keys = keys[-1].flatten(1).transpose(0, 1)[labelled]  # (Q, D)
        memory_keys, masks = pool_memory(keys[:-1], torch.stack([video.memory[t] for t in memory]),
                                         self.hparams.memory_pool)  # (M, D, h', w'), (M, C, h', w')
        memory_keys = memory_keys.flatten(2).transpose(1, 2).reshape(-1, dim)  # (M·P', D)
        masks = masks.flatten(2).transpose(1, 2).reshape(-1, masks.shape[1])  # (M·P, C)
        probs = memory_read(query_keys, memory_keys, masks, self.network.temperature)
        return F.nll_loss(torch.log(probs.clamp_min(1e-6)), target[labelled])

    def batch_loss(self, batch) -> torch.Tensor:
        losses = [self.sample_loss(self.videos[video], query, memory) for video, query, memory in batch]
        losses = [loss for loss in losses if loss is not None]
        if not losses:
            return self.network.log_temperature * 0.0
        return torch.stack(losses).mean()

    def training_step(self, batch, batch_index):
        loss = self.batch_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/temperature", self.network.temperature.detach(), batch_size=len(batch))
        return loss

    def configure_optimizers(self):
        head = list(self.network.key_head.parameters())  # the temperature takes no weight decay
        return torch.optim.AdamW([{"params": head, "weight_decay": self.hparams.weight_decay},
                                  {"params": [self.network.log_temperature], "weight_decay": 0.0}],
                                 lr=self.hparams.lr)


def collate_pairs(batch: list) -> list:
    return list(batch)


__all__ = ["EpochRangeSampler", "MatchingModule", "PairDataset", "TrainingVideo", "collate_pairs"]
