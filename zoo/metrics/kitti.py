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
import torch
from torchmetrics import Metric

from zoo.metrics.instances import instance_masks, pairwise_dice, pairwise_iou

SCORE_KEYS = ("MWCov", "MUCov", "FP", "FN", "SBD", "absDiC")
DATASET_KEYS = {"MWCov": "MWCov", "MUCov": "MUCov", "AvgFP": "FP", "AvgFN": "FN", "SBD": "SBD", "AvgAbsDiC": "absDiC"}


def _as_label_array(labels, what: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) label map, got shape {labels.shape}")
    return labels.astype(np.int64)


def _slot_best_dice(dice: np.ndarray, num_slots: int) -> float:
    """Mean over the first `num_slots` rows (missing rows = empty masks, Dice 0) of the best Dice in each row."""
    best = dice.max(axis=1) if dice.shape[1] else np.zeros(dice.shape[0])
    padded = np.zeros(num_slots)
    kept = min(num_slots, len(best))
    padded[:kept] = best[:kept]
    return float(padded.mean())


def kitti_scores(pred_labels, gt_labels) -> dict:
    """Scores of one image: MWCov, MUCov, FP, FN, SBD, absDiC, plus num_pred, num_gt and the (P, G) IoU matrix."""
    pred = _as_label_array(pred_labels, "the predicted labels")
    gt = _as_label_array(gt_labels, "the ground-truth labels")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
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


class KITTIInstanceMetrics(Metric):
    """Dataset means of the KITTI scores. `update(pred_labels, gt_labels)` takes (H, W) label maps or (B, H, W)
    batches; `compute()` returns {MWCov, MUCov, AvgFP, AvgFN, SBD, AvgAbsDiC} as float64 tensors; `per_image()`
    the per-image values (MWCov, MUCov, FP, FN, SBD, absDiC) in order."""

    is_differentiable = False
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
        scores = kitti_scores(pred_labels, gt_labels)
        for key in SCORE_KEYS:
            getattr(self, key).append(torch.tensor([scores[key]], dtype=torch.float64, device=self.device))

    def _values(self, key: str) -> torch.Tensor:
        values = getattr(self, key)
        if isinstance(values, torch.Tensor):
            return values
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64, device=self.device)

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: self._values(key).mean() for name, key in DATASET_KEYS.items()}

    def per_image(self) -> list[dict[str, float]]:
        columns = {key: self._values(key).tolist() for key in SCORE_KEYS}
        return [dict(zip(SCORE_KEYS, row)) for row in zip(*columns.values())]
