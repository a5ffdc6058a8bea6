"""`load("alba-davis")`: zero-shot multi-object video object segmentation by proposal selection and grouping (ALBA,
Gowda, Eustratiadis et al., BMVC 2020).

    model = zoo.load("alba-davis")
    labels = model.segment(frames)   # frames: list of H x W x 3 uint8 RGB; (N, H, W) uint8, ids 1..20, 0 background

No first-frame mask or box: the model computes proposals (`zoo.vision.proposals`, the model named by
``proposal_model`` under the settings recorded here) and DIS optical flow itself, then groups the proposals frame by
frame with the arg-max of its selection and assignment policies, so an id names the same object over the video.
Pass ``cache_dir`` to keep proposals and flow on disk (a second call on the same video then runs no detector).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zoo.alba.inputs import DEFAULT_MAX_PROPOSALS, EpisodeBuilder
from zoo.alba.module import ASSIGN_RULES, SELECT_RULES, GroupingPolicy
from zoo.alba.networks import ALBANetConfig, AssignmentNetwork, SelectionNetwork
from zoo.hub import ZooModel
from zoo.vision import check_rgb


class ALBASegmenter(GroupingPolicy, ZooModel):
    model_type = "alba"

    def __init__(self, net: dict | None = None, proposal_model: str = "segmenter-vos",
                 box_score_thresh: float = 0.05, detections_per_img: int = 100,
                 max_proposals: int | None = DEFAULT_MAX_PROPOSALS, flow_method: str = "dis"):
        super().__init__()
        self.config = ALBANetConfig(**(net or {}))
        self.selection = SelectionNetwork(self.config)
        self.assignment = AssignmentNetwork(self.config)
        self.proposal_model, self.flow_method = proposal_model, flow_method
        self.box_score_thresh, self.detections_per_img = box_score_thresh, detections_per_img
        self.max_proposals = max_proposals
        self._builders: dict = {}
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def episode_builder(self, cache_dir=None) -> EpisodeBuilder:
        key = None if cache_dir is None else str(cache_dir)
        if key not in self._builders:
            from zoo.vision.flow import FlowEstimator
            from zoo.vision.proposals import ProposalGenerator, ProposalSettings

            settings = ProposalSettings(box_score_thresh=self.box_score_thresh,
                                        detections_per_img=self.detections_per_img)
            proposals = ProposalGenerator(self.proposal_model, settings=settings, cache_dir=cache_dir,
                                          device=self.device)
            self._builders[key] = EpisodeBuilder(proposals, FlowEstimator(self.flow_method, cache_dir=cache_dir),
                                                 max_proposals=self.max_proposals)
        return self._builders[key]

    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray | str | Path], video: str = "video", cache_dir=None,
                builder: EpisodeBuilder | None = None, select: str = "network", assign: str = "network") -> np.ndarray:
        """(N, H, W) uint8 label maps of `frames` (H x W x 3 uint8 RGB arrays or image paths, one size), ids
        1..max_objects consistent over time. `select` / `assign` run the Table 1 baselines instead
        (`GroupingPolicy.rollout`). `video` names the cache entries: give each video its own name."""
        from datamodules.image_io import read_rgb

        if len(frames) == 0:
            raise ValueError("frames is empty: give the video's frames as H x W x 3 uint8 RGB arrays or paths")
        if select not in SELECT_RULES or assign not in ASSIGN_RULES:
            raise ValueError(f"select must be one of {SELECT_RULES}, assign one of {ASSIGN_RULES}")
        images = []
        for index, item in enumerate(frames):
            image = check_rgb(read_rgb(item) if isinstance(item, (str, Path)) else item, f"frames[{index}]")
            if image.shape != images[0].shape if images else False:
                raise ValueError(f"frames[{index}] is {image.shape}, frames[0] is {images[0].shape}: one size")
            images.append(image)
        builder = builder or self.episode_builder(cache_dir)
        episode = builder.episode(video, frames=images)
        return self.rollout(episode, select=select, assign=assign).labels
