"""The DRLT tracking MDP (Zhang et al. 2017, §3.2): boxes, the rewards of Eq. 2 and Eq. 3, and the video environment.

Locations are the paper's l = (x, y, w, h) ∈ [0, 1] (§3.1.2): (x, y) the box *centre* relative to the image width
and height, (w, h) the box size relative to them. OTB boxes are (x, y, w, h) in pixels with a 1-based top-left
corner, so the pixel box covers [x - 1, x - 1 + w] in continuous 0-based coordinates.

The environment plays Algorithm 1 over B episode slots at once. An episode is one target of one training video,
from a random start frame (s_1 = its box there), forwards or backwards in time, optionally mirrored, for up to
`episode_length` frames; every step hands out the next T frames of each slot (feature maps, the location vector
s_t and the ground truth), and the LSTM state of an episode is carried from one T-frame chunk to the next, so
training sees what tracking sees (one recurrent pass that knows the box on its first frame only). A slot whose
episode ends starts a new one.

Why not the paper's "every video from frame 1": with one target per video and one start, s_1 takes as many values
as there are videos (five, for the first published model), and a network can learn each video's path by heart
instead of following s_1. Random targets (several per frame where the data has them), random starts, time reversal
and mirroring make s_1 the only way to know what to track. `episode_length=None, reverse/flip 0` with one target per
video and `random_start=False` is the paper's setting.
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
class TrainingTrack:
    """One target of one training video: cached feature maps (F, C, S, S) and its normalised boxes (F, 4), NaN rows
    where the target has no box. Several tracks of one video share one feature tensor."""

    name: str
    features: torch.Tensor
    locations: torch.Tensor
    weight: float = 1.0  # relative chance of being drawn for an episode

    def __post_init__(self):
        if len(self.features) == 0:
            raise ValueError(f"training track {self.name!r} has no frames")
        if len(self.features) != len(self.locations):
            raise ValueError(
                f"training track {self.name!r}: {len(self.features)} feature rows but {len(self.locations)} boxes"
            )
        if int(self.known.sum()) < 2:
            raise ValueError(f"training track {self.name!r} has fewer than two frames with a box: drop it")

    @property
    def known(self) -> torch.Tensor:
        return torch.isfinite(self.locations).all(-1)


@dataclass
class Chunk:
    """What one environment step hands to the agent, all batched over slots (B) and time (T)."""

    features: torch.Tensor  # (B, T, C, S, S)
    location_inputs: torch.Tensor  # (B, T, 4): s_t, the ground truth where an episode starts, zeros elsewhere
    targets: torch.Tensor  # (B, T, 4): g_t, NaN-free (invalid frames hold zeros)
    valid: torch.Tensor  # (B, T) bool: frame exists and has a ground-truth box
    restart: torch.Tensor  # (B,) bool: a new episode starts at step 0 of this chunk (reset the recurrent state)
    first_features: torch.Tensor  # (B, C, S, S): the episode's first frame (the template); meaningful where restart
    first_boxes: torch.Tensor  # (B, 4): s_1 of the episode


_SLOT_FIELDS = ("track", "start", "direction", "flip", "length", "position")


class TrackingEnvironment:
    """Hands out consecutive T-frame chunks of B episodes (Algorithm 1, lines 2, 4 and 13).

    Its whole state is a few int64 tensors per slot and the generator's state, so it checkpoints
    `weights_only`-safely and a resumed run draws the same episodes as an uninterrupted one.
    """

    def __init__(self, tracks: list[TrainingTrack], slots: int = 8, episode_length: int | None = 40,
                 random_start: bool = True, reverse_prob: float = 0.5, flip_prob: float = 0.5, seed: int = 0):
        if not tracks:
            raise ValueError("the tracking environment needs at least one training track")
        if slots < 1:
            raise ValueError(f"slots must be ≥ 1, got {slots}")
        if episode_length is not None and episode_length < 2:
            raise ValueError(f"episode_length must be ≥ 2 frames, got {episode_length}")
        shapes = {tuple(track.features.shape[1:]) for track in tracks}
        if len(shapes) != 1:
            raise ValueError(f"training tracks disagree on the feature shape: {sorted(shapes)}")
        self.tracks = tracks
        self.episode_length = episode_length
        self.random_start = random_start
        self.reverse_prob = reverse_prob
        self.flip_prob = flip_prob
        self.weights = torch.tensor([track.weight for track in tracks], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self.slots = {name: torch.zeros(slots, dtype=torch.long) for name in _SLOT_FIELDS}

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _new_episode(self, slot: int) -> None:
        index = int(torch.multinomial(self.weights, 1, generator=self.generator))
        known = torch.nonzero(self.tracks[index].known).flatten()
        direction = -1 if self._uniform() < self.reverse_prob else 1
        if self.random_start:
            start = int(known[int(torch.randint(len(known), (), generator=self.generator))])
        else:
            start = int(known[0]) if direction == 1 else int(known[-1])
        available = len(self.tracks[index].features) - start if direction == 1 else start + 1
        if available < 2:  # started on the last frame in its direction: turn round
            direction, available = -direction, (start + 1 if direction == 1 else len(self.tracks[index].features) - start)
        length = available if self.episode_length is None else min(available, self.episode_length)
        values = {"track": index, "start": start, "direction": direction, "flip": int(self._uniform() < self.flip_prob),
                  "length": length, "position": 0}
        for name, value in values.items():
            self.slots[name][slot] = value

    def next_chunk(self, steps: int) -> Chunk:
        slots = len(self.slots["track"])
        shape = tuple(self.tracks[0].features.shape[1:])
        features = torch.zeros(slots, steps, *shape, dtype=self.tracks[0].features.dtype)
        location_inputs = torch.zeros(slots, steps, 4)
        targets = torch.zeros(slots, steps, 4)
        valid = torch.zeros(slots, steps, dtype=torch.bool)
        restart = torch.zeros(slots, dtype=torch.bool)
        first_features = torch.zeros(slots, *shape, dtype=features.dtype)
        first_boxes = torch.zeros(slots, 4)
        for b in range(slots):
            if int(self.slots["position"][b]) >= int(self.slots["length"][b]):
                self._new_episode(b)
            track = self.tracks[int(self.slots["track"][b])]
            start, direction = int(self.slots["start"][b]), int(self.slots["direction"][b])
            position, length = int(self.slots["position"][b]), int(self.slots["length"][b])
            count = min(steps, length - position)
            frames = start + direction * torch.arange(position, position + count)
            torch.index_select(track.features, 0, frames, out=features[b, :count])
            boxes = track.locations[frames]
            if self.slots["flip"][b]:
                boxes = boxes * torch.tensor([-1.0, 1, 1, 1]) + torch.tensor([1.0, 0, 0, 0])
            known = torch.isfinite(boxes).all(-1)
            targets[b, :count] = torch.where(known[:, None], boxes, torch.zeros_like(boxes))
            valid[b, :count] = known
            if position == 0:
                restart[b] = True
                location_inputs[b, 0] = boxes[0]
                first_boxes[b] = boxes[0]
            self.slots["position"][b] = position + count
        mirrored = self.slots["flip"].bool()
        if mirrored.any():  # one batched copy for every mirrored slot
            features[mirrored] = features[mirrored].flip(-1)
        first_features[restart] = features[restart, 0]
        return Chunk(features, location_inputs, targets, valid, restart, first_features, first_boxes)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), **{name: value.clone() for name, value in self.slots.items()}}

    def load_state_dict(self, state: dict) -> None:
        tracks = torch.as_tensor(state["track"])
        if tracks.shape != self.slots["track"].shape:
            raise ValueError(
                f"checkpoint holds {tracks.numel()} episode slots but this environment has {len(self.slots['track'])}: "
                "resume with the same --slots"
            )
        if int(tracks.max()) >= len(self.tracks):
            raise ValueError("the checkpoint's episodes refer to training tracks this run does not have: resume with "
                             "the same training data")
        self.generator.set_state(state["generator"])
        self.slots = {name: torch.as_tensor(state[name], dtype=torch.long).clone() for name in _SLOT_FIELDS}
