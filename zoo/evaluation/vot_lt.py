"""`python -m zoo.evaluate vot-lt`: VOT long-term precision / recall / F-score of a tracker's saved results.

The results folder is laid out as vot-toolkit writes a long-term (unsupervised) experiment, e.g.
``results/<tracker>/longterm/``: ``<seq>/<seq>_001.txt`` holds one region per frame (``x,y,w,h``, a polygon, or a
single special code such as the ``1`` the toolkit writes on the initialisation frame: no region) and
``<seq>/<seq>_001_confidence.value`` one confidence per frame (a blank line or ``nan``: no confidence, never counted
as reported). Only the first repetition (``_001``) is read: the long-term experiment runs once.

`--root` is a VOT long-term tree (see `datamodules.vot_lt`); its ground truth is read, and the first frame's header
for the image size the overlaps are clipped to. A sequence without results, or whose region or confidence count
differs from its frames, is refused with a message naming the file. Scores follow `zoo.metrics.vot_lt` (the
toolkit's recall by default; `--visible-only-recall` for the paper's definition, see that module).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datamodules.vot_lt import load_sequence, read_regions, sequence_names
from zoo.metrics.vot_lt import RESOLUTION, longterm_scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True,
                        help="VOT long-term root: list.txt, <seq>/groundtruth.txt, <seq>/color/%%08d.jpg")
    parser.add_argument("--results-dir", type=Path, required=True,
                        help="folder of <seq>/<seq>_001.txt and <seq>/<seq>_001_confidence.value")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="NAME",
                        help="sequence names (default: every sequence of --root/list.txt)")
    parser.add_argument("--visible-only-recall", action="store_true",
                        help="sum the recall numerator over frames that show the target only (the paper's definition; "
                             "the toolkit also adds absent frames correctly reported empty: see zoo.metrics.vot_lt)")


def results_files(results_dir: Path, name: str) -> tuple[Path, Path]:
    regions = results_dir / name / f"{name}_001.txt"
    confidence = results_dir / name / f"{name}_001_confidence.value"
    if not regions.is_file():
        raise FileNotFoundError(f"no results for sequence {name!r}: expected {regions} (one region per frame)")
    if not confidence.is_file():
        raise FileNotFoundError(f"no confidences for sequence {name!r}: expected {confidence} (one value per frame; "
                                "long-term results need them)")
    return regions, confidence


def read_confidence(path: Path) -> np.ndarray:
    """One float per line; a blank line (the initialisation frame) or nan is NaN."""
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip() and len(lines) > 1:
        lines.pop()
    values = []
    for number, line in enumerate(lines, start=1):
        try:
            values.append(float(line) if line.strip() else np.nan)
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected one confidence value, got {line!r}") from None
    return np.asarray(values, dtype=np.float64)


def run(args: argparse.Namespace) -> dict:
    try:
        names = list(args.sequences) if args.sequences else sequence_names(args.root)
        sequences = {}
        for name in names:
            sequence = load_sequence(args.root, name)
            regions_path, confidence_path = results_files(args.results_dir, name)
            pred, confidence = read_regions(regions_path), read_confidence(confidence_path)
            for path, count in ((regions_path, len(pred)), (confidence_path, len(confidence))):
                if count != len(sequence):
                    raise ValueError(f"{path} has {count} rows but sequence {name!r} has {len(sequence)} frames: "
                                     "one row per frame is needed")
            sequences[name] = (pred, confidence, sequence.boxes, sequence.bounds)
        if not sequences:
            raise ValueError("no sequences to evaluate")
        scores = longterm_scores(sequences, RESOLUTION, visible_only_recall=args.visible_only_recall)
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit(f"python -m zoo.evaluate vot-lt: error: {error}") from error
    best = scores["threshold_index"]

    def threshold(value: float):
        return "+inf" if value == np.inf else "-inf" if value == -np.inf else float(value)

    return {
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f_score": scores["f_score"],
        "threshold": threshold(scores["threshold"]),
        "num_sequences": len(sequences),
        "num_frames": int(sum(len(s[0]) for s in sequences.values())),
        "thresholds": [threshold(t) for t in scores["thresholds"]],
        "precision_curve": scores["precision_curve"].tolist(),
        "recall_curve": scores["recall_curve"].tolist(),
        "f_curve": scores["f_curve"].tolist(),
        "per_sequence": {
            name: {"precision": float(s["precision_curve"][best]), "recall": float(s["recall_curve"][best]),
                   "num_frames": len(s["overlaps"]), "num_visible": s["n_visible"]}
            for name, s in scores["per_sequence"].items()
        },
    }
