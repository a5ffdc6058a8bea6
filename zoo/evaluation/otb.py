"""`python -m zoo.evaluate otb`: OTB one-pass evaluation of a tracker's saved results.

The results directory holds `<Seq>.txt` per sequence (one x, y, w, h row per evaluated frame, separated by
commas, tabs or spaces: the OTB toolkit's results format; `Jogging-1.txt` as pysot writes it is also accepted
for `Jogging.1`). Only the ground-truth files of the data directory are read, never the images, and the toolkit's
frame ranges apply (see `datamodules.otb`). A sequence whose results file is missing, or whose row count differs
from its evaluated frames, is refused with a message naming the file: the reference silently truncates both to
the shorter length, which hides results written for another frame range. So is a predicted box with a negative
width or height (swapped corners keep the true centre and would pass precision@20), and an infinite value anywhere.
Invalid ground-truth rows are scored as the reference scores them: a NaN row fails every threshold, a row with w or
h <= 0 has IoU 0 and fails the success curve (the toolkit's "invalid rows are failures").

Scores follow got10k's `ExperimentOTB` (see `zoo.metrics.otb`): per-sequence curves averaged over sequences,
success AUC = mean of the 21-point success curve, precision@20 = precision curve at 20 px.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datamodules.otb import read_groundtruth, read_sequence_groundtruth, sequence_names
from zoo.evaluate import check_output_dir, check_output_file
from zoo.metrics.otb import (
    PRECISION_AT,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    OTBPrecision,
    OTBSuccess,
    precision_curve,
    success_curve,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="OTB root: <Seq>/groundtruth_rect.txt (images are not needed)")
    parser.add_argument("--results-dir", type=Path, required=True, help="folder of <Seq>.txt tracker results")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="NAME",
                        help="sequence names, or one subset name: otb2013, otb100, tb50, drlt30 "
                             "(default: every sequence under --data-dir)")
    parser.add_argument("--plot", type=Path, default=None, metavar="DIR",
                        help="write success_plot.png and precision_plot.png to DIR")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="write per-sequence scores as CSV")
    parser.add_argument("--label", default=None, help="tracker name in the plots (default: the results folder name)")


def run(args: argparse.Namespace) -> dict:
    if args.plot is not None:
        check_output_dir(args.plot, "--plot", "otb")
    if args.csv is not None:
        check_output_file(args.csv, "--csv", "otb")
    try:
        names = sequence_names(args.data_dir, args.sequences)
        groundtruths = {name: read_sequence_groundtruth(args.data_dir, name) for name in names}
        predictions = {name: read_results(results_file(args.results_dir, name)) for name in names}
        results = evaluate_sequences(predictions, groundtruths)
    except (OSError, ValueError, KeyError) as error:
        # Bad input is the user's to fix: say what is wrong in one line instead of a traceback.
        raise SystemExit(f"python -m zoo.evaluate otb: error: {error}") from error
    print(format_summary(results))
    if args.plot is not None:
        label = args.label or args.results_dir.resolve().name
        for path in plot_otb(results, args.plot, label=label):
            print(f"wrote {path}")
    if args.csv is not None:
        write_per_sequence_csv(results, args.csv)
        print(f"wrote {args.csv}")
    return results


def results_file(results_dir: Path, name: str) -> Path:
    candidates = [results_dir / f"{name}.txt", results_dir / f"{name.replace('.', '-')}.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no results for sequence {name!r}: expected {candidates[0]} (one x,y,w,h row per frame)")


def read_results(path: Path) -> np.ndarray:
    """A tracker's x, y, w, h rows; a row with a negative width or height is refused rather than scored."""
    boxes = read_groundtruth(path)
    with np.errstate(invalid="ignore"):
        flipped = np.flatnonzero((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if flipped.size:
        # Its centre can still be right ((x + w, y + h, -w, -h) has the true one), which would pass precision@20.
        raise ValueError(
            f"{path}, line {flipped[0] + 1}: {boxes[flipped[0]].tolist()} has a negative width or height; OTB results "
            "are x, y, w, h with (x, y) the top-left corner (corners swapped, or x1, y1, x2, y2 written?)"
        )
    return boxes


def evaluate_sequences(predictions: Mapping[str, np.ndarray], groundtruths: Mapping[str, np.ndarray]) -> dict:
    """Score every sequence of `groundtruths` (in its order) against the boxes of the same name in `predictions`."""
    missing = [name for name in groundtruths if name not in predictions]
    if missing:
        raise KeyError(f"no predictions for sequence(s) {', '.join(missing)}")
    # Whole sequences are scored in one process: no cross-rank sync even when a DDP process group is up.
    success, precision = OTBSuccess(sync_on_compute=False), OTBPrecision(sync_on_compute=False)
    per_sequence = {}
    for name, gt in groundtruths.items():
        pred = np.asarray(predictions[name], dtype=np.float64)
        if pred.shape != np.shape(gt):
            raise ValueError(
                f"sequence {name!r}: {len(pred)} predicted boxes for {len(gt)} evaluated frames; OTB results need "
                f"exactly one x,y,w,h row per frame of the toolkit's frame range"
            )
        success.update(pred, gt)
        precision.update(pred, gt)
        per_sequence[name] = {
            "success_auc": float(np.mean(success_curve(pred, gt))),
            "precision_20": float(precision_curve(pred, gt)[PRECISION_AT]),
            "num_frames": len(gt),
        }
    if not per_sequence:
        raise ValueError("no sequences to evaluate")
    overall_success, overall_precision = success.compute(), precision.compute()
    return {
        "success_auc": float(overall_success["auc"]),
        "precision_20": float(overall_precision["precision_20"]),
        "success_curve": overall_success["curve"].tolist(),
        "precision_curve": overall_precision["curve"].tolist(),
        "num_sequences": len(per_sequence),
        "num_frames": sum(scores["num_frames"] for scores in per_sequence.values()),
        "per_sequence": per_sequence,
    }


def format_summary(results: dict) -> str:
    lines = [
        f"OTB OPE, {results['num_sequences']} sequences, {results['num_frames']} frames: "
        f"success AUC {results['success_auc']:.4f}, precision@20 {results['precision_20']:.4f}",
        f"  {'sequence':<14} {'frames':>6} {'AUC':>7} {'P@20':>7}",
    ]
    for name, scores in results["per_sequence"].items():
        lines.append(f"  {name:<14} {scores['num_frames']:>6} {scores['success_auc']:>7.4f} "
                     f"{scores['precision_20']:>7.4f}")
    return "\n".join(lines)


def plot_otb(results: dict, out_dir: str | Path, label: str = "tracker") -> list[Path]:
    """Success and precision plots in the toolkit's style; returns [success_plot.png, precision_plot.png]."""
    # The object-oriented Agg canvas leaves pyplot's global backend alone for whoever imports us.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        ("success_plot.png", SUCCESS_THRESHOLDS, results["success_curve"], results["success_auc"],
         "Overlap threshold", "Success rate", "Success plots of OPE", "AUC"),
        ("precision_plot.png", PRECISION_THRESHOLDS, results["precision_curve"], results["precision_20"],
         "Location error threshold (px)", "Precision", "Precision plots of OPE", "P@20"),
    ]
    paths = []
    for file_name, thresholds, curve, score, x_label, y_label, title, score_name in plots:
        figure = Figure(figsize=(5, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(thresholds, curve, linewidth=2, label=f"{label} [{score_name} {score:.3f}]")
        axes.set(xlabel=x_label, ylabel=y_label, title=title, xlim=(thresholds[0], thresholds[-1]), ylim=(0, 1.02))
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left" if file_name.startswith("success") else "lower right")
        figure.tight_layout()
        path = out_dir / file_name
        figure.savefig(path)
        paths.append(path)
    return paths


def write_per_sequence_csv(results: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "num_frames", "success_auc", "precision_20"])
        for name, scores in results["per_sequence"].items():
            writer.writerow([name, scores["num_frames"], repr(scores["success_auc"]), repr(scores["precision_20"])])
    return path
