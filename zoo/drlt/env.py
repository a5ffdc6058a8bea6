"""The DRLT tracking MDP (Zhang et al. 2017, §3.2): boxes, the rewards of Eq. 2 and Eq. 3, and the video environment.

Locations are the paper's l = (x, y, w, h) ∈ [0, 1] (§3.1.2): (x, y) the box *centre* relative to the image width
and height, (w, h) the box size relative to them. OTB boxes are (x, y, w, h) in pixels with a 1-based top-left
corner, so the pixel box covers [x - 1, x - 1 + w] in continuous 0-based coordinates.

The environment plays Algorithm 1 over several training videos at once: each video has a cursor; every step hands
out its next T frames (features, the location vector s_t and the ground truth); the LSTM state of a video is carried
from one T-frame chunk to the next, so training sees what tracking sees (one long recurrent pass that knows the box
on the first frame only). A video whose training frames are used up starts again from its first frame, with a fresh
state and s_1 = its ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def otb_to_normalized(boxes: np.ndarray | torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """OTB pixel boxes (…, 4) xywh 1-based -> the paper's (centre x, centre y, w, h) relative to (height, width)."""
    height, width = image_size
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).float()
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([(x - 1 + w / 2) / width, (y - 1 + h / 2) / height, w / width, h / height], dim=-1)


def normalized_to_otb(locations: torch.Tensor | np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Inverse of `otb_to_normalized`, returned as float64 numpy (…, 4)."""
    height, width = image_size
    locations = np.asarray(torch.as_tensor(locations).detach().cpu(), dtype=np.float64)
    cx, cy, w, h = (locations[..., i] for i in range(4))
    return np.stack([cx * width - w * width / 2 + 1, cy * height - h * height / 2 + 1, w * width, h * height], -1)


def distance_reward(locations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2: r = -avg(|l - g|) - max(|l - g|), the mean and max taken over the four coordinates of l."""
    error = (locations - targets).abs()
    return -error.mean(-1) - error.amax(-1)


def iou_reward(locations: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 3: r = |l ∩ g| / |l ∪ g| for centre-size boxes (IoU does not change when each axis is rescaled, so
    normalised coordinates give the pixel IoU). Boxes of non-positive size have zero area."""
    half_l = locations[..., 2:].clamp(min=0) / 2
    half_g = targets[..., 2:].clamp(min=0) / 2
    top_left = torch.maximum(locations[..., :2] - half_l, targets[..., :2] - half_g)
    bottom_right = torch.minimum(locations[..., :2] + half_l, targets[..., :2] + half_g)
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    union = (4 * half_l.prod(-1)) + (4 * half_g.prod(-1)) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-12), torch.zeros_like(union))


REWARDS = {"eq2": distance_reward, "eq3": iou_reward}


@dataclass
class TrainingVideo:
    """One video's training frames: precomputed features (F_len, D) and normalised ground truth (F_len, 4)."""

    name: str
    features: torch.Tensor
    locations: torch.Tensor

    def __post_init__(self):
        if len(self.features) == 0:
            raise ValueError(f"training video {self.name!r} has no frames")
        if len(self.features) != len(self.locations):
            raise ValueError(
                f"training video {self.name!r}: {len(self.features)} feature rows but {len(self.locations)} boxes"
            )
        if not torch.isfinite(self.locations[0]).all():
            raise ValueError(
                f"training video {self.name!r}: the first frame has no valid ground-truth box, so s_1 is undefined; "
                "drop the leading frames without a box"
            )


@dataclass
class Chunk:
    """What one environment step hands to the agent, all batched over videos (B) and time (T)."""

    features: torch.Tensor  # (B, T, D)
    location_inputs: torch.Tensor  # (B, T, 4): s_t, the ground truth where the video (re)starts, zeros elsewhere
    targets: torch.Tensor  # (B, T, 4): g_t, NaN-free (invalid frames hold zeros)
    valid: torch.Tensor  # (B, T) bool: frame exists and has a ground-truth box
    restart: torch.Tensor  # (B,) bool: the recurrent state of this video must be reset before the chunk


class TrackingEnvironment:
    """Hands out consecutive T-frame chunks of several training videos (Algorithm 1, lines 2, 4 and 13).

    Its whole state is the cursor per video (an int64 tensor), so it checkpoints `weights_only`-safely.
    """

    def __init__(self, videos: list[TrainingVideo], steps_per_chunk: int = 10):
        if not videos:
            raise ValueError("the tracking environment needs at least one training video")
        if steps_per_chunk < 1:
            raise ValueError(f"steps_per_chunk (T) must be ≥ 1, got {steps_per_chunk}")
        dims = {video.features.shape[1] for video in videos}
        if len(dims) != 1:
            raise ValueError(f"training videos disagree on the feature size: {sorted(dims)}")
        self.videos = videos
        self.steps_per_chunk = steps_per_chunk
        self.cursors = torch.zeros(len(videos), dtype=torch.long)

    @property
    def chunks_per_epoch(self) -> int:
        """Steps for the longest video to pass once through its frames (shorter ones wrap round)."""
        return max(-(-len(video.features) // self.steps_per_chunk) for video in self.videos)

    def next_chunk(self) -> Chunk:
        T, D = self.steps_per_chunk, self.videos[0].features.shape[1]
        B = len(self.videos)
        features = torch.zeros(B, T, D)
        location_inputs = torch.zeros(B, T, 4)
        targets = torch.zeros(B, T, 4)
        valid = torch.zeros(B, T, dtype=torch.bool)
        restart = torch.zeros(B, dtype=torch.bool)
        for b, video in enumerate(self.videos):
            start = int(self.cursors[b])
            if start >= len(video.features):
                start = 0
            restart[b] = start == 0
            stop = min(start + T, len(video.features))
            features[b, : stop - start] = video.features[start:stop]
            truth = video.locations[start:stop]
            known = torch.isfinite(truth).all(-1)
            targets[b, : stop - start] = torch.where(known[:, None], truth, torch.zeros_like(truth))
            valid[b, : stop - start] = known
            if start == 0:
                location_inputs[b, 0] = video.locations[0]
            self.cursors[b] = stop
        return Chunk(features, location_inputs, targets, valid, restart)

    def state_dict(self) -> dict:
        return {"cursors": self.cursors.clone()}

    def load_state_dict(self, state: dict) -> None:
        cursors = torch.as_tensor(state["cursors"], dtype=torch.long)
        if cursors.shape != self.cursors.shape:
            raise ValueError(
                f"checkpoint holds cursors for {cursors.numel()} videos but this environment has {len(self.videos)}: "
                "resume with the same training data"
            )
        self.cursors = cursors.clone()
