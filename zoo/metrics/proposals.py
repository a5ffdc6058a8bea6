"""Proposal coverage: for every ground-truth object, the mask IoU of the best of a frame's proposals.

This is how an instance segmenter serves the VOS methods (FTMU matches a candidate to each target, ALBA groups
proposals into objects): an object no proposal covers is lost whatever the agent does. Reported as the mean best IoU
and the fraction of objects whose best IoU reaches each threshold (0.5, 0.7), over all objects of all frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

THRESHOLDS = (0.5, 0.7)


def mask_ious(proposals: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """proposals (N, H, W) and objects (K, H, W) bool masks -> (K, N) mask IoUs (0 where both masks are empty)."""
    if proposals.shape[1:] != objects.shape[1:]:
        raise ValueError(f"proposal masks {proposals.shape[1:]} and object masks {objects.shape[1:]} differ in size")
    pixels = int(np.prod(objects.shape[1:]))  # explicit: reshape(0, -1) is ambiguous and numpy refuses it
    flat_p = torch.from_numpy(proposals.reshape(len(proposals), pixels)).float()
    flat_o = torch.from_numpy(objects.reshape(len(objects), pixels)).float()
    intersection = flat_o @ flat_p.T
    union = flat_o.sum(1, keepdim=True) + flat_p.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union)).double().numpy()


def best_proposal_ious(proposals: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """(K,) best IoU of any proposal per object (0 when there is no proposal)."""
    ious = mask_ious(proposals, objects)
    return ious.max(1) if ious.shape[1] else np.zeros(len(objects), np.float64)


class ProposalCoverage(Metric):
    """`update(proposal_masks, object_masks)` per frame; `compute()` -> {mean_best_iou, covered@0.5, covered@0.7,
    objects}."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("best_ious", default=[], dist_reduce_fx="cat")

    def update(self, proposals: np.ndarray, objects: np.ndarray) -> None:
        self.best_ious.append(torch.from_numpy(best_proposal_ious(np.asarray(proposals, bool), np.asarray(objects, bool))))

    def compute(self) -> dict[str, float]:
        ious = dim_zero_cat(self.best_ious) if self.best_ious else torch.zeros(0, dtype=torch.float64)
        if len(ious) == 0:
            raise ValueError("ProposalCoverage saw no ground-truth object")
        result = {"mean_best_iou": float(ious.mean()), "objects": int(len(ious))}
        for threshold in THRESHOLDS:
            result[f"covered@{threshold}"] = float((ious >= threshold).double().mean())
        return result
