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

from zoo.metrics.instances import instance_masks, label_map_pair, pairwise_dice
from zoo.metrics.per_image import PerImageMeans

SCORE_KEYS = ("SBD", "BestDice_pred_gt", "BestDice_gt_pred", "FBD", "DiC", "absDiC")


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
    pred, gt = label_map_pair(pred_labels, gt_labels)
    pred_gt, gt_pred = best_dice(pred, gt), best_dice(gt, pred)
    dic = (int(pred.max()) - int(pred.min())) - (int(gt.max()) - int(gt.min()))
    return {"SBD": min(pred_gt, gt_pred), "BestDice_pred_gt": pred_gt, "BestDice_gt_pred": gt_pred,
            "FBD": foreground_dice(pred, gt), "DiC": dic, "absDiC": abs(dic)}


class CVPPPMetrics(PerImageMeans):
    """Dataset means of the CVPPP scores. `update(pred_labels, gt_labels)` takes one (H, W) label map each, or
    (B, H, W) batches; `compute()` returns {SBD, BestDice_pred_gt, BestDice_gt_pred, FBD, DiC, absDiC} as float64
    tensors. `per_image()` gives the scores of every image seen, in order."""

    higher_is_better = True
    score_keys = SCORE_KEYS

    def score_image(self, pred_labels, gt_labels) -> dict:
        return cvppp_scores(pred_labels, gt_labels)
