"""OTB one-pass evaluation (OPE): success curve / AUC and precision curve / precision@20.

Reproduces got10k 0.1.3 `ExperimentOTB.report`, itself the Python port of the OTB toolkit's
`perfPlot.m` (seeds §0.3; golden vectors in `shared/golden/otb`):

* boxes are continuous (x, y, w, h) with 1-based pixels; no clipping to the image;
* IoU = intersection / (union + float eps), clipped to [0, 1]; centre = xy + (wh - 1) / 2;
* success(τ) = share of frames with IoU **strictly greater** than τ, τ = linspace(0, 1, 21); AUC = mean of the
  21 points (the toolkit's `perf = mean(bb)`);
* precision(τ) = share of frames with centre error **≤** τ, τ = 0..50 px; precision@20 = element 20;
* a NaN row (ground truth or prediction) gives a NaN IoU / error, which fails every threshold while staying in
  the denominator;
* the tracker is initialised on the first ground-truth box, so the reference overwrites prediction row 0 with
  ground-truth row 0 before scoring. The curve functions and the Metrics do the same unless
  `first_frame_from_gt=False`; `overlap_ratio` and `center_error` are plain per-row geometry and never do;
* curves are computed per sequence and then averaged over sequences (every sequence weighs the same).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
PRECISION_AT = 20  # px; index into the precision curve


def as_boxes(boxes) -> np.ndarray:
    """(N, 4) float64 numpy copy of a tensor, array or nested list of x, y, w, h rows."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().double().numpy()
    array = np.array(boxes, dtype=np.float64)
    if array.ndim == 1 and array.shape == (4,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as x, y, w, h rows, got {array.shape}")
    return array


def _matched(pred, gt, first_frame_from_gt: bool) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = as_boxes(pred), as_boxes(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"predictions have {len(pred)} rows but the ground truth has {len(gt)}: one box per frame")
    if first_frame_from_gt and len(gt):
        pred[0] = gt[0]
    return pred, gt


def overlap_ratio(pred, gt) -> np.ndarray:
    """Per-row IoU of (x, y, w, h) boxes as the reference computes it; NaN where either row is NaN."""
    pred, gt = _matched(pred, gt, first_frame_from_gt=False)
    left = np.maximum(pred[:, 0], gt[:, 0])
    top = np.maximum(pred[:, 1], gt[:, 1])
    right = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
    bottom = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
    intersection = np.maximum(right - left, 0) * np.maximum(bottom - top, 0)
    union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - intersection
    # The eps keeps two zero-area boxes at IoU 0 instead of 0/0, exactly as the reference does.
    return np.clip(intersection / (union + np.finfo(np.float64).eps), 0.0, 1.0)


def center_error(pred, gt) -> np.ndarray:
    """Per-row Euclidean distance between box centres, centre = xy + (wh - 1) / 2; NaN where either row is NaN."""
    pred, gt = _matched(pred, gt, first_frame_from_gt=False)
    centres_pred = pred[:, :2] + (pred[:, 2:] - 1) / 2
    centres_gt = gt[:, :2] + (gt[:, 2:] - 1) / 2
    return np.sqrt(np.sum((centres_pred - centres_gt) ** 2, axis=1))


def success_curve(pred, gt, first_frame_from_gt: bool = True) -> np.ndarray:
    """(21,) share of frames whose IoU exceeds each threshold of SUCCESS_THRESHOLDS."""
    pred, gt = _matched(pred, gt, first_frame_from_gt)
    ious = overlap_ratio(pred, gt)
    with np.errstate(invalid="ignore"):
        return np.mean(ious[:, None] > SUCCESS_THRESHOLDS[None, :], axis=0)


def precision_curve(pred, gt, first_frame_from_gt: bool = True) -> np.ndarray:
    """(51,) share of frames whose centre error is at most each threshold of PRECISION_THRESHOLDS (px)."""
    pred, gt = _matched(pred, gt, first_frame_from_gt)
    errors = center_error(pred, gt)
    with np.errstate(invalid="ignore"):
        return np.mean(errors[:, None] <= PRECISION_THRESHOLDS[None, :], axis=0)


class _SequenceAveragedCurve(Metric):
    """Sum of per-sequence curves and the sequence count: summed across processes, so DDP reduces exactly."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    _num_thresholds: int

    def __init__(self, first_frame_from_gt: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.first_frame_from_gt = first_frame_from_gt
        self.add_state("curve_sum", default=torch.zeros(self._num_thresholds, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("num_sequences", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _sequence_curve(self, pred, gt) -> np.ndarray:
        raise NotImplementedError

    def update(self, pred_boxes, gt_boxes) -> None:
        """Add one sequence: (N, 4) predicted and ground-truth x, y, w, h boxes, one row per frame."""
        curve = self._sequence_curve(pred_boxes, gt_boxes)
        self.curve_sum += torch.as_tensor(curve, dtype=torch.float64, device=self.curve_sum.device)
        self.num_sequences += 1

    def _mean_curve(self) -> torch.Tensor:
        if int(self.num_sequences) == 0:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any sequence was added by update()")
        return self.curve_sum / self.num_sequences


class OTBSuccess(_SequenceAveragedCurve):
    """Sequence-averaged OTB success curve; compute() -> {"curve": (21,) float64, "auc": mean of the curve}."""

    _num_thresholds = len(SUCCESS_THRESHOLDS)

    def _sequence_curve(self, pred, gt) -> np.ndarray:
        return success_curve(pred, gt, self.first_frame_from_gt)

    def compute(self) -> dict[str, torch.Tensor]:
        curve = self._mean_curve()
        return {"curve": curve, "auc": curve.mean()}


class OTBPrecision(_SequenceAveragedCurve):
    """Sequence-averaged OTB precision curve; compute() -> {"curve": (51,) float64, "precision_20": curve[20]}."""

    _num_thresholds = len(PRECISION_THRESHOLDS)

    def _sequence_curve(self, pred, gt) -> np.ndarray:
        return precision_curve(pred, gt, self.first_frame_from_gt)

    def compute(self) -> dict[str, torch.Tensor]:
        curve = self._mean_curve()
        return {"curve": curve, "precision_20": curve[PRECISION_AT]}
