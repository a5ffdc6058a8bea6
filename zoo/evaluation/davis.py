"""`python -m zoo.evaluate davis`: DAVIS 2017 J, F and J&F of saved label PNGs, as the official tool scores them.

    python -m zoo.evaluate davis --davis-root DAVIS --results-dir R --task semi-supervised [--set val] [--json OUT]
    python -m zoo.evaluate davis --gt-dir GT --results-dir R --sequences bear dog   # any <seq>/<frame>.png tree

R holds `<seq>/<frame>.png` label PNGs named like the ground truth (predictions for the unevaluated first and last
frames of the semi-supervised task may be absent). From the DAVIS root only `Annotations/480p` (unsupervised:
`Annotations_unsupervised/480p`) and, without `--sequences`, the image set are read: `ImageSets/<year>/<set>.txt`
(2017: one name per line) or `ImageSets/480p/<set>.txt` (2016: frame / annotation path pairs); a root without any
image set file is evaluated on the sequences found in R, with a note on stderr.

Frames are paired by name, and the ground truth of a sequence must be numbered without a gap (a missing file is an
error, not a shorter sequence). A 0/255 greyscale prediction is one object (the DAVIS 2016 convention), so for a
sequence with several objects it is refused, where the official tool stops on its id 255. The results are
returned (and printed by the dispatcher) as JSON with the official keys plus `per_object`, and the official tool's two
CSV files (`global_results-<set>.csv`, `per-sequence_results-<set>.csv`) are written into R; unlike the official tool,
existing CSV files are overwritten rather than reused. Sequences are scored in parallel processes (`--workers`).
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from datamodules.image_io import open_label_image
from datamodules.vos_io import labels_from_image, objects_in_first_frame
from zoo.evaluate import check_output_file, print_results
from zoo.metrics.davis import GLOBAL_KEYS, TASKS, SequenceResult, evaluate_sequence, summarize

ANNOTATION_FOLDERS = {"semi-supervised": "Annotations", "unsupervised": "Annotations_unsupervised"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ground_truth = parser.add_mutually_exclusive_group(required=True)
    ground_truth.add_argument("--davis-root", type=Path, help="DAVIS folder (holds Annotations/480p, ImageSets)")
    ground_truth.add_argument("--gt-dir", type=Path, help="instead of --davis-root: folder of <seq>/<frame>.png labels")
    parser.add_argument("--results-dir", type=Path, required=True, help="folder of <seq>/<frame>.png predicted labels")
    parser.add_argument("--task", choices=TASKS, default="semi-supervised")
    parser.add_argument(
        "--sequences", nargs="+", default=None, help="default: ImageSets/<year>/<set>.txt (all with --gt-dir)"
    )
    parser.add_argument("--set", default="val", help="image set; also names the CSV files (default: val)")
    parser.add_argument("--year", default="2017", help="ImageSets year (default: 2017)")
    parser.add_argument("--resolution", default="480p", help="annotation resolution folder (default: 480p)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per available core)")


def run(args: argparse.Namespace) -> dict:
    for csv_path in official_csv_paths(args.results_dir, args.set):
        check_output_file(csv_path, "--results-dir (official CSV)", "davis")
    try:
        gt_dir = _ground_truth_dir(args)
        sequences = _sequence_names(args, gt_dir)
        results = evaluate_folders(gt_dir, args.results_dir, sequences, args.task, args.workers)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"python -m zoo.evaluate davis: error: {error}") from error
    write_official_csvs(results, args.results_dir, args.set)
    return results


def _ground_truth_dir(args) -> Path:
    if args.gt_dir is not None:
        folder = args.gt_dir
    else:
        folder = args.davis_root / ANNOTATION_FOLDERS[args.task] / args.resolution
    if not folder.is_dir():
        raise FileNotFoundError(f"ground-truth folder {folder} does not exist (check --davis-root / --gt-dir / --task)")
    if not args.results_dir.is_dir():
        raise FileNotFoundError(f"results folder {args.results_dir} does not exist")
    return folder


def _sequence_names(args, gt_dir: Path) -> list[str]:
    if args.sequences:
        return list(args.sequences)
    if args.gt_dir is not None:
        return sorted(path.name for path in gt_dir.iterdir() if path.is_dir())
    folders = [args.davis_root / "ImageSets" / args.year, args.davis_root / "ImageSets" / args.resolution]
    for folder in folders:
        if (folder / f"{args.set}.txt").is_file():
            return read_image_set(folder / f"{args.set}.txt")
    available = sorted({path.stem for folder in folders for path in folder.glob("*.txt")})
    if available:
        raise FileNotFoundError(
            f"no image set {args.set!r} in {folders[0]} or {folders[1]} (available: {', '.join(available)}); "
            "fix --set / --year, or name the sequences with --sequences"
        )
    names = sorted(path.name for path in args.results_dir.iterdir() if path.is_dir())
    print(f"note: no image set file in {folders[0]} or {folders[1]}: evaluating the {len(names)} sequence(s) "
          f"of {args.results_dir}", file=sys.stderr)
    return names


def read_image_set(path: Path) -> list[str]:
    """Sequence names of an image set file, in order: 2017 lists names, 2016 frame / annotation path pairs."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        parts = line.split()[0].strip("/").split("/")
        name = parts[-2] if len(parts) >= 2 else parts[0]
        if name not in names:
            names.append(name)
    return names


def read_sequence(gt_dir: Path, results_dir: Path, sequence: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) ground-truth and predicted labels; unevaluated prediction frames are left at 0 and not read."""
    gt_paths = _ground_truth_paths(gt_dir / sequence)
    first, _ = _read_sized(gt_paths[0], None)
    num_objects = objects_in_first_frame(first, gt_paths[0])
    gt = np.empty((len(gt_paths), *first.shape), dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[0] = first
    evaluated = range(1, len(gt_paths) - 1) if task == "semi-supervised" else range(len(gt_paths))
    for index, gt_path in enumerate(gt_paths):
        if index:
            gt[index], _ = _read_sized(gt_path, first.shape)
        if index in evaluated:
            pred_path = results_dir / sequence / gt_path.name
            if not pred_path.is_file():
                raise FileNotFoundError(f"missing prediction {pred_path} (predictions are named like {gt_path})")
            pred[index], binary = _read_sized(pred_path, first.shape)
            if binary and num_objects > 1:
                raise ValueError(
                    f"{pred_path} is a binary 0/255 mask, but {sequence!r} has {num_objects} objects: the official "
                    f"tool stops on it (255 is no object id); save the ids 1..{num_objects} as a palette PNG"
                )
    return gt, pred


def _ground_truth_paths(folder: Path) -> list[Path]:
    """The label PNGs of one sequence in frame order; a gap in their numbering is an error naming the missing file."""
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no ground-truth label PNGs in {folder}")
    numbered = [path for path in paths if path.stem.isdigit()]
    if numbered and len(numbered) != len(paths):
        odd = next(path for path in paths if not path.stem.isdigit())
        raise ValueError(f"{odd}: {odd.stem!r} is not a frame number like its neighbours (a copy?); remove or rename")
    if numbered:
        paths.sort(key=lambda path: int(path.stem))
        start, width = int(paths[0].stem), len(paths[0].stem)
        for offset, path in enumerate(paths):
            if int(path.stem) != start + offset:
                missing = folder / f"{start + offset:0{width}d}.png"
                raise FileNotFoundError(
                    f"ground truth {missing} is missing (the next file is {path.name}); frames are paired by name, "
                    "so every frame needs its annotation: restore it"
                )
    return paths


def read_palette_png_fast(path: Path) -> np.ndarray | None:
    """Ids of an 8-bit, non-interlaced palette PNG whose rows are all unfiltered (as Pillow and DAVIS save them); None
    for any other PNG.

    Inflating the pixel data directly takes about half the CPU time of Pillow's decode plus its copy into numpy, and
    decoding is most of the evaluation's time. The ids are exactly what `read_label_png` returns for such files.
    """
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height, bit_depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if bit_depth != 8 or colour_type != 3 or interlace != 0:
        return None
    chunks, position = [], 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8 : position + 8 + length])
        elif kind == b"IEND":
            break
        position += 12 + length
    try:
        raw = zlib.decompress(b"".join(chunks), bufsize=height * (width + 1))
    except zlib.error:
        return None
    if len(raw) != height * (width + 1):
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, width + 1)
    if rows[:, 0].any():  # a filtered row: leave the unfiltering to Pillow
        return None
    return rows[:, 1:]


def _read_sized(path: Path, shape: tuple[int, ...] | None) -> tuple[np.ndarray, bool]:
    """Ids of a label PNG, checked against `shape`, and whether the file was a 0/255 greyscale (binary) mask."""
    labels, binary = read_palette_png_fast(path), False
    if labels is None:
        kind, pixels = open_label_image(path)
        labels = labels_from_image(kind, pixels, path)
        binary = kind == "grey" and int(pixels.max(initial=0)) == 255 and int(labels.max(initial=0)) == 1
    if shape is not None and labels.shape != shape:
        raise ValueError(
            f"{path} is {labels.shape[1]}×{labels.shape[0]}, but the sequence's masks are {shape[1]}×{shape[0]}"
        )
    return labels, binary


def _single_threaded_opencv() -> None:
    # One process per core already; OpenCV's own thread pool would only oversubscribe (and may not survive a fork).
    import cv2

    cv2.setNumThreads(0)


def _evaluate_one(job: tuple[Path, Path, str, str]) -> tuple[SequenceResult, np.ndarray]:
    gt_dir, results_dir, sequence, task = job
    gt, pred = read_sequence(gt_dir, results_dir, sequence, task)
    result = evaluate_sequence(gt, pred, task, sequence)
    return result, result.statistics()


def evaluate_folders(
    gt_dir: Path, results_dir: Path, sequences: list[str], task: str = "semi-supervised", workers: int | None = None
) -> dict:
    """Score every sequence (in parallel processes) and summarise; the dict that the CLI prints."""
    if not sequences:
        raise ValueError(f"no sequences to evaluate in {gt_dir}")
    jobs = [(Path(gt_dir), Path(results_dir), sequence, task) for sequence in sequences]
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers or available, len(jobs)))
    if workers == 1:
        scored = [_evaluate_one(job) for job in jobs]
    else:
        # fork: workers start in milliseconds and inherit the imported modules.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(workers, initializer=_single_threaded_opencv) as pool:
            scored = pool.map(_evaluate_one, jobs, chunksize=1)
    names = [name for result, _ in scored for name in result.object_names]
    statistics = np.concatenate([rows for _, rows in scored])
    results = summarize(names, statistics)
    if task == "unsupervised":
        for result, _ in scored:
            for name, gt_id, pred_id in zip(result.object_names, result.gt_ids, result.pred_ids):
                results["per_object"][name].update({"gt_object": gt_id, "pred_id": pred_id})
    results.update(
        task=task,
        num_sequences=len(scored),
        num_objects=len(names),
        evaluated_frames=int(sum(result.j.shape[1] for result, _ in scored)),
    )
    return results


def _official_number(value: float) -> str:
    return "" if np.isnan(value) else f"{value:.3f}"  # pandas' to_csv(float_format="%.3f"), NaN as an empty cell


def official_csv_paths(results_dir: Path, image_set: str = "val") -> tuple[Path, Path]:
    return (Path(results_dir) / f"global_results-{image_set}.csv",
            Path(results_dir) / f"per-sequence_results-{image_set}.csv")


def write_official_csvs(results: dict, results_dir: Path, image_set: str = "val") -> tuple[Path, Path]:
    """`global_results-<set>.csv` and `per-sequence_results-<set>.csv` with the official tool's columns and format."""
    global_path, per_object_path = official_csv_paths(results_dir, image_set)
    with open(global_path, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(GLOBAL_KEYS)
        writer.writerow([_official_number(results[key]) for key in GLOBAL_KEYS])
    with open(per_object_path, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["Sequence", "J-Mean", "F-Mean"])
        for name, scores in results["per_object"].items():
            writer.writerow([name, _official_number(scores["J-Mean"]), _official_number(scores["F-Mean"])])
    return global_path, per_object_path


def main(argv: list[str] | None = None) -> dict:
    """Standalone entry (`python -m zoo.evaluation.davis ...`), same options as `python -m zoo.evaluate davis`.

    It skips the dispatcher; `recipes.benchmarks.davis_metrics` times both entries to show what that costs.
    """
    parser = argparse.ArgumentParser(prog="python -m zoo.evaluation.davis", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.json is not None:
        check_output_file(args.json, "--json", "davis")
    results = run(args)
    print_results(results, args.json)
    return results


if __name__ == "__main__":
    main()
