"""DAVIS region similarity J, contour accuracy F and their Mean / Recall / Decay, as the official tool computes them.

Reference: `davisvideochallenge/davis2017-evaluation@ac7c43f` (`davis2017/metrics.py`, `utils.py`, `evaluation.py`).
Conventions reproduced (see `../shared/golden/README.md`):

* J = |A∩B| / |A∪B| over non-void pixels; an empty union gives 1.
* F: the boundary of a mask is every pixel that differs from its right, lower or lower-right neighbour (pixels on the
  last row / column compare only with the neighbours that exist); each boundary is dilated (`cv2.dilate`) with the
  `skimage.morphology.disk` footprint of radius `ceil(bound_th * sqrt(H² + W²))`; precision / recall are the shares
  of one boundary inside the other's dilation; one empty boundary gives (P, R) = (1, 0) or (0, 1), both empty 1.
* Statistics per object: Mean = nanmean, Recall = share of frames above 0.5, Decay = mean of the first minus mean
  of the last of four bins that share their edge frames. The official code casts the bin edges to uint8, which
  wraps around for sequences longer than 255 frames; `db_statistics` keeps that by default (`official_uint8=True`).
* Semi-supervised: the first and last frame are not evaluated; objects are ids 1..(largest id of the first
  ground-truth frame); 255 in the ground truth is background; a predicted id above the objects is an error.
* Unsupervised: every frame; void (255 in the ground truth) is excluded from both masks; at most 20 predicted ids
  per sequence, matched to the ground-truth objects by a Hungarian assignment on mean-over-frames (J+F)/2. As in the
  official tool, the matched objects are listed in the order of their predicted ids (so `seq_1` is the ground-truth
  object matched to the lowest matched predicted id); `object_order` in the results records the pairing.

The per-frame work is cropped to the objects' bounding boxes (which changes no number, only the time), so that the
evaluation CLI stays an order of magnitude faster than the reference. Everything up to the torchmetrics classes is
plain numpy: the CLI imports this module without paying for torch. The `Metric` classes (`DAVISSemiSupervised`,
`DAVISUnsupervised`) are defined on first access.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

VOID_LABEL = 255
MAX_UNSUPERVISED_PROPOSALS = 20
GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
# Column order of the per-object statistics rows produced by `object_statistics`.
OBJECT_KEYS = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
TASKS = ("semi-supervised", "unsupervised")


# ----------------------------------------------------------------------------------------------- per-frame metrics


@lru_cache(maxsize=16)
def disk_footprint(radius: float) -> np.ndarray:
    """The `skimage.morphology.disk(radius)` footprint as uint8: offsets (x, y) with x² + y² <= radius²."""
    offsets = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(offsets, offsets)
    footprint = (x**2 + y**2 <= radius**2).astype(np.uint8)
    footprint.setflags(write=False)
    return footprint


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> float:
    """Dilation radius in pixels: `bound_th` itself when >= 1, else ceil(bound_th · image diagonal)."""
    if bound_th >= 1 and bound_th != int(bound_th):
        # skimage's disk of a fractional radius has an even size, whose anchor OpenCV places off centre.
        raise ValueError(f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th}")
    return float(bound_th) if bound_th >= 1 else float(math.ceil(bound_th * math.hypot(*shape)))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of `mask` that differ from their right, lower or lower-right neighbour (official `_seg2bmap`)."""
    mask = np.asarray(mask, dtype=bool)
    boundary = np.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    boundary[:-1, :] |= mask[:-1, :] != mask[1:, :]
    boundary[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return boundary


@dataclass(frozen=True)
class _Boundary:
    """A boundary map cropped to a window at (top, left) of the full frame; `count` = its number of pixels."""

    pixels: np.ndarray
    top: int
    left: int
    count: int


_EMPTY_BOUNDARY = _Boundary(np.zeros((0, 0), dtype=bool), 0, 0, 0)


def _cropped_boundary(mask: np.ndarray) -> _Boundary:
    # A boundary pixel is in the mask or one row / column above-left of it; the extra row / column below-right makes
    # the cropped boundary identical to the full-frame one (neighbours outside the window are background).
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return _EMPTY_BOUNDARY
    columns = np.flatnonzero(mask.any(axis=0))
    top, left = max(int(rows[0]) - 1, 0), max(int(columns[0]) - 1, 0)
    bottom, right = int(rows[-1]) + 2, int(columns[-1]) + 2
    pixels = boundary_map(mask[top:bottom, left:right])
    return _Boundary(pixels, top, left, int(np.count_nonzero(pixels)))


def _matched_count(source: _Boundary, target: _Boundary, radius: int) -> int:
    """Number of `target` boundary pixels within the disk dilation of `source` (the official `gt_match` / `fg_match`)."""
    sh, sw = source.pixels.shape
    th, tw = target.pixels.shape
    # Only target pixels within `radius` (in both axes) of the source window can be reached.
    top, left = max(target.top, source.top - radius), max(target.left, source.left - radius)
    bottom = min(target.top + th, source.top + sh + radius)
    right = min(target.left + tw, source.left + sw + radius)
    if top >= bottom or left >= right:
        return 0
    canvas = np.zeros((bottom - top + 2 * radius, right - left + 2 * radius), dtype=np.uint8)
    # Paste the part of the source that lies inside the query window grown by the radius.
    y0, x0 = max(source.top, top - radius), max(source.left, left - radius)
    y1, x1 = min(source.top + sh, bottom + radius), min(source.left + sw, right + radius)
    if y0 >= y1 or x0 >= x1:
        return 0
    canvas[y0 - top + radius : y1 - top + radius, x0 - left + radius : x1 - left + radius] = source.pixels[
        y0 - source.top : y1 - source.top, x0 - source.left : x1 - source.left
    ]
    dilated = cv2.dilate(canvas, disk_footprint(float(radius)))[radius : radius + bottom - top, radius : radius + right - left]
    window = target.pixels[top - target.top : bottom - target.top, left - target.left : right - target.left]
    return int(np.count_nonzero(dilated.view(bool) & window))


def _f_from_boundaries(pred: _Boundary, gt: _Boundary, radius: int) -> float:
    if pred.count == 0 and gt.count == 0:
        return 1.0
    if pred.count == 0 or gt.count == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    precision = _matched_count(gt, pred, radius) / pred.count
    recall = _matched_count(pred, gt, radius) / gt.count
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _as_frames(pred, gt, void) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim not in (2, 3):
        raise ValueError(f"pred and gt must both be (H, W) or (T, H, W) masks, got {pred.shape} and {gt.shape}")
    single = pred.ndim == 2
    if void is not None:
        void = np.asarray(void, dtype=bool)
        if void.shape != gt.shape:
            raise ValueError(f"void must have the masks' shape {gt.shape}, got {void.shape}")
        void = void[None] if single else void
    return (pred[None], gt[None], void, single) if single else (pred, gt, void, single)


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J per frame: float64 of shape (T,) for (T, H, W) masks, 0-d for (H, W) masks."""
    pred, gt, void, single = _as_frames(pred, gt, void)
    keep = np.ones_like(gt) if void is None else ~void
    intersection = np.count_nonzero(pred & gt & keep, axis=(1, 2))
    union = np.count_nonzero((pred | gt) & keep, axis=(1, 2))
    scores = np.ones(len(union), dtype=np.float64)
    nonempty = union > 0
    scores[nonempty] = intersection[nonempty] / union[nonempty]
    return scores[0] if single else scores


def f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> np.ndarray:
    """Contour accuracy F per frame: float64 of shape (T,) for (T, H, W) masks, 0-d for (H, W) masks."""
    pred, gt, void, single = _as_frames(pred, gt, void)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    radius = int(boundary_radius(gt.shape[1:], bound_th))
    scores = np.array(
        [_f_from_boundaries(_cropped_boundary(p), _cropped_boundary(g), radius) for p, g in zip(pred, gt)],
        dtype=np.float64,
    )
    return scores[0] if single else scores


def db_statistics(per_frame: np.ndarray, official_uint8: bool = True) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame values, binned as the official `db_statistics`."""
    values = np.asarray(per_frame, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan
        recall = float(np.mean(values > 0.5)) if values.size else math.nan
        edges = np.round(np.linspace(1, len(values), 5) + 1e-10) - 1
        edges = edges.astype(np.uint8) if official_uint8 else edges.astype(np.int64)
        bins = [values[edges[i] : edges[i + 1] + 1] for i in range(4)]
        first, last = bins[0][~np.isnan(bins[0])], bins[3][~np.isnan(bins[3])]
        decay = float(first.mean() - last.mean()) if first.size and last.size else math.nan
    return mean, recall, decay
