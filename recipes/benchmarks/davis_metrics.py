"""Whole-process speed of `python -m zoo.evaluate davis` on a DAVIS-val-sized workload, against the official tool.

The workload is the golden `davis480` pair of sequences (480×854, 25 frames, 3 objects) copied `--copies` times into
a temporary `<seq>/<frame>.png` tree (30 copies: 1500 frames, 1380 of them evaluated). The timed command is the
CLI in a fresh Python process, start to exit; its JSON must equal the in-process `DAVISSemiSupervised` metric on
the same files and reproduce the golden official values.

Reference estimate: `../shared/golden/README.md` times the official `davis2017-evaluation` at 2.6–3.1 s for the 46
evaluated frames of `davis480` on 2 CPU cores (`expected.json` records 3.06 s for the evaluation alone, without the
interpreter start-up); scaled linearly to the workload's evaluated frames, with the fast end (2.6 s) so that the
reported speed-up is a lower bound. The official tool evaluates sequences one after another in a single process.
CPU seconds (process plus workers) are reported beside wall seconds, since a shared machine inflates the latter; each
command runs `--repeats` times and the fastest run counts.
`python -m zoo.evaluate` imports every benchmark's plug-in before dispatching (some import torch); the standalone
`python -m zoo.evaluation.davis` entry, timed too, shows the cost without that.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zoo.paths import REPO_ROOT, shared_dir

REFERENCE_FRAMES = 46  # evaluated frames of golden davis480 (2 sequences × 23)
REFERENCE_SECONDS = (2.6, 3.1)  # official tool on those frames, 2 CPU cores (golden README)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--copies", type=int, default=30, help="copies of the two davis480 sequences (default 30)")
    parser.add_argument("--workers", type=int, default=None, help="--workers of the CLI (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command; the fastest counts")
    parser.add_argument("--golden", type=Path, default=None, help="golden folder (default: ../shared/golden)")


def build_workload(golden: Path, target: Path, copies: int) -> tuple[Path, Path, list[str]]:
    gt_dir, results_dir = target / "gt", target / "results"
    sequences = []
    for copy in range(copies):
        for source in sorted((golden / "davis480" / "gt").iterdir()):
            name = f"{source.name}_{copy:03d}"
            sequences.append(name)
            for kind, folder in (("gt", gt_dir), ("pred", results_dir)):
                shutil.copytree(golden / "davis480" / kind / source.name, folder / name)
    return gt_dir, results_dir, sorted(sequences)  # the order in which the CLI lists a --gt-dir


def timed_cli(module: str, gt_dir: Path, results_dir: Path, output: Path, workers: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its workers) of one CLI run."""
    command = [sys.executable, "-m", module]
    command += ["davis"] if module == "zoo.evaluate" else []
    command += ["--gt-dir", str(gt_dir), "--results-dir", str(results_dir), "--json", str(output)]
    command += ["--workers", str(workers)] if workers else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process_metric(gt_dir: Path, results_dir: Path, sequences: list[str]) -> dict:
    from datamodules.vos_io import read_label_png
    from zoo.metrics.davis import DAVISSemiSupervised

    metric = DAVISSemiSupervised()
    for sequence in sequences:
        paths = sorted((gt_dir / sequence).glob("*.png"))
        gt = np.stack([read_label_png(path) for path in paths])
        pred = np.stack([read_label_png(results_dir / sequence / path.name) for path in paths])
        metric.update(pred, gt, sequence)
    return metric.compute()


def largest_difference(cli: dict, metric: dict) -> float:
    keys = [key for key in metric if key != "per_object"]
    differences = [abs(cli[key] - float(metric[key])) for key in keys]
    if set(cli["per_object"]) != set(metric["per_object"]):
        return float("inf")
    for name, scores in metric["per_object"].items():
        differences += [abs(cli["per_object"][name][key] - value) for key, value in scores.items()]
    return max(differences)


def run(args: argparse.Namespace) -> dict:
    golden = args.golden or (shared_dir() / "golden" if shared_dir() else None)
    if golden is None or not (golden / "davis480").is_dir():
        raise SystemExit("the golden davis480 vectors are needed: pass --golden or set ZOO_SHARED")
    official = json.loads((golden / "expected.json").read_text())["davis480"]["davis2017_official"]["global"]
    with tempfile.TemporaryDirectory(prefix="davis-metrics-") as folder:
        gt_dir, results_dir, sequences = build_workload(golden, Path(folder), args.copies)
        output = Path(folder) / "out.json"
        timings = {
            module: min(timed_cli(module, gt_dir, results_dir, output, args.workers) for _ in range(args.repeats))
            for module in ("zoo.evaluation.davis", "zoo.evaluate")
        }  # the dispatcher runs last, so `output` holds its JSON
        seconds_standalone, cpu_standalone = timings["zoo.evaluation.davis"]
        seconds, cpu_seconds = timings["zoo.evaluate"]
        cli = json.loads(output.read_text())
        metric = in_process_metric(gt_dir, results_dir, sequences)
    difference = largest_difference(cli, metric)
    golden_error = max(abs(cli[key] - official[key]) for key in metric if key != "per_object")
    if difference != 0.0 or golden_error > 1e-9:
        raise SystemExit(f"numbers differ: CLI vs metric {difference}, CLI vs golden official {golden_error}")
    frames = cli["evaluated_frames"]
    reference = frames / REFERENCE_FRAMES * REFERENCE_SECONDS[0]
    return {
        "frames": len(sequences) * 25,
        "evaluated_frames": frames,
        "objects": cli["num_objects"],
        "seconds": seconds,
        "ms_per_frame": 1000 * seconds / frames,
        "cpu_seconds": cpu_seconds,
        "seconds_without_dispatcher": seconds_standalone,
        "cpu_seconds_without_dispatcher": cpu_standalone,
        "load_average_1min": os.getloadavg()[0],
        "reference_seconds_estimate": reference,
        "reference_seconds_range": [frames / REFERENCE_FRAMES * s for s in REFERENCE_SECONDS],
        "speedup_vs_official": reference / seconds,
        "speedup_vs_official_without_dispatcher": reference / seconds_standalone,
        "cli_vs_metric_max_abs_difference": difference,
        "cli_vs_golden_official_max_abs_difference": golden_error,
    }
