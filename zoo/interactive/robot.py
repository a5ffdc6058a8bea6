"""The DAVIS interactive scribble robot: picks the frame to annotate and draws scribbles on its error regions.

Follows davisinteractive 1.0.4 (`robot/interactive_robot.py: InteractiveScribblesRobot`, with the evaluation
service's parameters kernel_size=.2, max_kernel_radius=16, min_nb_nodes=4, nb_points=1000, and
`evaluation/service.py: post_predicted_masks` for the frame choice):

1. Frame: among the candidate frames (all by default) not yet annotated in this sample, the one with the lowest
   J&F (mean over objects); once every frame has been annotated, all candidates are allowed again. Ties go to the
   lower frame index (the reference uses numpy's default argsort, which is the same for sequences up to 16 frames).
2. For every id 0..nb_objects (0 = background, i.e. negative scribbles): error mask = (gt == id) & (pred != id).
3. Opening with a disk of radius min(kernel_size · sqrt(area) / 2, max_kernel_radius); while the opening is empty
   and the radius above 1, the radius shrinks by 10 % (an error region too thin for any radius gives no scribble).
4. Medial axis of the opened mask (zero-padded by one pixel), skeleton graph → trees → longest path of each tree
   with at least min_nb_nodes pixels → Bézier curve of nb_points points → coordinates divided by (W, H).
   See `zoo.interactive.geometry` for the exact tie-breaks.

A scribble therefore lies on the skeleton of the *opened* error region, smoothed: it follows the error region but the
reference does not keep it inside pixel for pixel. Two things push it out: for a non-integer radius the disk has an
even side and `rank.maximum` does not reflect it, so the "opening" is shifted by one pixel down and right; and the
Bézier curve of a bent path cuts its corners. On the golden 96×128 vectors up to 72 % of the points of a reference
scribble fall on pixels of another ground-truth label. `strict=True` keeps everything else and removes both causes:
a true opening (a subset of the error region), and any curve point whose pixel (x, y rounded to the nearest
integer) is outside the error region moved to the nearest pixel of the skeleton path. Strict scribbles are inside
the error region of their object by construction; the default (`strict=False`) reproduces the reference.
`scribble_outside_fraction` measures how far a scribble strays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.interactive import geometry
from zoo.metrics.interactive import per_object_scores

_METRICS = ("J", "F", "J_AND_F")


def choose_frame(
    scores: np.ndarray,
    annotated_frames: Iterable[int] = (),
    candidates: Iterable[int] | None = None,
) -> int:
    """Index of the frame to annotate next, from per-frame scores (T,) or (T, objects); see the module docstring."""
    scores = np.asarray(scores, dtype=np.float64)
    per_frame = scores.mean(axis=1) if scores.ndim == 2 else scores
    nb_frames = len(per_frame)
    allowed = set(range(nb_frames)) if candidates is None else {int(c) for c in candidates}
    if not allowed & set(range(nb_frames)):
        raise ValueError(f"no candidate frame in 0..{nb_frames - 1}: {sorted(allowed)}")
    used = {int(f) for f in annotated_frames}
    if used >= set(range(nb_frames)):
        used = set()  # every frame has had its turn: start over, as the evaluation service does
    fresh = allowed - used or allowed
    for frame in np.argsort(per_frame, kind="stable").tolist():
        if frame in fresh:
            return frame
    raise AssertionError("unreachable: fresh holds at least one valid frame")


@dataclass
class InteractiveScribblesRobot:
    """Scribble robot of the DAVIS interactive benchmark (defaults = the evaluation service's parameters).

    `seed` fixes the medial-axis tie-breaker; 0 reproduces scikit-image < 0.19 (and the golden scribbles).
    `clock` stamps `start_time` / `end_time` of each scribble (seconds); pass e.g. `lambda: 0.0` for byte-identical
    output.
    """

    kernel_size: float = 0.2
    max_kernel_radius: float = 16
    min_nb_nodes: int = 4
    nb_points: int = 1000
    seed: int = 0
    metric: str = "J_AND_F"
    strict: bool = False
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self):
        if not 0 <= self.kernel_size < 1:
            raise ValueError(f"kernel_size must be in [0, 1), got {self.kernel_size}")
        if self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {self.metric!r}")

    # ------------------------------------------------------------------------------------------- geometry
    def skeleton(self, error_mask: np.ndarray) -> np.ndarray:
        """Medial axis of the opened error mask (boolean, the mask's shape)."""
        error_mask = np.asarray(error_mask, dtype=bool)
        radius = min(self.kernel_size * math.sqrt(int(error_mask.sum())) * 0.5, self.max_kernel_radius)
        opened = error_mask.astype(np.uint8)
        searching = True
        while radius > 1.0 and searching:
            open_ = geometry.opening if self.strict else geometry.open_like_rank_filters
            opened = open_(error_mask, radius)
            searching = not opened.any()
            if searching:
                radius *= 0.9
        padded = np.pad(opened.astype(bool), 1)
        return geometry.medial_axis(padded, seed=self.seed)[1:-1, 1:-1]

    def error_paths(self, error_mask: np.ndarray) -> list[np.ndarray]:
        """Scribble curves of one error mask in pixel coordinates (x, y), one (N, 2) array per skeleton tree."""
        skeleton = self.skeleton(error_mask)
        if not skeleton.any():
            return []
        points = geometry.skeleton_points(skeleton)
        trees = geometry.skeleton_trees(skeleton, self.min_nb_nodes)
        paths = [points[geometry.longest_path(tree)] for tree in trees]
        curves = [geometry.bezier_curve(path, self.nb_points) for path in paths]
        if self.strict:
            curves = [_snap_into(curve, path, error_mask) for curve, path in zip(curves, paths)]
        return curves

    # ---------------------------------------------------------------------------------------- interaction
    def frame_scores(self, pred: np.ndarray, gt: np.ndarray, nb_objects: int | None = None) -> np.ndarray:
        """Per-frame, per-object score (T, objects) of the metric the robot optimises."""
        return per_object_scores(pred, gt, nb_objects)[self.metric]

    def interact(
        self,
        sequence: str,
        pred_masks: np.ndarray,
        gt_masks: np.ndarray,
        nb_objects: int | None = None,
        frame: int | None = None,
        annotated_frames: Iterable[int] = (),
        candidates: Iterable[int] | None = None,
    ) -> dict:
        """Scribbles for the next interaction, in the davis-interactive format.

        `pred_masks`, `gt_masks`: (T, H, W) label maps. `frame` forces the frame; otherwise it is chosen from
        `candidates` minus `annotated_frames` (see `choose_frame`). Returns {"sequence", "scribbles" (one list per
        frame, only the chosen one filled), "annotated_frame"}; each scribble is {"path": [[x / W, y / H], ...],
        "object_id", "start_time", "end_time"}.
        """
        pred, gt = np.asarray(pred_masks), np.asarray(gt_masks)
        if pred.shape != gt.shape or gt.ndim != 3:
            raise ValueError(
                f"{sequence}: predicted and ground-truth masks must be (T, H, W) of one shape, "
                f"got {pred.shape} and {gt.shape}"
            )
        nb_frames, height, width = gt.shape
        if nb_objects is None:
            ids = np.unique(gt)
            ids = ids[(ids > 0) & (ids < 255)]
            nb_objects = int(ids.max()) if len(ids) else 0
        if frame is None:
            frame = choose_frame(self.frame_scores(pred, gt, nb_objects), annotated_frames, candidates)
        elif not 0 <= int(frame) < nb_frames:
            raise ValueError(f"{sequence}: frame {frame} is outside 0..{nb_frames - 1}")
        frame = int(frame)
        scribbles: list[list[dict]] = [[] for _ in range(nb_frames)]
        size = np.array([width, height], dtype=np.float64)
        for object_id in range(nb_objects + 1):
            start = self.clock()
            error_mask = (gt[frame] == object_id) & (pred[frame] != object_id)
            if not error_mask.any():
                continue
            paths = self.error_paths(error_mask)
            end = self.clock()
            for path in paths:
                scribbles[frame].append(
                    {"path": (path / size).tolist(), "object_id": object_id, "start_time": start, "end_time": end}
                )
        return {"sequence": sequence, "scribbles": scribbles, "annotated_frame": frame}


class RobotSession:
    """The robot's side of one evaluation sample: remembers which frames it already annotated.

    `submit(pred_masks, candidates=None)` returns the next scribbles, as `DavisInteractiveSession.submit_masks` would
    get them from the evaluation service; `annotated_frames` lists the frames chosen so far.
    """

    def __init__(self, robot: InteractiveScribblesRobot, sequence: str, gt_masks: np.ndarray,
                 nb_objects: int | None = None):
        self.robot = robot
        self.sequence = sequence
        self.gt_masks = np.asarray(gt_masks)
        self.nb_objects = nb_objects
        self.annotated_frames: list[int] = []

    def submit(self, pred_masks: np.ndarray, candidates: Sequence[int] | None = None) -> dict:
        scribbles = self.robot.interact(
            self.sequence, pred_masks, self.gt_masks, self.nb_objects,
            annotated_frames=self.annotated_frames, candidates=candidates,
        )
        self.annotated_frames.append(scribbles["annotated_frame"])
        return scribbles


def _nearest_pixels(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels whose centres are nearest to (x, y) points in pixel units."""
    cols = np.clip(np.floor(points[:, 0] + 0.5).astype(int), 0, shape[1] - 1)
    rows = np.clip(np.floor(points[:, 1] + 0.5).astype(int), 0, shape[0] - 1)
    return rows, cols


def _snap_into(curve: np.ndarray, path: np.ndarray, region: np.ndarray) -> np.ndarray:
    rows, cols = _nearest_pixels(curve, region.shape)
    outside = ~region[rows, cols]
    if outside.any():
        curve = curve.copy()
        stray = curve[outside]
        nearest = np.argmin(((stray[:, None, :] - path[None, :, :]) ** 2).sum(axis=2), axis=1)
        curve[outside] = path[nearest]
    return curve


def scribble_outside_fraction(path: Sequence[Sequence[float]], region: np.ndarray) -> float:
    """Share of a scribble's points (normalised [x, y]) whose nearest pixel (x·W, y·H rounded) is outside `region`."""
    region = np.asarray(region, dtype=bool)
    height, width = region.shape
    points = np.asarray(path, dtype=np.float64).reshape(-1, 2) * [width, height]
    if not len(points):
        return 0.0
    rows, cols = _nearest_pixels(points, region.shape)
    return float(np.mean(~region[rows, cols]))
