"""Evaluate a trained FTMU model on the paper's other benchmarks: VOT2018-LT, SegTrack v2, YouTube-Objects (and DAVIS).

    python -m recipes.ftmu_eval --benchmark segtrack --model runs/ftmu-davis/model           # synthetic SegTrack v2
    python -m recipes.ftmu_eval --benchmark segtrack --data-dir SegTrackv2 --model ftmu-davis
    python -m recipes.ftmu_eval --benchmark youtube-objects --data-dir youtube_masks --rows no-update iou-update full
    python -m recipes.ftmu_eval --benchmark vot-lt --data-dir VOT2018-LT --max-frames 500 --json vot.json
    python -m recipes.ftmu_eval --benchmark davis --data-dir DAVIS --year 2017 --split val

Nothing is trained: the model is a registered zoo name (`ftmu-davis`) or a checkpoint folder (a run's ``model/``
written by `recipes.ftmu_davis`). Without ``--data-dir`` the benchmark's synthetic writer makes a few small videos in
the benchmark's own layout (the JSON says ``"synthetic": true``); they exercise the pipeline, they measure nothing
about real videos.

Every benchmark is box-initialised with the first frame's boxes: a target's mask on a frame is its template's mask
after the agent's decision (`zoo.ftmu.env`). The rows are Table 2's (`recipes._ftmu_common.ROWS`): ``no-update`` and
``iou-update`` need no agent; ``rl-no-redetection`` and ``full`` run the checkpoint's actor (arg-max actions);
``supervised`` needs Table 2's supervised agent, which a checkpoint does not hold, so it is skipped with a message.

Protocols:

* SegTrack v2 and YouTube-Objects (the paper reports J only there): first-frame boxes are the tight boxes of the
  first frame's ground-truth masks (``sequence.first_frame_boxes()``), as the paper derives them. J (region similarity,
  `zoo.metrics.davis.jaccard`, an empty union scoring 1) is computed on every annotated frame but the first (the
  given one), per object; a sequence's J is the mean over its objects, and ``J-Mean`` the mean over all objects of
  the benchmark (the DAVIS convention; ``J-Mean-sequences`` averages the sequences instead). SegTrack v2 annotates
  every frame; YouTube-Objects about every 10th, and its merged foregrounds are split into instances
  (``split_instances=True``, see `datamodules.youtube_objects`), as the paper splits them.
* DAVIS: the official semi-supervised J&F (`zoo.metrics.davis.evaluate_semi_supervised`: first and last frame left
  out) on the frames processed.
* VOT2018-LT (seeds §0.6): the tracker starts from the first frame's ground-truth box; on every later frame it
  reports the bounding box of the target's final mask (no region when the mask is empty) with the confidence of that
  frame's preliminary result (its S_IOU matching score, or 1 / (1 + L2 distance) when it was re-detected, 0 when no
  candidate matched). As the VOT toolkit does, the first frame carries the initialisation marker (no region, no
  confidence): it is never reported and counts as one visible frame in the recall's denominator. Precision, recall
  and F are `zoo.metrics.vot_lt.longterm_scores` (vot-toolkit's long-term analysis: per-sequence curves averaged, the
  threshold of maximal F). With ``--run-dir`` the boxes and confidences are written as the toolkit writes a
  long-term experiment (``RUN/results/<row>/longterm/<seq>/<seq>_001.txt`` and ``_001_confidence.value``), which
  ``python -m zoo.evaluate vot-lt`` scores again when no ``--max-frames`` cut the sequences.

``--max-frames N`` processes (and scores) only the first N frames of each sequence, for CPU runs (VOT-LT sequences run
to thousands of frames); the JSON records it. Candidates come from the model's instance segmenter (the zoo's
``segmenter-vos`` unless the checkpoint names another), cached on disk for the run (``--cache-dir``, default
``RUN/cache`` or a temporary folder) so that rows share the segmenter's work.

Output: one JSON line on stdout (and ``--json``): ``benchmark``, ``data`` (what and where, synthetic or real),
``model``, ``frames`` (processed per sequence, ``max_frames``), ``rows`` (per row: ``mean`` and ``per_sequence``
figures, seconds per frame, how often the template was replaced, re-detections), ``skipped_rows``, the paper's
figure for reference, and notes. With ``--run-dir``: ``results.json`` and the per-frame results of every row.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recipes._ftmu_common import ROWS, policy_for
from zoo.ftmu.env import REPLACE, FTMUConfig, Tracker, mask_box

BENCHMARKS = ("vot-lt", "segtrack", "youtube-objects", "davis")
DEFAULT_ROWS = ["full"]
PROG = "python -m recipes.ftmu_eval"

# The paper's figures (Sun et al., CVPR 2020; Table 1, Table 2 and Sec. 5.2), quoted for reference, never measured.
PAPER = {
    "segtrack": "SegTrack v2 J 79.2 (Table 1, 'Ours' = the full row)",
    "youtube-objects": "YouTube-Objects J 79.3 (Table 1, 'Ours' = the full row)",
    "vot-lt": "VOT2018-LT (LTB35) F-score 0.622 (Sec. 5.2, Fig. 6; 'Ours' = the full row)",
    "davis": "DAVIS 2017 val Jm (Table 2): no update 27.3, IoU update 63.1, appearance update 67.2, RL w/o "
             "re-detection 68.1, full 69.1, supervised 60.2",
}

# What --data-dir must hold, for the error messages.
LAYOUTS = {
    "segtrack": "a SegTrack v2 root (JPEGImages/<seq>/, GroundTruth/<seq>/, ImageSets/)",
    "youtube-objects": "the YouTube-Objects ground truth root youtube_masks (<category>/data/<video>/shots/<shot>/"
                       "labels/ and images/)",
    "vot-lt": "a VOT long-term root (list.txt, <seq>/groundtruth.txt, <seq>/color/00000001.jpg ...)",
    "davis": "a DAVIS root (JPEGImages/480p/, Annotations/480p/, ImageSets/)",
}

# Small synthetic trees: (videos, frames) per benchmark when --synthetic-videos / --synthetic-frames are not given.
SYNTHETIC_DEFAULTS = {"segtrack": (3, 16), "youtube-objects": (3, 17), "vot-lt": (2, 40), "davis": (2, 16)}


class InputError(Exception):
    """Bad input (data, model, options): the message names the path or option and the fix."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the benchmark's root (default: a few small synthetic videos in its layout)")
    parser.add_argument("--model", default="ftmu-davis",
                        help="a registered zoo name or a checkpoint folder (a run's model/ from recipes.ftmu_davis)")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS),
                        help=f"Table 2 rows to run (default: {' '.join(DEFAULT_ROWS)})")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="write results.json and every row's per-frame results here")
    parser.add_argument("--sequences", nargs="+", default=None, metavar="NAME", help="evaluate only these sequences")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="process (and score) only the first N frames of each sequence")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="segmenter candidate cache (default RUN_DIR/cache, else a temporary folder)")
    davis = parser.add_argument_group("DAVIS")
    davis.add_argument("--year", type=int, default=2017, choices=(2016, 2017))
    davis.add_argument("--split", default="val")
    synthetic = parser.add_argument_group("synthetic data (without --data-dir)")
    synthetic.add_argument("--synthetic-videos", type=int, default=None)
    synthetic.add_argument("--synthetic-frames", type=int, default=None)
    synthetic.add_argument("--synthetic-size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    synthetic.add_argument("--synthetic-seed", type=int, default=2020,
                           help="render seed (default 2020: videos no recipes.ftmu_davis run with a small --seed "
                                "trains on)")
    return parser


# -- data ----------------------------------------------------------------------------------------------------------


def _synthetic_tree(layout: str, writer, **options) -> Path:
    from datamodules.synthetic_vos import synthetic_tree

    return synthetic_tree(layout, writer, **options)


def synthetic_data(args) -> Path:
    videos, frames = SYNTHETIC_DEFAULTS[args.benchmark]
    videos = args.synthetic_videos or videos
    frames = args.synthetic_frames or frames
    height, width = args.synthetic_size
    seed = args.synthetic_seed
    if args.benchmark == "segtrack":
        from datamodules.synthetic_vos import synthetic_root

        return synthetic_root("segtrack_v2", num_sequences=videos, num_frames=frames, height=height, width=width,
                              seed=seed)
    if args.benchmark == "davis":
        from datamodules.synthetic_vos import synthetic_root

        return synthetic_root("davis2017", num_train=0, num_val=videos, num_frames=frames, height=height, width=width,
                              seed=seed)
    if args.benchmark == "youtube-objects":
        from datamodules.youtube_objects import write_youtube_objects

        return _synthetic_tree("youtube_objects", write_youtube_objects, num_videos=videos, num_frames=frames,
                               label_step=4, height=height, width=width, seed=seed)
    from datamodules.vot_lt import write_vot_lt

    return _synthetic_tree("vot_lt", write_vot_lt, num_sequences=videos, num_frames=frames,
                           image_size=(height, width), seed=seed)


def load_data(args) -> tuple[list, dict]:
    """(sequences, the JSON's "data" entry); InputError naming the path and the fix when the data cannot be read."""
    synthetic = args.data_dir is None
    if synthetic:
        root = synthetic_data(args)
    else:
        root = args.data_dir
        if not root.is_dir():
            raise InputError(f"--data-dir {root} does not exist: point it at {LAYOUTS[args.benchmark]}, or leave "
                             "--data-dir out to run on small synthetic videos")
    try:
        if args.benchmark == "segtrack":
            from datamodules.segtrack import SegTrackV2

            sequences, what = list(SegTrackV2(root, sequences=args.sequences)), "SegTrack v2"
        elif args.benchmark == "youtube-objects":
            from datamodules.youtube_objects import YouTubeObjects

            sequences = list(YouTubeObjects(root, sequences=args.sequences, split_instances=True))
            what = "YouTube-Objects (Jain & Grauman masks, foregrounds split into instances)"
        elif args.benchmark == "davis":
            from datamodules.davis import DAVIS

            year = 2017 if synthetic else args.year
            sequences = list(DAVIS(root, year=year, split=args.split, sequences=args.sequences))
            what = f"DAVIS {year} {args.split}"
        else:
            from datamodules.vot_lt import load_vot_lt

            sequences, what = load_vot_lt(root, args.sequences), "VOT long-term (VOT2018-LT / LTB35 layout)"
    except (OSError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise InputError(f"cannot read {args.benchmark} data at {root}: {message} (expected "
                         f"{LAYOUTS[args.benchmark]})") from error
    if not sequences:
        raise InputError(f"no sequences found in {root} ({LAYOUTS[args.benchmark]}); check the folder or --sequences")
    if synthetic:
        height, width = args.synthetic_size
        description = (f"synthetic {what} ({len(sequences)} videos of {height}x{width} written by the zoo's "
                       f"synthetic writer, seed {args.synthetic_seed}); not the benchmark's real videos")
    else:
        description = f"{what} at {root} ({len(sequences)} sequences)"
    data = {"synthetic": synthetic, "description": description, "root": str(root),
            "sequences": [sequence.name for sequence in sequences]}
    return sequences, data


# -- model ---------------------------------------------------------------------------------------------------------


def load_model(spec: str):
    """(FTMUSegmenter in eval mode on the CPU, where it came from)."""
    from zoo.hub import CheckpointError, load, load_folder

    path = Path(spec)
    try:
        if path.is_dir():
            model, source = load_folder(path, expected_type="ftmu"), f"checkpoint folder {path}"
        else:
            from zoo import registry

            if spec not in registry.list_models():
                looks_like_path = "/" in spec or spec.startswith((".", "~")) or bool(path.suffix)
                what = f"folder {path} does not exist" if looks_like_path else (
                    f"{spec!r} is not a registered zoo model (registered: "
                    f"{', '.join(registry.list_models()) or 'none'}) nor a folder")
                raise InputError(f"--model {spec}: {what}; train one with `python -m recipes.ftmu_davis --run-dir "
                                 "RUN` and pass --model RUN/model (or a registered ftmu name)")
            model, source = load(spec), f"registered zoo model {spec!r}"
    except (OSError, ValueError, KeyError, CheckpointError) as error:
        raise InputError(f"--model {spec}: cannot load an ftmu checkpoint: {error}") from error
    if getattr(model, "model_type", None) != "ftmu":
        raise InputError(f"--model {spec} is a '{model.model_type}' model, not an ftmu one")
    return model.float().cpu().eval(), source


# -- running a row ---------------------------------------------------------------------------------------------------


def video_key(name: str) -> str:
    """A sequence name as a cache-safe video name (YouTube-Objects names hold '/')."""
    key = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
    return key if key[:1].isalnum() else f"v{key}"


class RowStats:
    """Per-sequence tallies of a row: agent decisions, replacements, re-detections, tracked frames and seconds."""

    def __init__(self):
        self.decisions = self.replaced = self.redetections = self.frames = 0
        self.seconds = 0.0

    def as_dict(self) -> dict:
        return {"replace_rate": self.replaced / self.decisions if self.decisions else None,
                "redetections": self.redetections,
                "seconds_per_frame": self.seconds / self.frames if self.frames else None}


def track(tracker: Tracker, policy, name: str, count: int, frame_at, boxes: dict, on_frame) -> RowStats:
    """Box-initialised run over frames 0..count-1 (boxes x0, y0, x1, y1); ``on_frame(index, labels, log)`` sees each
    frame's label map as it is made. Label maps and decisions are not kept (VOT-LT sequences are thousands of
    frames long)."""
    stats = RowStats()
    with torch.inference_mode():
        episode = tracker.start(video_key(name), 0, frame_at(0), boxes)
        on_frame(0, episode.labels[-1], episode.logs[-1])
        episode.labels.clear()
        for index in range(1, count):
            frame = frame_at(index)
            started = time.perf_counter()
            labels = tracker.step(episode, index, frame, policy)
            stats.seconds += time.perf_counter() - started
            stats.frames += 1
            log = episode.logs[-1]
            stats.redetections += len(log.redetected)
            stats.decisions += len(episode.decisions)
            stats.replaced += sum(decision.action == REPLACE for decision in episode.decisions)
            episode.decisions.clear()
            episode.labels.clear()
            on_frame(index, labels, log)
            episode.logs[-1] = None  # keep the list's length, not the logs
    return stats


def frames_to_run(length: int, max_frames: int | None) -> int:
    return length if max_frames is None else min(length, max_frames)


def run_segmentation_row(row, sequences, make_tracker, policy, args, out_dir: Path | None, bar) -> dict:
    """SegTrack v2 / YouTube-Objects: J per object on the annotated frames after the first (module docstring)."""
    from datamodules.vos_io import write_label_png
    from zoo.metrics.davis import VOID_LABEL, jaccard

    per_sequence, object_scores = {}, []
    for sequence in sequences:
        count = frames_to_run(len(sequence), args.max_frames)
        scored = [index for index in sequence.annotated_frames if 0 < index < count]
        predictions = {}
        boxes = sequence.first_frame_boxes()
        if not boxes:
            per_sequence[sequence.name] = {"J-Mean": None, "J-per-object": {}, "frames": len(sequence),
                                           "processed": 0, "scored_frames": 0, "replace_rate": None,
                                           "redetections": 0, "seconds_per_frame": None,
                                           "skipped": "no object in the first frame's ground truth"}
            bar.update(1)
            continue

        def keep(index, labels, log):
            if index in scored:
                predictions[index] = labels.copy()
            if out_dir is not None:
                write_label_png(out_dir / sequence.name / f"{sequence.frame_names[index]}.png", labels)

        stats = track(make_tracker(row), policy, sequence.name, count, sequence.frame, boxes, keep)
        objects = {}
        if scored:
            truth = np.stack([sequence.require_mask(index) for index in scored])
            predicted = np.stack([predictions[index] for index in scored])
            void = truth == VOID_LABEL
            for object_id in sequence.object_ids:
                objects[str(object_id)] = float(np.mean(jaccard(predicted == object_id, truth == object_id, void)))
            object_scores += list(objects.values())
        per_sequence[sequence.name] = {
            "J-Mean": float(np.mean(list(objects.values()))) if objects else None,
            "J-per-object": objects,
            "frames": len(sequence), "processed": count, "scored_frames": len(scored),
            **stats.as_dict(),
        }
        bar.update(1)
    means = [s["J-Mean"] for s in per_sequence.values() if s["J-Mean"] is not None]
    return {
        "mean": {"J-Mean": float(np.mean(object_scores)) if object_scores else None,
                 "J-Mean-sequences": float(np.mean(means)) if means else None,
                 "objects": len(object_scores), "sequences_scored": len(means)},
        "per_sequence": per_sequence,
    }


def run_davis_row(row, sequences, make_tracker, policy, args, out_dir: Path | None, bar) -> dict:
    """DAVIS: the official semi-supervised J&F of the processed frames."""
    from datamodules.vos_io import write_label_png
    from recipes._ftmu_common import sequence_scores
    from zoo.metrics.davis import summarize

    per_sequence, names, statistics = {}, [], []
    for sequence in sequences:
        count = frames_to_run(len(sequence), args.max_frames)
        labels_of = []

        def keep(index, labels, log):
            labels_of.append(labels.copy())
            if out_dir is not None:
                write_label_png(out_dir / sequence.name / f"{sequence.frame_names[index]}.png", labels)

        stats = track(make_tracker(row), policy, sequence.name, count, sequence.frame,
                      sequence.first_frame_boxes(), keep)
        object_names, rows_of, scores = sequence_scores(sequence, np.stack(labels_of))
        names += object_names
        statistics.append(rows_of)
        per_sequence[sequence.name] = {
            **scores, "frames": len(sequence), "processed": count, "scored_frames": count - 2, **stats.as_dict(),
        }
        bar.update(1)
    summary = summarize(names, np.concatenate(statistics))
    return {"mean": {key: summary[key] for key in ("J&F-Mean", "J-Mean", "F-Mean")} | {"objects": len(names)},
            "per_sequence": per_sequence}


def _value(number: float) -> str:
    return f"{number:.17g}"


def write_vot_results(folder: Path, name: str, boxes: np.ndarray, confidence: np.ndarray) -> None:
    """``<name>/<name>_001.txt`` and ``_001_confidence.value`` as vot-toolkit writes a long-term experiment: the
    initialisation frame as the special code 1 with a blank confidence, no region as nan,nan,nan,nan."""
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    regions, values = ["1"], [""]
    for box, value in zip(boxes[1:], confidence[1:]):
        regions.append("nan,nan,nan,nan" if np.isnan(box).any() else ",".join(_value(v) for v in box))
        values.append("nan" if np.isnan(value) else _value(value))
    (target / f"{name}_001.txt").write_text("\n".join(regions) + "\n")
    (target / f"{name}_001_confidence.value").write_text("\n".join(values) + "\n")


def vot_predictions(row, sequence, make_tracker, policy, count: int) -> tuple[np.ndarray, np.ndarray, RowStats]:
    """(count, 4) x, y, w, h boxes (NaN: no region; row 0 the initialisation marker) and (count,) confidences."""
    from zoo.ftmu.model import xywh_to_corners

    boxes = np.full((count, 4), np.nan)
    confidence = np.full(count, np.nan)

    def keep(index, labels, log):
        if index == 0:
            return  # the initialisation frame: no region, no confidence (the toolkit's marker)
        box = mask_box(labels == 1)
        if box is not None:
            boxes[index] = (box[0], box[1], box[2] - box[0], box[3] - box[1])
        confidence[index] = log.match_scores.get(1, 0.0)

    stats = track(make_tracker(row), policy, sequence.name, count, sequence.read_frame,
                  {1: xywh_to_corners(sequence.boxes[0])}, keep)
    return boxes, confidence, stats


def run_vot_row(row, sequences, make_tracker, policy, args, out_dir: Path | None, bar) -> dict:
    from zoo.metrics.vot_lt import longterm_scores

    scored, extra = {}, {}
    for sequence in sequences:
        count = frames_to_run(len(sequence), args.max_frames)
        boxes, confidence, stats = vot_predictions(row, sequence, make_tracker, policy, count)
        if out_dir is not None:
            write_vot_results(out_dir / "longterm", sequence.name, boxes, confidence)
        scored[sequence.name] = (boxes, confidence, sequence.boxes[:count], sequence.bounds)
        extra[sequence.name] = {"frames": len(sequence), "processed": count,
                                "visible": int(sequence.visible[:count].sum()),
                                "reported_empty": int(np.isnan(boxes[1:]).any(axis=1).sum()), **stats.as_dict()}
        bar.update(1)
    scores = longterm_scores(scored)
    best = scores["threshold_index"]
    per_sequence = {}
    for name, curves in scores["per_sequence"].items():
        precision, recall = float(curves["precision_curve"][best]), float(curves["recall_curve"][best])
        f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        per_sequence[name] = {"precision": precision, "recall": recall, "f_score": f_score, **extra[name]}
    return {"mean": {"precision": scores["precision"], "recall": scores["recall"], "f_score": scores["f_score"],
                     "threshold": scores["threshold"]},
            "per_sequence": per_sequence}


RUNNERS = {"segtrack": run_segmentation_row, "youtube-objects": run_segmentation_row, "davis": run_davis_row,
           "vot-lt": run_vot_row}

METRICS = {
    "segtrack": "J (region similarity), mean over objects, on every annotated frame but the first",
    "youtube-objects": "J (region similarity), mean over objects, on every annotated frame but the first",
    "davis": "official semi-supervised J&F (first and last processed frame left out)",
    "vot-lt": "VOT long-term precision / recall / F-score (vot-toolkit's analysis, zoo.metrics.vot_lt)",
}


# -- main ------------------------------------------------------------------------------------------------------------


def _json_safe(value):
    """NaN -> None and ±inf -> "+inf" / "-inf", so that the output is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "+inf" if value > 0 else "-inf"
    return value


def evaluate(args, *, candidates=None, states=None, model=None) -> dict:
    """Run the rows on the benchmark and return the JSON's dict.

    ``candidates`` (a `zoo.ftmu.env.CandidateSource`) replaces the model's instance segmenter, ``states`` (a
    `StateEncoder`) its image encoder, and ``model`` an already loaded FTMUSegmenter (``args.model`` then only names
    it): tests inject small scripted stand-ins here; the command line always uses the checkpoint's own."""
    if args.max_frames is not None and args.max_frames < (3 if args.benchmark == "davis" else 2):
        raise InputError(f"--max-frames {args.max_frames} is too small: a sequence needs at least "
                         f"{3 if args.benchmark == 'davis' else 2} frames (the first one is given)")
    if args.threads:
        torch.set_num_threads(args.threads)
    sequences, data = load_data(args)
    if model is None:
        model, source = load_model(args.model)
    else:
        source = f"{args.model} (given to evaluate())"
    from zoo.ftmu.model import ProposalCandidates, proposal_generator
    from zoo.ftmu.networks import FeatureStates

    temporary = None
    generator = None
    if candidates is None:
        cache_dir = args.cache_dir or (args.run_dir / "cache" if args.run_dir else None)
        if cache_dir is None:
            temporary = tempfile.TemporaryDirectory(prefix="ftmu-eval-cache-")
            cache_dir = Path(temporary.name)
        generator = proposal_generator(model.proposal_model, model.box_score_thresh, model.detections_per_img,
                                       cache_dir)
        candidates = ProposalCandidates(generator)
        candidates_used = (f"the model's instance segmenter '{model.proposal_model}' (at most "
                           f"{model.detections_per_img} candidates of score >= {model.box_score_thresh}), on the "
                           "search region (the whole frame for re-detection and the appearance update)")
    else:
        candidates_used = f"injected candidate source {type(candidates).__name__} (not the model's segmenter)"
    states = states or FeatureStates(model.encoder, view=getattr(model, "state_view", "frame"))

    def make_tracker(row) -> Tracker:
        return Tracker(FTMUConfig(**{**model.tracker_config(), **row.overrides}), candidates, states)

    actors = {"rl": model.actor}
    rows, skipped = [], {}
    for slug in dict.fromkeys(args.rows):
        row = ROWS[slug]
        if row.decider not in ("keep", "replace") and row.decider not in actors:
            skipped[slug] = (f"'{row.title}' needs Table 2's {row.decider} agent; a checkpoint holds one actor (the RL "
                             "agent), so this row is skipped (recipes.ftmu_davis measures it on DAVIS, where it "
                             "trains that agent)")
            print(f"[ftmu_eval] skipping row {slug}: {skipped[slug]}", file=sys.stderr)
            continue
        rows.append(row)
    if not rows:
        raise InputError(f"--rows {' '.join(args.rows)}: nothing to run (every row asked for was skipped)")

    from recipes._progress import progress

    out_root = args.run_dir / "results" if args.run_dir else None
    measured = {}
    try:
        with progress(total=len(rows) * len(sequences), desc=f"FTMU rows x {args.benchmark} sequences",
                      unit="seq") as bar:
            for row in rows:
                started = time.perf_counter()
                result = RUNNERS[args.benchmark](row, sequences, make_tracker, policy_for(row, actors), args,
                                                 out_root / row.slug if out_root else None, bar)
                tracked = [s for s in result["per_sequence"].values() if s["seconds_per_frame"] is not None]
                frames = sum(s["processed"] - 1 for s in tracked)
                seconds = sum(s["seconds_per_frame"] * (s["processed"] - 1) for s in tracked)
                decisions = [s["replace_rate"] for s in result["per_sequence"].values()
                             if s["replace_rate"] is not None]
                measured[row.slug] = {
                    "title": row.title, **result,
                    "seconds_per_frame": seconds / frames if frames else None,
                    "replace_rate": float(np.mean(decisions)) if decisions else None,
                    "redetections": sum(s["redetections"] for s in result["per_sequence"].values()),
                    "wall_seconds": time.perf_counter() - started,
                }
    finally:
        if temporary is not None:
            temporary.cleanup()

    per_sequence_frames = {s.name: {"total": len(s), "processed": frames_to_run(len(s), args.max_frames)}
                           for s in sequences}
    notes = [
        "Box-initialised from the first frame's ground truth (tight boxes of the first masks; VOT-LT: its first "
        "ground-truth rectangle); actions are the actor's arg-max (deterministic).",
        f"Candidates: {candidates_used}.",
    ]
    if args.max_frames is not None:
        notes.append(f"--max-frames {args.max_frames}: only the first {args.max_frames} frames of each sequence were "
                     "processed and scored; figures are not comparable with full-sequence ones.")
    if args.benchmark == "vot-lt":
        notes.append("VOT-LT: frame 0 carries the toolkit's initialisation marker (no region, no confidence): never "
                     "reported, counted as visible in the recall; a frame's box is the bounding box of the target's "
                     "final mask, its confidence the matching score of the frame's preliminary result (S_IOU, or "
                     "1/(1+L2 distance) after re-detection, 0 when nothing matched).")
    unscored = [name for row in measured.values() for name, s in row["per_sequence"].items()
                if s.get("scored_frames") == 0]
    if unscored:
        notes.append(f"No annotated frame after the first within the processed frames of {sorted(set(unscored))}: "
                     "those sequences have no J and are left out of the means.")
    summary = {
        "benchmark": args.benchmark,
        "metric": METRICS[args.benchmark],
        "data": data,
        "model": {"source": source, "name": args.model, "backbone_weights": model.backbone_weights,
                  "proposal_model": model.proposal_model, "tracker": model.tracker_config()},
        "frames": {"max_frames": args.max_frames,
                   "processed": sum(f["processed"] for f in per_sequence_frames.values()),
                   "per_sequence": per_sequence_frames},
        "rows": measured,
        "skipped_rows": skipped,
        "paper": PAPER[args.benchmark] + " (quoted, not measured here)",
        "notes": notes,
    }
    if generator is not None:
        summary["segmenter_calls"] = generator.model_calls
    return _json_safe(summary)


def table(summary: dict) -> str:
    """A short human-readable table of the rows' means (stderr)."""
    lines = []
    for slug, row in summary["rows"].items():
        mean = ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                         for key, value in row["mean"].items())
        spf = row["seconds_per_frame"]
        lines.append(f"  {slug:<18} {mean}" + (f"  ({spf:.3f} s/frame)" if spf is not None else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, candidates=None, states=None, model=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        summary = evaluate(args, candidates=candidates, states=states, model=model)
    except InputError as error:
        raise SystemExit(f"{PROG}: error: {error}") from error
    summary["command"] = f"{PROG} {shlex.join(argv)}"
    text = json.dumps(summary)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    if args.run_dir is not None:
        args.run_dir.mkdir(parents=True, exist_ok=True)
        (args.run_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    kind = "synthetic" if summary["data"]["synthetic"] else "real"
    print(f"[ftmu_eval] {args.benchmark} ({kind}): {summary['data']['description']}\n{table(summary)}",
          file=sys.stderr)
    print(text, flush=True)
    return summary


if __name__ == "__main__":
    main()
