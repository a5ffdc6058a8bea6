"""`load("ftmu-davis")`: box-initialised multi-object video object segmentation with the trained template-update
agent (FTMU, Sun et al., CVPR 2020).

    model = zoo.load("ftmu-davis")
    labels = model.segment(frames, {1: (x, y, w, h), 2: (x, y, w, h)})   # (N, H, W) uint8, 0 = background

Evaluation is deterministic: the action is the arg-max of the actor (the authors' code samples at validation too).
The instance segmenter is not part of this checkpoint: candidates come from `zoo.vision.proposals.ProposalGenerator`
with the model named by ``proposal_model`` (the zoo's `segmenter-vos` by default, standing in for the paper's
YOLACT), under the settings recorded here.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zoo.ftmu.env import Candidates, FTMUConfig, Tracker
from zoo.ftmu.networks import Actor, FeatureStates, ImageEncoder
from zoo.hub import ZooModel
from zoo.vision import check_rgb


class ProposalCandidates:
    """`zoo.ftmu.env.CandidateSource` over a `ProposalGenerator` (whose disk cache, when it has one, is keyed by the
    video, the frame and the crop)."""

    def __init__(self, generator):
        self.generator = generator

    def __call__(self, video: str, frame_index: int, frame: np.ndarray, region: np.ndarray | None) -> Candidates:
        from zoo.vision.proposals import crop_box

        height, width = frame.shape[:2]
        crop = crop_box(region, height, width) if region is not None else (0, 0, width, height)
        proposals = self.generator(frame, video=video, frame=frame_index, region=None if region is None else crop)
        key = f"{video}:{frame_index}:{crop}"
        ids = tuple(f"{key}:{index}" for index in range(len(proposals)))
        return Candidates(proposals.boxes, proposals.masks, proposals.scores, ids)


class WholeFrameCandidates:
    """A training shortcut (not the paper's): the segmenter runs once per frame on the whole frame, and a search
    region keeps the candidates whose box overlaps it. One cached call per training frame instead of one per
    (frame, region) the policy visits, which on 2 CPU cores is the difference between minutes and hours; evaluation
    and `FTMUSegmenter.segment` segment the search region as the paper does."""

    def __init__(self, source, max_frames: int = 512):
        from collections import OrderedDict

        self.source, self.max_frames = source, max_frames
        self._pools: OrderedDict[tuple[str, int], Candidates] = OrderedDict()  # decoded once, not per visit

    def __call__(self, video: str, frame_index: int, frame: np.ndarray, region: np.ndarray | None) -> Candidates:
        pool = self._pools.get((video, frame_index))
        if pool is None:
            pool = self._pools[video, frame_index] = self.source(video, frame_index, frame, None)
            if len(self._pools) > self.max_frames:
                self._pools.popitem(last=False)
        if region is None or len(pool) == 0:
            return pool
        boxes = pool.boxes
        keep = np.flatnonzero((boxes[:, 0] < region[2]) & (boxes[:, 2] > region[0])
                              & (boxes[:, 1] < region[3]) & (boxes[:, 3] > region[1]))
        return pool.subset(keep)


def proposal_generator(model: str, box_score_thresh: float, detections_per_img: int, cache_dir=None, device="cpu"):
    from zoo.vision.proposals import ProposalGenerator, ProposalSettings

    settings = ProposalSettings(box_score_thresh=box_score_thresh, detections_per_img=detections_per_img)
    return ProposalGenerator(model, settings=settings, cache_dir=cache_dir, device=device)


def xywh_to_corners(box: Sequence[float]) -> np.ndarray:
    x, y, w, h = (float(value) for value in box)
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise ValueError(f"a first-frame box must be (x, y, w, h) with w, h > 0, got {tuple(box)}")
    return np.array([x, y, x + w, y + h])


class FTMUSegmenter(ZooModel):
    """The inference model: frozen ImageNet encoder + actor, and the tracker's configuration."""

    model_type = "ftmu"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        hidden: tuple[int, ...] | list[int] = (2048, 512),
        tracker: dict | None = None,
        proposal_model: str = "segmenter-vos",
        box_score_thresh: float = 0.1,
        detections_per_img: int = 10,
        backbone_weights: str = "random",
        pretrained_backbone: bool = False,
        state_view: str = "frame",
        seed: int = 0,
    ):
        super().__init__()
        self.state_view = state_view
        self.encoder = ImageEncoder(backbone, pretrained=pretrained_backbone, seed=seed)
        self.backbone_weights = self.encoder.weights_source if pretrained_backbone else backbone_weights
        self.actor = Actor(2 * self.encoder.out_features, tuple(hidden))
        self.settings = FTMUConfig(**(tracker or {}))
        self.proposal_model = proposal_model
        self.box_score_thresh, self.detections_per_img = box_score_thresh, detections_per_img
        self._generator = None
        self.eval()

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        config = dict(config if config is not None else getattr(self, "_hub_mixin_config", {}) or {})
        config["pretrained_backbone"] = False
        config["backbone_weights"] = self.backbone_weights
        config["tracker"] = asdict(self.settings)
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def tracker_config(self) -> dict:
        return {field.name: getattr(self.settings, field.name) for field in fields(self.settings)}

    def greedy_policy(self, states: torch.Tensor, jaccards: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.actor(states.to(next(self.actor.parameters()).device)).argmax(dim=-1).cpu()

    def build_tracker(self, candidates=None, cache_dir=None, **overrides) -> Tracker:
        """A `Tracker` with this model's encoder and configuration (``overrides`` change FTMUConfig fields)."""
        if candidates is None:
            if self._generator is None or cache_dir is not None:
                self._generator = proposal_generator(
                    self.proposal_model, self.box_score_thresh, self.detections_per_img, cache_dir,
                    device=next(self.parameters()).device,
                )
            candidates = ProposalCandidates(self._generator)
        config = FTMUConfig(**{**self.tracker_config(), **overrides})
        return Tracker(config, candidates, FeatureStates(self.encoder, view=self.state_view))

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray | str | Path], boxes: dict[int, Sequence[float]],
                video: str = "video", tracker: Tracker | None = None, policy=None) -> np.ndarray:
        """(N, H, W) uint8 label map of ``frames`` (H x W x 3 uint8 RGB arrays or image paths) given the first
        frame's ``{object_id: (x, y, w, h)}`` boxes (ids 1..255)."""
        from datamodules.image_io import read_rgb

        if not boxes:
            raise ValueError("boxes is empty: give at least one {object_id: (x, y, w, h)} box on the first frame")
        for object_id in boxes:
            if not 1 <= int(object_id) <= 254:
                raise ValueError(f"object ids must lie in 1..254 (uint8 labels, 255 is void), got {object_id}")
        tracker = tracker or self.build_tracker()
        policy = policy or self.greedy_policy

        def rgb(index: int) -> np.ndarray:
            item = frames[index]
            return check_rgb(read_rgb(item) if isinstance(item, (str, Path)) else item, f"frames[{index}]")

        first = rgb(0)
        episode = tracker.start(video, 0, first, {int(k): xywh_to_corners(v) for k, v in boxes.items()})
        for index in range(1, len(frames)):
            frame = rgb(index)
            if frame.shape != first.shape:
                raise ValueError(f"frames[{index}] is {frame.shape}, frames[0] is {first.shape}: one video, one size")
            tracker.step(episode, index, frame, policy)
        self.last_episode = episode
        return np.stack(episode.labels)
