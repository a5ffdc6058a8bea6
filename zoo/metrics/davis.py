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
    """(H, W) bool: pixels of `mask` differing from their right, lower or lower-right neighbour (`_seg2bmap`)."""
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
    """Number of `target` boundary pixels inside the disk dilation of `source` (official `gt_match` / `fg_match`)."""
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
    dilated = cv2.dilate(canvas, disk_footprint(float(radius)))
    dilated = dilated[radius : radius + bottom - top, radius : radius + right - left]
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
        raise ValueError(
            f"pred and gt must be masks of the same (H, W) or (T, H, W) shape, got {pred.shape} and {gt.shape}"
        )
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


# ---------------------------------------------------------------------------------------------- whole sequences


@dataclass(frozen=True)
class SequenceResult:
    """Scores of one sequence. Row i of `j` / `f` (objects × evaluated frames) is object `object_names[i]`.

    `gt_ids[i]` / `pred_ids[i]` say which ground-truth object and which predicted id row i pairs (equal in the
    semi-supervised task; the Hungarian matching in the unsupervised one, where a predicted id above the
    prediction's largest id is an empty padding proposal, as in the official tool).
    """

    name: str
    object_names: tuple[str, ...]
    gt_ids: tuple[int, ...]
    pred_ids: tuple[int, ...]
    j: np.ndarray
    f: np.ndarray

    def statistics(self) -> np.ndarray:
        """(objects, 6) float64 rows of `OBJECT_KEYS`: J Mean / Recall / Decay, F Mean / Recall / Decay."""
        rows = [db_statistics(j) + db_statistics(f) for j, f in zip(self.j, self.f)]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(OBJECT_KEYS))


def count_objects(first_gt: np.ndarray) -> int:
    """Objects of a sequence: ids 1..(largest non-void id of its first ground-truth frame)."""
    ids = first_gt[first_gt != VOID_LABEL]
    return int(ids.max()) if ids.size else 0


def score_frame(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    pairs: list[tuple[int, int]],
    radius: int,
    void: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of each (gt id, pred id) pair on one frame of label images; `void` pixels are left out of both.

    Ground-truth ids are below 255, so their masks never contain void; predictions are cleared on void pixels.
    """
    if void is not None:
        pred_labels = np.where(void, 0, pred_labels)
    gt_masks = {i: gt_labels == i for i in {i for i, _ in pairs}}
    pred_masks = {j: pred_labels == j for j in {j for _, j in pairs}}
    gt_boundaries = {i: _cropped_boundary(mask) for i, mask in gt_masks.items()}
    pred_boundaries = {j: _cropped_boundary(mask) for j, mask in pred_masks.items()}
    if len(pairs) > len(gt_masks) + len(pred_masks):
        # Many pairs (unsupervised): one joint histogram gives every intersection at once.
        joint = np.bincount((gt_labels.astype(np.intp) << 8 | pred_labels).ravel(), minlength=1 << 16)
        intersections = [int(joint[i << 8 | j]) for i, j in pairs]
    else:
        intersections = [int(np.count_nonzero(gt_masks[i] & pred_masks[j])) for i, j in pairs]
    gt_areas = {i: np.count_nonzero(mask) for i, mask in gt_masks.items()}
    pred_areas = {j: np.count_nonzero(mask) for j, mask in pred_masks.items()}
    j_scores = np.empty(len(pairs), dtype=np.float64)
    f_scores = np.empty(len(pairs), dtype=np.float64)
    for n, ((i, j), intersection) in enumerate(zip(pairs, intersections)):
        union = gt_areas[i] + pred_areas[j] - intersection
        j_scores[n] = intersection / union if union else 1.0
        f_scores[n] = _f_from_boundaries(pred_boundaries[j], gt_boundaries[i], radius)
    return j_scores, f_scores


def _check_labels(gt: np.ndarray, pred: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(
            f"sequence {name!r}: expected gt and pred label arrays of the same (T, H, W) shape, "
            f"got {gt.shape} and {pred.shape}"
        )
    for what, labels in (("gt", gt), ("pred", pred)):
        if labels.dtype != np.uint8:
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise ValueError(f"sequence {name!r}: {what} ids must lie in 0..255 (255 = void)")
    return gt.astype(np.uint8, copy=False), pred.astype(np.uint8, copy=False)


def evaluate_semi_supervised(
    gt: np.ndarray, pred: np.ndarray, name: str = "", bound_th: float = 0.008
) -> SequenceResult:
    """Official semi-supervised scores of one sequence of (T, H, W) labels; frames 0 and T-1 are not evaluated."""
    gt, pred = _check_labels(gt, pred, name)
    if len(gt) < 3:
        raise ValueError(f"sequence {name!r} has {len(gt)} frames; the first and last are not evaluated, so it needs 3")
    num_objects = count_objects(gt[0])
    evaluated_gt, evaluated_pred = gt[1:-1], pred[1:-1]
    largest = int(evaluated_pred.max())
    if largest > num_objects:
        frame = 1 + int(np.flatnonzero((evaluated_pred > num_objects).any(axis=(1, 2)))[0])
        raise ValueError(
            f"sequence {name!r}, frame {frame}: predicted id {largest} but the first ground-truth frame has "
            f"{num_objects} objects (ids 1..{num_objects}); the official tool stops on such ids"
        )
    ids = list(range(1, num_objects + 1))
    pairs = [(k, k) for k in ids]
    radius = int(boundary_radius(gt.shape[1:], bound_th))
    j, f = _score_frames(evaluated_gt, evaluated_pred, pairs, radius, with_void=False)
    names = tuple(f"{name}_{k}" for k in ids)
    return SequenceResult(name, names, tuple(ids), tuple(ids), j.T.copy(), f.T.copy())


def evaluate_unsupervised(
    gt: np.ndarray,
    pred: np.ndarray,
    name: str = "",
    bound_th: float = 0.008,
    max_proposals: int = MAX_UNSUPERVISED_PROPOSALS,
) -> SequenceResult:
    """Official unsupervised scores of one sequence: every frame, void excluded, Hungarian matching on mean J&F."""
    from scipy.optimize import linear_sum_assignment

    gt, pred = _check_labels(gt, pred, name)
    num_objects = count_objects(gt[0])
    largest = int(pred.max()) if pred.size else 0
    if largest > max_proposals:
        raise ValueError(
            f"sequence {name!r}: predicted id {largest}, but at most {max_proposals} proposals "
            f"(ids 1..{max_proposals}) per sequence are allowed in the unsupervised task"
        )
    # Missing proposals are empty masks, so that every ground-truth object gets a partner (official zero padding).
    proposals = list(range(1, max(largest, num_objects) + 1))
    objects = list(range(1, num_objects + 1))
    pairs = [(i, j) for i in objects for j in proposals]
    radius = int(boundary_radius(gt.shape[1:], bound_th))
    j, f = _score_frames(gt, pred, pairs, radius, with_void=True)
    shape = (len(objects), len(proposals), len(gt))
    j, f = j.T.reshape(shape), f.T.reshape(shape)
    # Official: rows are proposals, columns objects; the pairs come back in the order of the proposals.
    mean_jf = ((j.mean(axis=2) + f.mean(axis=2)) / 2).T
    rows, columns = linear_sum_assignment(-mean_jf)
    names = tuple(f"{name}_{n + 1}" for n in range(len(rows)))
    return SequenceResult(
        name,
        names,
        tuple(objects[c] for c in columns),
        tuple(proposals[r] for r in rows),
        j[columns, rows].copy(),
        f[columns, rows].copy(),
    )


def _score_frames(gt, pred, pairs, radius, with_void) -> tuple[np.ndarray, np.ndarray]:
    j = np.empty((len(gt), len(pairs)), dtype=np.float64)
    f = np.empty((len(gt), len(pairs)), dtype=np.float64)
    for t, (gt_labels, pred_labels) in enumerate(zip(gt, pred)):
        void = (gt_labels == VOID_LABEL) if with_void else None
        if void is not None and not void.any():
            void = None
        j[t], f[t] = score_frame(gt_labels, pred_labels, pairs, radius, void)
    return j, f


def evaluate_sequence(gt, pred, task: str, name: str = "", bound_th: float = 0.008) -> SequenceResult:
    """`evaluate_semi_supervised` or `evaluate_unsupervised` by task name."""
    if task == "semi-supervised":
        return evaluate_semi_supervised(gt, pred, name, bound_th)
    if task == "unsupervised":
        return evaluate_unsupervised(gt, pred, name, bound_th)
    raise ValueError(f"unknown DAVIS task {task!r}; use one of {TASKS}")


def summarize(object_names: list[str], statistics: np.ndarray) -> dict:
    """Global results with the official keys (means over all objects) plus `per_object`, as plain floats."""
    statistics = np.asarray(statistics, dtype=np.float64).reshape(-1, len(OBJECT_KEYS))
    if len(set(object_names)) != len(object_names):
        raise ValueError("the same object (sequence) was evaluated twice")
    with np.errstate(invalid="ignore"):
        means = statistics.mean(axis=0) if len(statistics) else np.full(len(OBJECT_KEYS), np.nan)
    results = {"J&F-Mean": float((means[0] + means[3]) / 2)}
    results.update({key: float(value) for key, value in zip(OBJECT_KEYS, means)})
    results["per_object"] = {
        name: {"J&F-Mean": float((row[0] + row[3]) / 2), **{key: float(v) for key, v in zip(OBJECT_KEYS, row)}}
        for name, row in zip(object_names, statistics)
    }
    return results


# --------------------------------------------------------------------------------------------- torchmetrics classes

_NAME_BYTES = 128  # object names travel between processes as fixed-width UTF-8 rows, so they gather with "cat"
_METRIC_CLASS_NAMES = ("DAVISSemiSupervised", "DAVISUnsupervised")


def _encode_names(names: tuple[str, ...]) -> np.ndarray:
    rows = np.zeros((len(names), _NAME_BYTES), dtype=np.uint8)
    for row, name in zip(rows, names):
        encoded = name.encode("utf-8")
        if len(encoded) > _NAME_BYTES:
            raise ValueError(f"object name {name!r} is longer than {_NAME_BYTES} bytes; use a shorter sequence name")
        row[: len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    return rows


def _decode_names(rows: np.ndarray) -> list[str]:
    return [bytes(row).rstrip(b"\0").decode("utf-8") for row in rows]


def _define_metric_classes() -> dict[str, type]:
    # torch / torchmetrics take seconds to import; the CLI only needs the numpy functions above.
    import torch
    from torchmetrics import Metric
    from torchmetrics.utilities import dim_zero_cat

    class _DAVISVideoMetric(Metric):
        """DAVIS J, F and J&F (Mean / Recall / Decay) per object and over all objects; one `update` per sequence.

        `update(pred, gt, name)` takes the (T, H, W) predicted and ground-truth label videos of one sequence (ids,
        0 background, 255 void in the ground truth) and its name; `compute()` returns the official global keys
        (`J&F-Mean`, `J-Mean`, `J-Recall`, `J-Decay`, `F-Mean`, `F-Recall`, `F-Decay`) as float64 tensors and
        `per_object` = {"<sequence>_<k>": {same keys: float}}. The states (per-object statistics rows and their
        names) gather with "cat", so the metric reduces across DDP processes.
        """

        task = ""
        is_differentiable = False
        higher_is_better = True
        full_state_update = False

        def __init__(self, bound_th: float = 0.008, **kwargs) -> None:
            super().__init__(**kwargs)
            boundary_radius((1, 1), bound_th)  # validates bound_th
            self.bound_th = bound_th
            self.add_state("object_statistics", default=[], dist_reduce_fx="cat")
            self.add_state("object_names", default=[], dist_reduce_fx="cat")

        def update(self, pred, gt, name: str) -> None:
            to_numpy = lambda labels: labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
            result = evaluate_sequence(to_numpy(gt), to_numpy(pred), self.task, name, self.bound_th)
            self.object_statistics.append(torch.from_numpy(result.statistics()).to(self.device))
            self.object_names.append(torch.from_numpy(_encode_names(result.object_names)).to(self.device))

        def compute(self) -> dict:
            if not self.object_names:
                statistics, names = np.zeros((0, len(OBJECT_KEYS))), []
            else:
                statistics = dim_zero_cat(self.object_statistics).double().cpu().numpy()
                names = _decode_names(dim_zero_cat(self.object_names).cpu().numpy())
            results = summarize(names, statistics)
            return {
                key: (value if key == "per_object" else torch.tensor(value, dtype=torch.float64))
                for key, value in results.items()
            }

    class DAVISSemiSupervised(_DAVISVideoMetric):
        __doc__ = _DAVISVideoMetric.__doc__ + (
            "\n        Semi-supervised task: frames 0 and T-1 are not evaluated, objects are ids 1..(largest id of"
            "\n        the first ground-truth frame), and a larger predicted id raises ValueError (the official tool"
            "\n        stops).\n"
        )
        task = "semi-supervised"

    class DAVISUnsupervised(_DAVISVideoMetric):
        __doc__ = _DAVISVideoMetric.__doc__ + (
            "\n        Unsupervised task: every frame, void excluded, at most 20 predicted ids per sequence matched to"
            "\n        the ground-truth objects by a Hungarian assignment on mean J&F (objects listed in predicted-id"
            "\n        order).\n"
        )
        task = "unsupervised"

    classes = {"DAVISSemiSupervised": DAVISSemiSupervised, "DAVISUnsupervised": DAVISUnsupervised}
    for class_name, cls in classes.items():
        cls.__module__, cls.__qualname__ = __name__, class_name  # picklable as zoo.metrics.davis.<name>
    _DAVISVideoMetric.__module__, _DAVISVideoMetric.__qualname__ = __name__, "_DAVISVideoMetric"
    return {**classes, "_DAVISVideoMetric": _DAVISVideoMetric}


def __getattr__(name: str):
    if name in _METRIC_CLASS_NAMES or name == "_DAVISVideoMetric":
        globals().update(_define_metric_classes())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
