"""ALBA's per-frame inputs (Sec. 3.1) computed by the zoo and cached on disk: instance proposals {p_i, f_i, b_i} in
confidence order, and the optical flow (u_t, v_t) of each frame.

- Proposals: `zoo.vision.proposals.ProposalGenerator` on the whole frame (torchvision's COCO Mask R-CNN when its weights
  load, else the zoo's class-agnostic `segmenter-vos`), every detection at score >= 0.05 (the paper's threshold),
  f_i = the 256-d mask-head features averaged spatially, b_i the detector's box. Sorted by decreasing score
  (`confidence_order`), then the first `max_proposals` kept. The cap is this port's: the paper takes every proposal
  above the threshold (up to Mask R-CNN's 100); each proposal costs one selection crop and, once accepted, one
  assignment pass per object, and the low-score tail rarely holds an object the top ones miss.
- Flow: `zoo.vision.flow.FlowEstimator` (DIS by default; the paper used PWC-Net, which torchvision does not ship).
  Frame t's flow is the forward flow t -> t+1; the last frame of a video, which has no successor, takes the negated
  backward flow t -> t-1 (same motion direction to first order). A one-frame video gets zero flow.
- Cache: both estimators cache per (video, frame[s], model, weights, settings) in `cache_dir`, so a second run over
  the same frames does no detector and no flow call (`EpisodeBuilder.detector_calls`, `.flow_calls`).

Episodes are lazy: `VideoFrames` reads a frame's image, proposals and flow when the rollout asks for it, so a long
480p video never holds every frame's proposal masks at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence as SequenceABC
from typing import Callable, Sequence

import numpy as np

from zoo.alba.env import confidence_order
from zoo.alba.module import Episode, Frame

DEFAULT_MAX_PROPOSALS = 20


class EpisodeBuilder:
    """Turns a video (frames as RGB arrays, or a `datamodules.vos_io.VideoSequence`) into an ALBA `Episode`."""

    def __init__(self, proposals=None, flow=None, cache_dir: str | os.PathLike | None = None,
                 max_proposals: int | None = DEFAULT_MAX_PROPOSALS, proposal_model: str = "auto"):
        if proposals is None:
            from zoo.vision.proposals import ProposalGenerator

            proposals = ProposalGenerator(proposal_model, cache_dir=cache_dir)
        if flow is None:
            from zoo.vision.flow import FlowEstimator

            flow = FlowEstimator("dis", cache_dir=cache_dir)
        if max_proposals is not None and max_proposals < 1:
            raise ValueError(f"max_proposals must be at least 1 (or None for all), got {max_proposals}")
        self.proposals, self.flow, self.max_proposals = proposals, flow, max_proposals

    @property
    def detector_calls(self) -> int:
        return self.proposals.model_calls

    @property
    def flow_calls(self) -> int:
        return self.flow.model_calls

    def describe(self) -> dict:
        return {"proposal_model": self.proposals.model_name, "proposal_weights": self.proposals.weights_tag,
                "proposal_settings": self.proposals.cache_key(None)["settings"], "flow": self.flow.cache_key(),
                "max_proposals": self.max_proposals}

    def frame(self, video: str, images: Callable[[int], np.ndarray], count: int, t: int,
              labels: np.ndarray | None = None) -> Frame:
        image = images(t)
        found = self.proposals(image, video=video, frame=t)
        order = confidence_order(found.scores)[: self.max_proposals]
        return Frame(masks=found.masks[order], features=found.features[order], flow=self._flow(video, images, count, t),
                     image=image, labels=labels, boxes=found.boxes[order].astype(np.float64))

    def _flow(self, video: str, images: Callable[[int], np.ndarray], count: int, t: int) -> np.ndarray:
        if count == 1:
            height, width = images(t).shape[:2]
            return np.zeros((height, width, 2), np.float32)
        if t + 1 < count:
            return self.flow(images(t), images(t + 1), video=video, source_frame=t, target_frame=t + 1)
        return -self.flow(images(t), images(t - 1), video=video, source_frame=t, target_frame=t - 1)

    def episode(self, video: str, frames: Sequence[np.ndarray] | None = None, sequence=None,
                labels: Sequence[np.ndarray] | None = None, indices: Sequence[int] | None = None) -> Episode:
        """An episode over `frames` (a list of RGB arrays) or a `VideoSequence` (its masks become the labels unless
        `labels` is given); `indices` picks a clip (frame numbers of the video, used as cache names)."""
        if (frames is None) == (sequence is None):
            raise ValueError("give either frames (RGB arrays) or a VideoSequence")
        if sequence is not None:
            count = len(sequence)
            read = sequence.frame
            if labels is None and all(sequence.mask(i) is not None for i in (indices or range(count))):
                labels = sequence.mask
        else:
            count = len(frames)
            read = frames.__getitem__
        indices = list(range(count)) if indices is None else [int(i) for i in indices]
        label_of = labels if callable(labels) else ((lambda i: labels[i]) if labels is not None else (lambda i: None))
        return Episode(VideoFrames(self, video, read, count, indices, label_of), name=video)


class VideoFrames(SequenceABC):
    """The frames of an episode, built on access (proposals and flow come from the cache after the first time)."""

    def __init__(self, builder: EpisodeBuilder, video: str, read: Callable[[int], np.ndarray], count: int,
                 indices: list[int], labels: Callable[[int], np.ndarray | None]):
        self.builder, self.video, self.read, self.count = builder, video, read, count
        self.indices, self.labels = indices, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(len(self)))]
        t = self.indices[position]
        label = self.labels(t)
        return self.builder.frame(self.video, self.read, self.count, t,
                                  None if label is None else np.asarray(label))

    @property
    def shape(self) -> tuple[int, int]:
        return self.read(self.indices[0]).shape[:2]

    def ground_truth(self) -> np.ndarray:
        """(T, H, W) labels without computing proposals or flow."""
        labels = [self.labels(t) for t in self.indices]
        if any(label is None for label in labels):
            raise ValueError(f"episode {self.video!r}: every frame needs its ground-truth label map for training")
        return np.stack([np.asarray(label) for label in labels])

    def materialise(self) -> list[Frame]:
        return [self[i] for i in range(len(self))]
