"""ALBA inference speed and memory: `python -m recipes.benchmark alba`.

Two figures per device, in frames per second, on the first `--frames` frames of a real DAVIS 2016 480p video
(`../shared/realdata/DAVIS2016`, `--sequence`, default blackswan; optionally downscaled with `--height`):

- end to end, cold cache: `ALBASegmenter.segment(frames, cache_dir=<a fresh empty folder>)`, i.e. Mask R-CNN
  proposals, DIS flow and the grouping of every frame. Model loading and first-call allocations are not timed: the
  proposal model is built and one `segment` call on two frames of another video name comes first (so the timed
  video's cache entries are still absent; the JSON checks that every timed frame ran the detector and the flow).
- grouping alone, inputs cached: the frames' proposals and flow are read from that cache into memory first (the
  `Episode`), then only `rollout` with the arg-max policy is timed: the selection / assignment crops, both
  networks and the grouping state. One untimed rollout on other copies of the frames comes first (the crops are
  memoised per frame object, so the timed rollout gets fresh ones).

Model: `--model`, a registered name (default "alba-davis") or a checkpoint folder (a run's `model/` folder, e.g.
runs/alba-davis-default-try1/model); or `--random-weights`: an ALBASegmenter with randomly initialised networks at
`--net-width` / `--net-size` (the alba_davis recipe's defaults), labelled as such in the JSON. Its grouping
decisions are arbitrary (how many proposals it accepts changes the assignment work), so its speed is indicative only.

Devices: the CPU always (`--threads` torch threads), and CUDA when `torch.cuda.is_available()` (`--no-cuda` skips
it); DIS flow runs on the CPU either way. Memory: the process's peak resident set size so far (model and proposal
model loading included; the high-water mark never decreases, so the CUDA run's figure includes the CPU run's) and, on CUDA,
the peak of allocated GPU memory during the timed calls.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from recipes.benchmarks.ftmu import cpu_load, peak_resident_mib, resident_mib
from recipes.benchmarks._davis2016 import davis2016_video

DEFAULT_MODEL = "alba-davis"
RANDOM_NET_WIDTH, RANDOM_NET_SIZE = 0.25, 96  # recipes/alba_davis.py's --width / --size defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="registered name or checkpoint folder (a run's model/ folder) of an alba model")
    parser.add_argument("--random-weights", action="store_true",
                        help="time an ALBASegmenter with random networks instead of --model (no trained model yet)")
    parser.add_argument("--net-width", type=float, default=RANDOM_NET_WIDTH, help="--random-weights: width multiplier")
    parser.add_argument("--net-size", type=int, default=RANDOM_NET_SIZE, help="--random-weights: crop side")
    parser.add_argument("--frames", type=int, default=20, help="frames of the video timed (>= 2)")
    parser.add_argument("--sequence", default="blackswan", help="DAVIS 2016 sequence under ../shared/realdata")
    parser.add_argument("--height", type=int, default=None,
                        help="downscale the frames to this height (aspect kept); default: DAVIS 480p as is")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--no-cuda", action="store_true", help="CPU only, even when CUDA is available")


def davis_frames(count: int, sequence: str, height: int | None) -> tuple[list[np.ndarray], str]:
    """The first `count` RGB frames of a real DAVIS 2016 video, and a description of them."""
    video, root = davis2016_video("alba", sequence, count)
    frames = [video.frame(index) for index in range(count)]
    described = f"real: DAVIS 2016 480p {sequence} frames 0-{count - 1} ({root})"
    if height is not None and height != frames[0].shape[0]:
        from PIL import Image

        width = round(frames[0].shape[1] * height / frames[0].shape[0])
        frames = [np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in frames]
        described += f", downscaled to {height}x{width}"
    return frames, described


def load_model(args: argparse.Namespace):
    from pathlib import Path

    from zoo.alba.model import ALBASegmenter

    if args.random_weights:
        torch.manual_seed(0)  # ALBASegmenter initialises its networks from the global generator
        model = ALBASegmenter(net={"width": args.net_width, "size": args.net_size})
        return model, (f"RANDOM WEIGHTS (untrained networks, torch seed 0, width {args.net_width}, crops "
                       f"{args.net_size}): grouping decisions arbitrary, speed indicative only")
    from zoo.hub import load, load_folder

    folder = Path(args.model).is_dir()
    try:
        model = load_folder(args.model, expected_type="alba") if folder else load(args.model)
    except (KeyError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"--model {args.model!r} could not be loaded ({error}): give a run's model/ folder "
                         f"(e.g. runs/alba-davis-default-try1/model) or --random-weights") from error
    if getattr(model, "model_type", None) != "alba":
        raise SystemExit(f"--model {args.model!r} is a '{model.model_type}' model, not an alba one")
    return model, f"trained: {'checkpoint folder' if folder else 'registered model'} {args.model}"


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(model, frames: list[np.ndarray], sequence: str, device: str) -> dict:
    """End to end (cold cache) and grouping alone (cached inputs) on one device."""
    from zoo.alba.module import Episode

    model.to(device)
    with tempfile.TemporaryDirectory(prefix="alba-benchmark-") as cache_dir:
        builder = model.episode_builder(cache_dir)  # builds the proposal model: not timed
        model.segment(frames[:2], video="warm-up", cache_dir=cache_dir)  # first-call allocations, other cache keys
        detector_before, flow_before = builder.detector_calls, builder.flow_calls
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        synchronise(device)
        started = time.perf_counter()
        labels = model.segment(frames, video=sequence, cache_dir=cache_dir)
        synchronise(device)
        end_to_end = time.perf_counter() - started
        detector_calls, flow_calls = builder.detector_calls - detector_before, builder.flow_calls - flow_before
        if detector_calls != len(frames) or flow_calls != len(frames):
            raise RuntimeError(f"the end-to-end call ran the detector {detector_calls} and the flow {flow_calls} "
                               f"times for {len(frames)} frames: the cache was not cold, the time would not be real")

        # grouping alone: the inputs in memory (read back from the cache, no detector or flow call), new Frame
        # objects for each rollout so that none starts with memoised crops
        def cached_episode() -> Episode:
            return Episode(builder.episode(sequence, frames=frames).frames.materialise(), name=sequence)

        warm_up, timed = cached_episode(), cached_episode()
        if builder.detector_calls - detector_before != len(frames) or builder.flow_calls - flow_before != len(frames):
            raise RuntimeError("reading the cached inputs ran the detector or the flow again")
        with torch.inference_mode():
            model.rollout(warm_up)
            synchronise(device)
            started = time.perf_counter()
            rollout = model.rollout(timed)
            synchronise(device)
        grouping = time.perf_counter() - started
    if not np.array_equal(rollout.labels, labels):
        raise RuntimeError("the cached-input rollout's labels differ from segment's: not the same work was timed")
    kinds = [decision.kind for decision in rollout.decisions]
    proposals = [len(frame.masks) for frame in timed.frames]
    return {
        "end_to_end_frames_per_s": len(frames) / end_to_end,
        "end_to_end_seconds": end_to_end,
        "grouping_frames_per_s": len(frames) / grouping,
        "grouping_seconds": grouping,
        "proposals_and_flow_seconds_per_frame": (end_to_end - grouping) / len(frames),
        "detector_calls": detector_calls,
        "flow_calls": flow_calls,
        "proposals_per_frame": float(np.mean(proposals)),
        "selection_decisions": kinds.count("selection"),
        "assignment_decisions": kinds.count("assignment"),
        "object_ids": int(len(np.unique(labels[labels > 0]))),
        # current first: the peak read after it includes it, so peak >= after even if memory grows in between
        "rss_after_mib": resident_mib(),
        "peak_rss_mib": peak_resident_mib(),
        "peak_cuda_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def run(args: argparse.Namespace) -> dict:
    if args.frames < 2:
        raise SystemExit("--frames must be at least 2")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    frames, data = davis_frames(args.frames, args.sequence, args.height)
    rss_start = resident_mib()
    model, weights = load_model(args)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    results = {device: measure(model, frames, args.sequence, device) for device in devices}
    return {
        "data": data,
        "frame_size": list(frames[0].shape[:2]),
        "frames_timed": args.frames,
        "random_weights": bool(args.random_weights),
        "weights": weights,
        "net": model.config.to_dict(),
        "proposal_model": model.proposal_model,
        "max_proposals": model.max_proposals,
        "flow": model.flow_method,
        "results": results,
        "frames_per_s_meaning": {
            "end_to_end": "frames / wall time of one ALBASegmenter.segment call with an empty cache (proposals, "
                          "DIS flow, grouping), after a warm-up call on two frames under another video name",
            "grouping": "frames / wall time of one arg-max rollout over the frames' cached proposals and flow "
                        "already in memory (crops, both networks, grouping state)",
        },
        "rss_before_model_mib": rss_start,
        **cpu_load(load_before, args.threads),
    }
