"""`DRLTTracker`: the published DRLT inference network (frozen backbone + FC + LSTM), boxes in OTB xywh throughout.

    tracker = zoo.load("drlt-otb")
    boxes = tracker.track(frames, init_box)   # frames: H×W×3 uint8 RGB arrays or image paths; boxes (N, 4)

At test time the policy is its mean μ_t (σ = 0, §4.2) and the whole video is one recurrent pass that is told the
box on the first frame only (s_1). Frame 1's output is the given box, as OTB's one-pass evaluation expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from datamodules.image_io import read_rgb
from zoo.drlt.env import normalized_to_otb, otb_to_normalized
from zoo.drlt.networks import FrozenBackbone, RecurrentTracker, as_location, unit_cells
from zoo.hub import ZooModel

Frame = np.ndarray | str | Path


def read_frame(frame: Frame, index: int) -> np.ndarray:
    """An H×W×3 uint8 RGB frame from an array or an image path, with an error that names the culprit."""
    if isinstance(frame, (str, Path)):
        return read_rgb(frame)
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"frame {index}: expected an H×W×3 uint8 RGB array, got shape {frame.shape} dtype {frame.dtype}"
        )
    return frame


def check_initial_box(init_box, image_size: tuple[int, int]) -> np.ndarray:
    box = np.asarray(init_box, dtype=np.float64).reshape(-1)
    height, width = image_size
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"init_box must be four finite numbers (x, y, w, h) in OTB pixels, got {init_box!r}")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"init_box {box.tolist()} has a non-positive width or height")
    # OTB is 1-based: the image spans pixels 1..width, i.e. the continuous range [0, width] after x - 1.
    if x - 1 >= width or y - 1 >= height or x - 1 + w <= 0 or y - 1 + h <= 0:
        raise ValueError(
            f"init_box {box.tolist()} (OTB x, y, w, h, 1-based) lies outside the {width}×{height} image: "
            "give the first frame's box in pixel coordinates of that frame"
        )
    return box


@contextmanager
def flushed_denormals():
    """Denormal floats (trained LSTM gates, a randomly initialised backbone's tiny activations) run ~100x slower on
    x86 CPUs (measured here: 120 vs >10,000 fps for the LSTM); flushing them to zero cannot move a box."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


class DRLTTracker(ZooModel):
    """Deep RL Tracker (Zhang et al. 2017). All init arguments are JSON primitives (they become config.json).

    feature_batch_size: frames per backbone call. On a 2-core CPU, 4 frames per call tracked more than twice as fast
    end to end as 32 (`python -m recipes.benchmark drlt --feature-batch-size N` measures it on your machine).

    backbone_weights only records where the frozen weights came from (`zoo.backbones`: "hub", "package:<name>" or
    "random"; "random-init" in checkpoints written before that module): the weights themselves are part of this
    module's state, so a loaded tracker never downloads anything.
    """

    model_type = "drlt"

    def __init__(
        self,
        backbone: str = "mobilenetv3_small_100",
        input_size: int = 224,
        grid_size: int = 3,
        hidden_size: int = 256,
        backbone_weights: str = "random-init",
        feature_batch_size: int = 4,
        observation: str = "paper",
        feature_stage: int = -1,
        location_scale: float = 1.0,
        window: float = 0.15,
        temperature: float = 0.05,
        output: str = "absolute",
        residual_scale: float = 0.5,
    ):
        super().__init__()
        self.backbone = FrozenBackbone(backbone, input_size, feature_stage)
        self.recurrent = RecurrentTracker(self.backbone.feature_shape, hidden_size, observation, grid_size,
                                          location_scale, window, temperature, output, residual_scale)
        self.backbone_weights = backbone_weights
        self.feature_batch_size = feature_batch_size

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape of one frame's cached features, (C, S, S): a feature map, from which the observation is derived."""
        return self.backbone.feature_shape

    @torch.no_grad()
    def encode(self, frames: Iterable[Frame]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Frozen feature maps of every frame with unit cells, (N, C, S, S) float16 (half the cache and memory; the
        observation is computed in float32), and the common (height, width); checks the frames agree in size."""
        batches, batch, image_size = [], [], None
        for index, frame in enumerate(frames):
            frame = read_frame(frame, index)
            if image_size is None:
                image_size = frame.shape[:2]
            elif frame.shape[:2] != image_size:
                raise ValueError(
                    f"frame {index} is {frame.shape[1]}×{frame.shape[0]} but frame 0 is "
                    f"{image_size[1]}×{image_size[0]}: every frame of a video must have the same size"
                )
            batch.append(frame)
            if len(batch) == self.feature_batch_size:
                with flushed_denormals():
                    batches.append(self.backbone(self.backbone.preprocess(batch)))
                batch = []
        if batch:
            with flushed_denormals():
                batches.append(self.backbone(self.backbone.preprocess(batch)))
        if image_size is None:
            raise ValueError("the video is empty: track() needs at least one frame")
        return torch.cat(batches).cpu().half(), image_size

    @torch.no_grad()
    def predict_locations(self, features: torch.Tensor, init_location: torch.Tensor) -> torch.Tensor:
        """DRLT-LSTM: precomputed feature maps (N, C, S, S) and the normalised first box (4,) -> μ as locations (N, 4)."""
        if features.ndim != 4 or tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(f"features must be (N, {', '.join(map(str, self.feature_shape))}), got "
                             f"{tuple(features.shape)}")
        if len(features) == 0:
            raise ValueError("the video is empty: tracking needs at least one frame")
        device = self.recurrent.observation.weight.device
        features = unit_cells(features.to(device))  # idempotent: callers may pass raw maps
        first = init_location.to(device).float().view(1, 4)
        location_inputs = torch.zeros(1, len(features), 4, device=device)
        location_inputs[0, 0] = first[0]
        with flushed_denormals():
            state = self.recurrent.initial_state(features[:1], first)
            mu, _ = self.recurrent(features.unsqueeze(0), location_inputs, state)
        return as_location(mu[0]).cpu()

    def track_features(self, features: torch.Tensor, init_box, image_size: tuple[int, int]) -> np.ndarray:
        """Track from precomputed features (the paper's DRLT-LSTM mode): returns (N, 4) OTB boxes."""
        box = check_initial_box(init_box, image_size)
        locations = self.predict_locations(features, otb_to_normalized(box, image_size))
        boxes = normalized_to_otb(locations, image_size)
        boxes[0] = box
        return boxes

    def track(self, frames: Sequence[Frame], init_box) -> np.ndarray:
        """Track one object through a video: (N, 4) float64 OTB boxes (x, y, w, h, 1-based), row 0 = init_box."""
        if len(frames) == 0:
            raise ValueError("the video is empty: track() needs at least one frame")
        first = read_frame(frames[0], 0)
        check_initial_box(init_box, first.shape[:2])  # before the costly encoding
        features, image_size = self.encode([first, *frames[1:]])
        return self.track_features(features, init_box, image_size)
