"""KITTI car instance scores with Ren & Zemel's definitions (`rec-attend-public/analysis.py`), which ACIS reports.

Instances are the ids other than 0 present in a label map (gaps in the ids do not matter here). Per image, with
IoU(p, g) between every prediction p and ground-truth car g (two empty masks: 0):
- MUCov = Σ_g max_p IoU(p, g) / max(N_gt, 1);
- MWCov = Σ_g |g| / Σ_g' |g'| · max_p IoU(p, g)  (0 for an image without cars);
- FP = number of (non-empty) predictions with IoU 0 against every car; FN = cars with IoU 0 against every prediction;
- SBD as their `f_symmetric_best_dice`: min of the two best-Dice means, each taken over max(N_gt, 1) slots (the
  first N_gt predictions, in id order, padded with empty masks), which differs from the CVPPP script when counts
  differ; |DiC| = |N_pred − N_gt|.
Dataset values are means over images; AvgFP and AvgFN are therefore mean *counts* per image, as in the code (the
ACIS paper calls them fractions). The reference works in float32; these are computed in float64 and agree with it
to about 1e-7.
"""

from __future__ import annotations

import numpy as np

from zoo.metrics.instances import instance_masks, label_map_pair, pairwise_dice, pairwise_iou
from zoo.metrics.per_image import PerImageMeans

SCORE_KEYS = ("MWCov", "MUCov", "FP", "FN", "SBD", "absDiC")
DATASET_KEYS = {"MWCov": "MWCov", "MUCov": "MUCov", "AvgFP": "FP", "AvgFN": "FN", "SBD": "SBD", "AvgAbsDiC": "absDiC"}


def _slot_best_dice(dice: np.ndarray, num_slots: int) -> float:
    """Mean over the first `num_slots` rows (missing rows = empty masks, Dice 0) of the best Dice in each row."""
    best = dice.max(axis=1) if dice.shape[1] else np.zeros(dice.shape[0])
    padded = np.zeros(num_slots)
    kept = min(num_slots, len(best))
    padded[:kept] = best[:kept]
    return float(padded.mean())


def kitti_scores(pred_labels, gt_labels) -> dict:
    """Scores of one image: MWCov, MUCov, FP, FN, SBD, absDiC, plus num_pred, num_gt and the (P, G) IoU matrix."""
    pred, gt = label_map_pair(pred_labels, gt_labels)
    _, pred_masks = instance_masks(pred)
    _, gt_masks = instance_masks(gt)
    num_pred, num_gt = len(pred_masks), len(gt_masks)
    iou = pairwise_iou(pred_masks, gt_masks)
    best_iou = iou.max(axis=0) if num_pred else np.zeros(num_gt)
    areas = gt_masks.sum(axis=(1, 2)).astype(np.float64)
    num_slots = max(num_gt, 1)
    dice = pairwise_dice(pred_masks, gt_masks)
    return {
        "MWCov": float((best_iou * areas).sum() / areas.sum()) if num_gt else 0.0,
        "MUCov": float(best_iou.sum() / num_slots),
        "FP": float((iou.sum(axis=1) == 0).sum()),
        "FN": float((iou.sum(axis=0) == 0).sum()),
        "SBD": min(_slot_best_dice(dice, num_slots), _slot_best_dice(dice.T, num_slots)),
        "absDiC": float(abs(num_pred - num_gt)),
        "num_pred": num_pred,
        "num_gt": num_gt,
        "iou_matrix_pred_x_gt": iou,
    }


class KITTIInstanceMetrics(PerImageMeans):
    """Dataset means of the KITTI scores. `update(pred_labels, gt_labels)` takes (H, W) label maps or (B, H, W)
    batches; `compute()` returns {MWCov, MUCov, AvgFP, AvgFN, SBD, AvgAbsDiC} as float64 tensors; `per_image()`
    the per-image values (MWCov, MUCov, FP, FN, SBD, absDiC) in order."""

    score_keys = SCORE_KEYS
    dataset_keys = DATASET_KEYS

    def score_image(self, pred_labels, gt_labels) -> dict:
        return kitti_scores(pred_labels, gt_labels)
