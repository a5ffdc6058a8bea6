"""Interactive VOS metrics: per-round J / F / J&F curves, IVOS-W's round-based AUC and davisinteractive's time-based AUC.

References: `albertomontesg/davis-interactive@1fdb0c8` (pip `davisinteractive==1.0.4`), `evaluation/service.py`
(`post_predicted_masks`, `summarize_report`, `_reconstruct_report`), and IVOS-W (Yin et al., CVPR 2021;
`svip-lab/IVOS-W@341cd27`). Conventions (see `../shared/golden/README.md`):

* J and F are computed on every frame of the sequence (no first / last frame exclusion) for objects 1..nb_objects,
  with the DAVIS definitions (`zoo.metrics.davis.jaccard`, `f_measure`, boundary tolerance 0.008 of the diagonal);
  255 is not special. J&F of a frame and object = (J + F) / 2.
* Curve value after interaction k = mean over every (sequence, scribble, object) of that object's mean over frames;
  curve[0] = 0 (before any interaction).
* IVOS-W AUC = `trapz(curve[0..K]) / K` with unit spacing per round (K = 8 in the paper). The IVOS-W code writes
  `np.trapz(curve[:-1]) / (len(curve[:-1]) - 1)` on a curve that also carries the timeout point, which it drops.
* davisinteractive AUC: the curve plotted against the cumulative mean timing of the rounds (time 0 → 0), extended
  flat to a global timeout (`avg_nb_objects · max_time` when a time budget is set, else
  `max_interactions · largest single-round timing`); AUC = `trapz(metric, time) / time.max()`, and the metric at
  `time_threshold` (60 s) is linearly interpolated. A sample that stopped early (timeout) keeps its last result for
  the missing rounds, at zero time; a sample with no result at all counts as zeros.

Everything up to the `Metric` classes is numpy; the classes are defined on first access (`zoo.metrics` imports
lazily) so that the robot can score frames without importing torch.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from zoo.metrics.davis import f_measure, jaccard

METRICS = ("J", "F", "J_AND_F")


def _object_count(gt: np.ndarray, nb_objects: int | None) -> int:
    if nb_objects is not None:
        return int(nb_objects)
    ids = np.unique(gt)
    ids = ids[(ids > 0) & (ids < 255)]
    return int(ids.max()) if len(ids) else 0


def per_object_scores(
    pred: np.ndarray, gt: np.ndarray, nb_objects: int | None = None, bound_th: float = 0.008
) -> dict[str, np.ndarray]:
    """J, F and J&F of every frame and object: {"J", "F", "J_AND_F"} → float64 arrays of shape (T, nb_objects).

    `pred`, `gt`: (T, H, W) integer label maps; objects are ids 1..nb_objects (default: the largest id in `gt`
    below 255).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or gt.ndim != 3:
        raise ValueError(f"pred and gt must be (T, H, W) label maps of one shape, got {pred.shape} and {gt.shape}")
    count = _object_count(gt, nb_objects)
    if count < 1:
        raise ValueError("the ground truth has no object (ids 1..254); pass nb_objects for a sequence without any")
    j = np.stack([jaccard(pred == obj, gt == obj) for obj in range(1, count + 1)], axis=1)
    f = np.stack([f_measure(pred == obj, gt == obj, bound_th=bound_th) for obj in range(1, count + 1)], axis=1)
    return {"J": j, "F": f, "J_AND_F": 0.5 * j + 0.5 * f}


def ivosw_auc(curve: Sequence[float]) -> float:
    """IVOS-W's round-based AUC of a curve [0, m_1, ..., m_K]: trapezoid with unit spacing, divided by K."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or len(curve) < 2:
        raise ValueError(f"the curve needs the 0 point and at least one round, got {curve.tolist()}")
    return float(np.trapezoid(curve) / (len(curve) - 1))


def time_auc(
    curve: Sequence[float],
    cumulative_time: Sequence[float],
    global_timeout: float,
    time_threshold: float = 60.0,
) -> dict:
    """davisinteractive's summary of a curve [0, m_1..m_K] at cumulative times [0, t_1..t_K] (seconds).

    Returns {"auc", "metric_at_threshold": {"threshold", "value"}, "curve": {"time", "metric"}} with the timeout
    point appended (the last value held until `global_timeout`).
    """
    time = np.concatenate([np.asarray(cumulative_time, dtype=np.float64), [float(global_timeout)]])
    metric = np.asarray(curve, dtype=np.float64)
    metric = np.concatenate([metric, metric[-1:]])
    if len(time) != len(metric):
        raise ValueError(f"{len(curve)} curve points but {len(cumulative_time)} times")
    auc = 0.0 if time.max() == 0 else float(np.trapezoid(metric, x=time) / time.max())
    return {
        "auc": auc,
        "metric_at_threshold": {"threshold": time_threshold, "value": float(np.interp(time_threshold, time, metric))},
        "curve": {"time": time.tolist(), "metric": metric.tolist()},
    }


def sample_key(sequence: str, scribble_idx: int = 1) -> int:
    """A stable integer for a (sequence, scribble) sample (the same in every process, unlike `hash`)."""
    return zlib.crc32(f"{sequence}\0{scribble_idx}".encode())


def summarize_rounds(
    rows: np.ndarray,
    max_interactions: int | None = None,
    max_time: float | None = None,
    nb_objects_by_sample: Mapping[int, int] | None = None,
    time_threshold: float = 60.0,
) -> dict:
    """Curves and AUCs from per-object rows [sample, interaction, object, J, F, timing] (frame means of J and F).

    Missing rounds are reconstructed as davisinteractive does (`_reconstruct_report`): the previous round's scores at
    zero time. `nb_objects_by_sample` lists the objects of every sample (default: those seen in the rows); it sets
    the average number of objects used for the time budget.
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    if len(rows) == 0:
        raise ValueError("no interaction was recorded")
    samples = sorted({int(s) for s in rows[:, 0]})
    objects = dict(nb_objects_by_sample or {})
    for sample in samples:
        objects.setdefault(sample, int(rows[rows[:, 0] == sample, 2].max()))
    rounds = int(max_interactions or rows[:, 1].max())

    # scores[sample][round - 1] = (J per object, F per object, timing)
    per_round_j, per_round_f, per_round_time = [], [], []
    for sample in sorted(objects):
        count = objects[sample]
        previous = (np.zeros(count), np.zeros(count))
        sample_rows = rows[rows[:, 0] == sample]
        j_rounds, f_rounds, t_rounds = [], [], []
        for interaction in range(1, rounds + 1):
            found = sample_rows[sample_rows[:, 1] == interaction]
            if len(found) == count:
                found = found[np.argsort(found[:, 2])]
                previous = (found[:, 3], found[:, 4])
                timing = float(found[0, 5])
            else:
                timing = 0.0
            j_rounds.append(previous[0])
            f_rounds.append(previous[1])
            t_rounds.append(timing)
        per_round_j.append(np.stack(j_rounds))  # (rounds, objects of this sample)
        per_round_f.append(np.stack(f_rounds))
        per_round_time.append(t_rounds)
    j_all = np.concatenate(per_round_j, axis=1)  # (rounds, all objects)
    f_all = np.concatenate(per_round_f, axis=1)
    curves = {
        "J": np.concatenate([[0.0], j_all.mean(axis=1)]),
        "F": np.concatenate([[0.0], f_all.mean(axis=1)]),
        "J_AND_F": np.concatenate([[0.0], (0.5 * j_all + 0.5 * f_all).mean(axis=1)]),
    }
    cumulative_time = np.concatenate([[0.0], np.cumsum(np.mean(per_round_time, axis=0))])
    if max_time:
        global_timeout = float(np.mean(list(objects.values()))) * max_time
    else:
        global_timeout = rounds * float(rows[:, 5].max())
    summary = {}
    for name, curve in curves.items():
        result = time_auc(curve, cumulative_time, global_timeout, time_threshold)
        summary[name] = {
            "auc": result["auc"],
            "metric_at_threshold": {"threshold": time_threshold, name: result["metric_at_threshold"]["value"]},
            "curve": {"time": result["curve"]["time"], name: result["curve"]["metric"]},
        }
    return {
        "curve_by_interaction": {name: curve.tolist() for name, curve in curves.items()},
        "auc_ivosw": {name: ivosw_auc(curve) for name, curve in curves.items()},
        "davisinteractive_summary": summary,
    }


def _define_metric_class():
    import torch
    from torchmetrics import Metric

    class InteractiveVOSCurve(Metric):
        """Per-round J / F / J&F curves, IVOS-W AUC and davisinteractive AUC / J&F@60 s over interaction rounds.

        `update(pred, gt, interaction, timing, sequence, scribble_idx=1, nb_objects=None)` takes the (T, H, W) label
        maps predicted after interaction `interaction` (1-based) and the seconds that round took; `compute()` returns
        `summarize_rounds(...)`: {"curve_by_interaction": {J, F, J_AND_F: [0, round 1, ...]}, "auc_ivosw": {...},
        "davisinteractive_summary": {J, F, J_AND_F: {"auc", "metric_at_threshold", "curve"}}}.
        """

        full_state_update = False
        higher_is_better = True

        def __init__(
            self,
            max_interactions: int | None = None,
            max_time: float | None = None,
            time_threshold: float = 60.0,
            bound_th: float = 0.008,
            **kwargs,
        ):
            super().__init__(**kwargs)
            self.max_interactions = max_interactions
            self.max_time = max_time
            self.time_threshold = time_threshold
            self.bound_th = bound_th
            # one row per (sample, round, object): [sample key, interaction, object id, mean J, mean F, timing]
            self.add_state("rows", default=[], dist_reduce_fx="cat")

        def update(self, pred, gt, interaction: int, timing: float, sequence: str, scribble_idx: int = 1,
                   nb_objects: int | None = None) -> None:
            if int(interaction) < 1:
                raise ValueError(f"interaction numbers start at 1, got {interaction}")
            pred = pred.cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
            gt = gt.cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
            scores = per_object_scores(pred, gt, nb_objects, self.bound_th)
            count = scores["J"].shape[1]
            rows = np.column_stack([
                np.full(count, sample_key(sequence, scribble_idx)), np.full(count, int(interaction)),
                np.arange(1, count + 1), scores["J"].mean(axis=0), scores["F"].mean(axis=0),
                np.full(count, float(timing)),
            ])
            self.rows.append(torch.as_tensor(rows, dtype=torch.float64))

        def compute(self) -> dict:
            rows = self.rows if isinstance(self.rows, torch.Tensor) else torch.cat(self.rows) if self.rows else None
            if rows is None:
                raise ValueError("InteractiveVOSCurve.compute() before any update()")
            return summarize_rounds(rows.cpu().numpy(), self.max_interactions, self.max_time,
                                    time_threshold=self.time_threshold)

    InteractiveVOSCurve.__qualname__ = "InteractiveVOSCurve"  # picklable through the module's __getattr__
    return InteractiveVOSCurve


_LAZY_CLASSES: dict = {}


def __getattr__(name):
    if name == "InteractiveVOSCurve":
        if name not in _LAZY_CLASSES:
            _LAZY_CLASSES[name] = _define_metric_class()
        return _LAZY_CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
