"""CVPPP leaf segmentation scores as the organisers compute them (LSC scoring functions; SBD as `LSC_Evaluation.m`).

Conventions of the official script, kept on purpose so that numbers compare with the leaderboard:
- the smallest label of an image is its background (normally 0, but an image without background pixels has a leaf
  as its smallest label);
- labels are assumed consecutive: every id between the smallest and the largest is a leaf, so an unused id counts
  as an empty leaf (best Dice 0) and enters |DiC| (renumber predictions 1..K to avoid that);
- Dice of two empty masks is 0.

BestDice(A, B) = mean over A's leaves of the best Dice against any of B's leaves; SBD = min(BestDice(pred, gt),
BestDice(gt, pred)); FBD = Dice of the two foregrounds; DiC = (max − min label of pred) − (max − min label of gt).
Dataset values are means over images.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from zoo.metrics.instances import instance_masks, pairwise_dice

SCORE_KEYS = ("SBD", "BestDice_pred_gt", "BestDice_gt_pred", "FBD", "DiC", "absDiC")


def _as_label_array(labels, what: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) label map, got shape {labels.shape}")
    return labels.astype(np.int64)


def best_dice(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """BestDice(A, B) with the official conventions (see the module docstring)."""
    low_a, high_a = int(labels_a.min()), int(labels_a.max())
    low_b, high_b = int(labels_b.min()), int(labels_b.max())
    if high_a == low_a:
        return 0.0
    _, masks_a = instance_masks(labels_a, ids=np.arange(low_a + 1, high_a + 1))
    _, masks_b = instance_masks(labels_b, ids=np.arange(low_b + 1, high_b + 1))
    if len(masks_b) == 0:
        return 0.0
    return float(pairwise_dice(masks_a, masks_b).max(axis=1).sum() / (high_a - low_a))


def foreground_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    pred_fg, gt_fg = pred != pred.min(), gt != gt.min()
    total = int(pred_fg.sum()) + int(gt_fg.sum())
    return 2.0 * int((pred_fg & gt_fg).sum()) / total if total > 0 else 0.0


def cvppp_scores(pred_labels, gt_labels) -> dict[str, float]:
    """Scores of one image: SBD, BestDice_pred_gt, BestDice_gt_pred, FBD, DiC, absDiC."""
    pred = _as_label_array(pred_labels, "the predicted labels")
    gt = _as_label_array(gt_labels, "the ground-truth labels")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    pred_gt, gt_pred = best_dice(pred, gt), best_dice(gt, pred)
    dic = (int(pred.max()) - int(pred.min())) - (int(gt.max()) - int(gt.min()))
    return {"SBD": min(pred_gt, gt_pred), "BestDice_pred_gt": pred_gt, "BestDice_gt_pred": gt_pred,
            "FBD": foreground_dice(pred, gt), "DiC": dic, "absDiC": abs(dic)}


class CVPPPMetrics(Metric):
    """Dataset means of the CVPPP scores. `update(pred_labels, gt_labels)` takes one (H, W) label map each, or
    (B, H, W) batches; `compute()` returns {SBD, BestDice_pred_gt, BestDice_gt_pred, FBD, DiC, absDiC} as float64
    tensors. `per_image()` gives the scores of every image seen, in order."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in SCORE_KEYS:
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def update(self, pred_labels, gt_labels) -> None:
        if pred_labels.ndim == 3:
            for pred, gt in zip(pred_labels, gt_labels, strict=True):
                self.update(pred, gt)
            return
        scores = cvppp_scores(pred_labels, gt_labels)
        for key in SCORE_KEYS:
            getattr(self, key).append(torch.tensor([scores[key]], dtype=torch.float64, device=self.device))

    def _values(self, key: str) -> torch.Tensor:
        values = getattr(self, key)
        if isinstance(values, torch.Tensor):  # already concatenated by a distributed sync
            return values
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64, device=self.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return {key: self._values(key).mean() for key in SCORE_KEYS}

    def per_image(self) -> list[dict[str, float]]:
        columns = {key: self._values(key).tolist() for key in SCORE_KEYS}
        return [dict(zip(SCORE_KEYS, row)) for row in zip(*columns.values())]
