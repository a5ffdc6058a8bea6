"""VOT long-term tracking precision / recall / F-score (VOT2018-LT, LTB35: FTMU's tracking experiment).

Reproduces vot-toolkit 0.9.0 `vot.analysis.longterm` (`determine_thresholds`, `compute_tpr_curves` and the
`pr_curve` / `f_curve` / `average_tpr` analyses; seeds §0.6; golden vectors in `shared/golden/vot_lt`):

* a tracker reports, for every frame, a region and a confidence. Per-frame overlaps are computed as the toolkit's
  rasteriser does: each of x, y, w, h is rounded to an integer (float32 then round-half-to-even, as its
  `Rectangle` stores and `np.round`s them), the box covers pixel columns x .. x + w - 1 and rows y .. y + h - 1, and
  only the pixels inside the image (`bounds` = (width, height)) count. Overlap = intersection / union in pixels;
* an absent region (a NaN row: the ground truth of a frame without the target, or a prediction that reports no
  box) is empty. Two empty regions overlap 1 (the absence was reported correctly); empty against non-empty is 0.
  The toolkit's degenerate-box conventions are kept: a pair whose joint extent (taken with an empty region's extent
  as (0, 0, 0, 0)) is at most one pixel wide or tall overlaps 1, and one whose joint extent clipped to the image is
  at most one pixel wide or tall overlaps 0;
* thresholds: the confidences of all frames of all sequences, pooled, NaN dropped, sorted in descending order; with
  more than `resolution - 2` of them, `resolution - 2` are taken at indices round(linspace(d, n - d, resolution - 2)),
  d = floor(n / (resolution - 2)), otherwise all of them; then +inf is put first and -inf last (100 by default);
* per sequence, a frame is *reported at τ* when its confidence is >= τ (a NaN confidence is never reported, not even
  at τ = -inf). Pr(τ) = mean overlap over the reported frames (1 when none is), Re(τ) = sum of those overlaps /
  number of frames whose ground truth is not NaN (0 when none is reported). A prediction of NaN is an empty region
  that still counts as reported when its confidence passes τ: it scores 1 on frames without the target, 0 otherwise;
* known toolkit quirk (votchallenge/toolkit issue #122, open; fix proposed in PR #123): since two empty regions
  overlap 1, a frame without the target that the tracker reports as empty with a confidence >= τ adds 1 to the
  recall *numerator* although the denominator counts visible frames only, so recall (and F) can exceed 1 (an oracle
  that reports the empty region on every absent frame gets Re = all frames / visible frames at τ = -inf). This is
  reproduced by default; `visible_only_recall=True` sums the recall numerator over visible frames only (the
  definition of Lukežič et al., arXiv 1804.07056), which changes nothing when no such frame exists (as in the golden
  vectors);
* Pr and Re curves are averaged over sequences (every sequence weighs the same), F(τ) = 2 Pr Re / (Pr + Re) on the
  averaged curves (0 where Pr + Re = 0, where the toolkit would divide by zero), and the reported precision,
  recall and F-score are those at the first τ of maximal F.

The first frame is scored like any other (as in the golden vectors). In result files the toolkit writes an
initialisation marker there (an empty region) with no confidence; `zoo.evaluation.vot_lt` reads it as an empty region
with a NaN confidence, so that frame is never reported and counts as one missed visible frame in the recall.

The 2018 challenge itself ran the MATLAB toolkit (`toolkit-legacy`, `analyze_precision_recall.m`), which differs:
frames of all sequences are pooled into one Pr / Re computation instead of averaging per-sequence curves, and
undefined (NaN) overlaps are scored 0. Numbers from this module are the Python toolkit's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

RESOLUTION = 100  # number of thresholds, +inf and -inf included (the toolkit's default)


def as_regions(boxes, what: str = "boxes") -> np.ndarray:
    """(N, 4) float64 copy of x, y, w, h rows (tensor, array or nested list); a row with any NaN becomes all NaN."""
    from zoo.metrics.otb import as_boxes

    try:
        array = as_boxes(boxes)
    except ValueError as error:
        raise ValueError(f"{what}: {error} (NaN row = no box)") from None
    if np.isinf(array).any():
        row = int(np.flatnonzero(np.isinf(array).any(axis=1))[0])
        raise ValueError(f"{what}: row {row} {array[row].tolist()} is infinite; write NaN,NaN,NaN,NaN for no box")
    array[np.isnan(array).any(axis=1)] = np.nan
    return array


def _as_vector(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.array(values, dtype=np.float64)
    if array.ndim == 0:
        array = array[None]
    if array.ndim != 1:
        raise ValueError(f"{what} must be one value per frame, got shape {array.shape}")
    return array


def _extents(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive integer pixel extents (x0, y0, x1, y1) as the toolkit's `_bounds_rectangle`, and the empty rows.

    Empty rows get the extent (0, 0, 0, 0), exactly as the toolkit gives empty regions."""
    empty = np.isnan(boxes).any(axis=1)
    rounded = np.round(np.where(empty[:, None], 0.0, boxes).astype(np.float32)).astype(np.float64)
    x, y, w, h = rounded.T
    extents = np.stack([x, y, x + w - 1, y + h - 1], axis=1)
    extents[empty] = 0.0
    return extents, empty


def region_overlaps(pred, gt, bounds: tuple[int, int] | None = None) -> np.ndarray:
    """Per-frame overlap of predicted and ground-truth x, y, w, h rows (NaN row = empty region).

    `bounds` is the image (width, height), as the toolkit's `sequence.size`: pixels outside it do not count
    (None: unbounded, the toolkit's `bounded=False`)."""
    pred, gt = as_regions(pred, "predictions"), as_regions(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"{len(pred)} predicted rows for {len(gt)} ground-truth rows: one region per frame")
    ext_p, empty_p = _extents(pred)
    ext_g, empty_g = _extents(gt)
    union = np.concatenate([np.minimum(ext_p[:, :2], ext_g[:, :2]), np.maximum(ext_p[:, 2:], ext_g[:, 2:])], axis=1)
    if bounds is not None:
        width, height = (int(v) for v in bounds)
        raster = np.stack([np.maximum(union[:, 0], 0), np.maximum(union[:, 1], 0),
                           np.minimum(union[:, 2], width - 1), np.minimum(union[:, 3], height - 1)], axis=1)
    else:
        raster = union

    def pixels(extents: np.ndarray, empty: np.ndarray) -> np.ndarray:
        # The region's pixels inside the raster window; empty regions have none.
        clipped = np.concatenate([np.maximum(extents[:, :2], raster[:, :2]),
                                  np.minimum(extents[:, 2:], raster[:, 2:])], axis=1)
        clipped[empty] = (0, 0, -1, -1)
        return clipped

    box_p, box_g = pixels(ext_p, empty_p), pixels(ext_g, empty_g)

    def area(box: np.ndarray) -> np.ndarray:
        return np.maximum(box[:, 2] - box[:, 0] + 1, 0) * np.maximum(box[:, 3] - box[:, 1] + 1, 0)

    inter_w = np.maximum(np.minimum(box_p[:, 2], box_g[:, 2]) - np.maximum(box_p[:, 0], box_g[:, 0]) + 1, 0)
    inter_h = np.maximum(np.minimum(box_p[:, 3], box_g[:, 3]) - np.maximum(box_p[:, 1], box_g[:, 1]) + 1, 0)
    intersection = inter_w * inter_h
    union_area = area(box_p) + area(box_g) - intersection
    overlaps = np.where(union_area > 0, intersection / np.maximum(union_area, 1), 0.0)
    overlaps[(raster[:, 0] >= raster[:, 2]) | (raster[:, 1] >= raster[:, 3])] = 0.0
    overlaps[(union[:, 0] >= union[:, 2]) | (union[:, 1] >= union[:, 3])] = 1.0  # both empty (or degenerate)
    return overlaps


def count_visible(gt) -> int:
    """Frames whose ground truth is a region (not a NaN row): the recall denominator."""
    return int(visible_frames(gt).sum())


def determine_thresholds(confidences, resolution: int = RESOLUTION) -> np.ndarray:
    """Confidence thresholds from pooled confidences (an array, or an iterable of per-sequence arrays), descending,
    +inf first and -inf last: `resolution` values when there are more than `resolution - 2` finite-or-infinite
    (non-NaN) confidences, all of them + 2 otherwise."""
    if resolution < 3:
        raise ValueError(f"resolution must be at least 3 (+inf, one threshold, -inf), got {resolution}")
    if isinstance(confidences, (np.ndarray, torch.Tensor)):
        pooled = _as_vector(confidences, "confidences")
    else:
        parts = [_as_vector(part, "confidences") for part in confidences]
        pooled = np.concatenate(parts) if parts else np.zeros(0)
    scores = np.sort(pooled[~np.isnan(pooled)])[::-1]
    inner = resolution - 2
    if len(scores) > inner:
        delta = len(scores) // inner
        scores = scores[np.round(np.linspace(delta, len(scores) - delta, num=inner)).astype(np.int64)]
    return np.concatenate([[math.inf], scores, [-math.inf]])


def pr_curves(overlaps, confidence, n_visible: int, thresholds, visible=None) -> tuple[np.ndarray, np.ndarray]:
    """One sequence's precision and recall at each threshold, from its per-frame overlaps and confidences.

    With `visible` (a per-frame bool mask of the frames showing the target), the recall numerator sums only the
    reported frames that show the target (`visible_only_recall`); without it, every reported frame (the toolkit)."""
    overlaps, confidence = _as_vector(overlaps, "overlaps"), _as_vector(confidence, "confidence")
    thresholds = _as_vector(thresholds, "thresholds")
    if overlaps.shape != confidence.shape:
        raise ValueError(f"{len(confidence)} confidences for {len(overlaps)} frames: one confidence per frame")
    recall_overlaps = overlaps
    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != overlaps.shape:
            raise ValueError(f"{len(visible)} visibility flags for {len(overlaps)} frames")
        recall_overlaps = np.where(visible, overlaps, 0.0)
    if n_visible <= 0:
        raise ValueError("the target is visible in no frame of this sequence (every ground-truth row is NaN): "
                         "recall is undefined; leave the sequence out")
    precision = np.ones(len(thresholds))
    recall = np.zeros(len(thresholds))
    for index, threshold in enumerate(thresholds):
        with np.errstate(invalid="ignore"):
            reported = confidence >= threshold
        if reported.any():
            precision[index] = np.mean(overlaps[reported])
            recall[index] = np.sum(recall_overlaps[reported]) / n_visible
    return precision, recall


def visible_frames(gt) -> np.ndarray:
    """(N,) bool: frames whose ground truth is a region (not a NaN row)."""
    return ~np.isnan(as_regions(gt, "ground truth")).any(axis=1)


def sequence_pr_curves(pred, confidence, gt, thresholds, bounds: tuple[int, int] | None = None,
                       visible_only_recall: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """`pr_curves` of one sequence from its predicted boxes, confidences and ground truth."""
    visible = visible_frames(gt)
    return pr_curves(region_overlaps(pred, gt, bounds), confidence, int(visible.sum()), thresholds,
                     visible if visible_only_recall else None)


def f_curve(precision, recall, beta: float = 1.0) -> np.ndarray:
    """F_beta at each threshold: (1 + b²) Pr Re / (b² Pr + Re), 0 where the denominator is 0."""
    precision, recall = _as_vector(precision, "precision"), _as_vector(recall, "recall")
    beta2 = beta * beta
    denominator = beta2 * precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, ((1 + beta2) * precision * recall) / denominator, 0.0)


def summarize(precision_curves: Sequence, recall_curves: Sequence, thresholds) -> dict:
    """Average per-sequence curves (in order, as the toolkit sums them) and pick the first threshold of maximal F."""
    if not len(precision_curves):
        raise ValueError("no sequences to summarize")
    thresholds = _as_vector(thresholds, "thresholds")
    precision = np.zeros(len(thresholds))
    recall = np.zeros(len(thresholds))
    for pr, re in zip(precision_curves, recall_curves, strict=True):
        precision = precision + _as_vector(pr, "precision curve")
        recall = recall + _as_vector(re, "recall curve")
    precision, recall = precision / len(precision_curves), recall / len(precision_curves)
    f = f_curve(precision, recall)
    best = int(np.argmax(f))
    return {
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f_score": float(f[best]),
        "threshold": float(thresholds[best]),
        "threshold_index": best,
        "thresholds": thresholds,
        "precision_curve": precision,
        "recall_curve": recall,
        "f_curve": f,
    }


def longterm_scores(sequences: Mapping[str, tuple] | Iterable[tuple], resolution: int = RESOLUTION,
                    visible_only_recall: bool = False) -> dict:
    """The whole analysis: `sequences` maps names to (pred, confidence, gt, bounds) tuples (or is an iterable of
    such tuples, named by position). Returns `summarize`'s dict plus "per_sequence": {name: {"overlaps",
    "precision_curve", "recall_curve", "n_visible"}}."""
    items = list(sequences.items()) if isinstance(sequences, Mapping) else [(str(i), s) for i, s in
                                                                              enumerate(sequences)]
    prepared = {}
    for name, (pred, confidence, gt, bounds) in items:
        overlaps = region_overlaps(pred, gt, bounds)
        confidence = _as_vector(confidence, f"sequence {name!r}: confidence")
        if len(confidence) != len(overlaps):
            raise ValueError(f"sequence {name!r}: {len(confidence)} confidences for {len(overlaps)} frames")
        prepared[name] = (overlaps, confidence, visible_frames(gt))
    thresholds = determine_thresholds([confidence for _, confidence, _ in prepared.values()], resolution)
    per_sequence = {}
    for name, (overlaps, confidence, visible) in prepared.items():
        n_visible = int(visible.sum())
        try:
            precision, recall = pr_curves(overlaps, confidence, n_visible, thresholds,
                                          visible if visible_only_recall else None)
        except ValueError as error:
            raise ValueError(f"sequence {name!r}: {error}") from None
        per_sequence[name] = {"overlaps": overlaps, "precision_curve": precision, "recall_curve": recall,
                              "n_visible": n_visible}
    summary = summarize([s["precision_curve"] for s in per_sequence.values()],
                        [s["recall_curve"] for s in per_sequence.values()], thresholds)
    summary["per_sequence"] = per_sequence
    return summary


class VOTLongTerm(Metric):
    """VOT long-term precision / recall / F-score over whole sequences (see the module docstring).

    `update(pred_boxes, confidence, gt_boxes, bounds)` adds one sequence; the thresholds depend on every
    confidence, so the per-frame overlaps, confidences and visibility flags are kept (concatenated, with each
    sequence's length and visible-frame count) and the curves are computed in compute(). Under DDP the states are
    gathered in rank order, which keeps frames and sequence lengths aligned.

    `visible_only_recall=True` sums the recall numerator over visible frames only (see the module docstring).

    compute() -> {"precision", "recall", "f_score", "threshold" (the τ of maximal F), "thresholds" (R,),
    "precision_curve" (R,), "recall_curve" (R,), "f_curve" (R,)}, float64 tensors.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, resolution: int = RESOLUTION, visible_only_recall: bool = False, **kwargs):
        super().__init__(**kwargs)
        if resolution < 3:
            raise ValueError(f"resolution must be at least 3, got {resolution}")
        self.resolution = resolution
        self.visible_only_recall = visible_only_recall
        self.add_state("overlaps", default=[], dist_reduce_fx="cat")
        self.add_state("confidences", default=[], dist_reduce_fx="cat")
        self.add_state("visible", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")
        self.add_state("n_visible", default=[], dist_reduce_fx="cat")

    def update(self, pred_boxes, confidence, gt_boxes, bounds: tuple[int, int] | None = None) -> None:
        """Add one sequence: (N, 4) predicted and ground-truth x, y, w, h rows (NaN row = no box), (N,) confidences,
        and the image (width, height) the boxes are clipped to (None: not clipped)."""
        overlaps = region_overlaps(pred_boxes, gt_boxes, bounds)
        confidence = _as_vector(confidence, "confidence")
        if len(confidence) != len(overlaps):
            raise ValueError(f"{len(confidence)} confidences for {len(overlaps)} frames: one confidence per frame")
        visible_mask = visible_frames(gt_boxes)
        visible = int(visible_mask.sum())
        if visible == 0:
            raise ValueError("the target is visible in no frame of this sequence (every ground-truth row is NaN): "
                             "recall is undefined; leave the sequence out")
        device = self.device
        self.overlaps.append(torch.as_tensor(overlaps, dtype=torch.float64, device=device))
        self.confidences.append(torch.as_tensor(confidence, dtype=torch.float64, device=device))
        self.visible.append(torch.as_tensor(visible_mask, dtype=torch.uint8, device=device))
        self.lengths.append(torch.tensor([len(overlaps)], dtype=torch.int64, device=device))
        self.n_visible.append(torch.tensor([visible], dtype=torch.int64, device=device))

    def compute(self) -> dict[str, torch.Tensor]:
        lengths_state = self.lengths
        if (not len(lengths_state) if isinstance(lengths_state, list) else lengths_state.numel() == 0):
            raise RuntimeError(f"{type(self).__name__}.compute() called before any sequence was added by update()")
        overlaps = dim_zero_cat(self.overlaps).cpu().numpy()
        confidences = dim_zero_cat(self.confidences).cpu().numpy()
        visible_masks = dim_zero_cat(self.visible).cpu().numpy().astype(bool)
        lengths = dim_zero_cat(self.lengths).cpu().numpy()
        visible = dim_zero_cat(self.n_visible).cpu().numpy()
        if lengths.sum() != len(overlaps):
            raise RuntimeError("VOTLongTerm states are inconsistent: sequence lengths do not add up to the frames")
        splits = np.cumsum(lengths)[:-1]
        overlap_parts, confidence_parts = np.split(overlaps, splits), np.split(confidences, splits)
        mask_parts = np.split(visible_masks, splits) if self.visible_only_recall else [None] * len(lengths)
        thresholds = determine_thresholds(confidence_parts, self.resolution)
        curves = [pr_curves(o, c, int(v), thresholds, m)
                  for o, c, v, m in zip(overlap_parts, confidence_parts, visible, mask_parts)]
        summary = summarize([pr for pr, _ in curves], [re for _, re in curves], thresholds)
        device = self.device
        return {key: torch.as_tensor(summary[key], dtype=torch.float64, device=device)
                for key in ("precision", "recall", "f_score", "threshold", "thresholds", "precision_curve",
                            "recall_curve", "f_curve")}
