"""FTMU inference speed end to end: seconds per frame of `FTMUSegmenter.segment` (`python -m recipes.benchmark ftmu`).

`segment` runs on the first `--frames` frames of a DAVIS 2016 480p sequence from `../shared/realdata/DAVIS2016`
(synthetic 480x854 frames of `datamodules.synthetic_vos.render_video` when that is absent; the JSON says which),
initialised with the first frame's box. Everything `segment` does is timed: instance segmentation (the zoo's
Mask R-CNN, on the search region or the whole frame), IoU matching, the agent's state encoding and action,
re-detection and the label maps. The segmenter's candidates are never cached (no cache directory) and one call on
the first two frames comes first as a warm-up (model loading, first-call allocations), so the figure is that of a
model already in memory. The breakdown is what the tracker records per tracked frame (`model.last_episode.logs`).

Weights: `--weights` names a Hub folder of an ftmu model; by default the ImageNet encoder with a randomly initialised
actor (its greedy actions, and so how often it keeps the template and re-detects, are arbitrary; the counts are in
the JSON). Memory is the process's peak resident set size (model loading included) and, on CUDA, the peak of
allocated GPU memory. The paper's speed is quoted as a labelled reference, never as a measurement.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from zoo.paths import shared_dir

PAPER_REFERENCE = ("paper: 0.09 s/frame on a GTX 1080 Ti (Table 1, t(s) on DAVIS 2017, YOLACT segmenter, ResNet-50 "
                   "states); quoted, not measured here")
BREAKDOWN = ("segmentation", "matching", "agent", "redetection")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help="a Hub folder of an ftmu model (default: ImageNet encoder + randomly initialised actor)")
    parser.add_argument("--frames", type=int, default=20, help="frames segmented in the timed call (>= 2)")
    parser.add_argument("--sequence", default="blackswan", help="DAVIS 2016 sequence under ../shared/realdata")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda only when available")


def benchmark_video(count: int, sequence: str) -> tuple[list[np.ndarray], dict[int, tuple[float, ...]], str]:
    """The first `count` frames, the first frame's {object id: (x, y, w, h)} boxes, and what they are."""
    from datamodules.vos_io import boxes_from_mask

    shared = shared_dir()
    root = shared / "realdata" / "DAVIS2016" if shared else None
    if root is not None and (root / "JPEGImages" / "480p" / sequence).is_dir():
        from datamodules.davis import DAVIS

        video = DAVIS(root, year=2016, split=None, sequences=[sequence])[0]
        if len(video) < count:
            raise ValueError(f"{sequence} has {len(video)} frames, fewer than --frames {count}")
        frames = [video.frame(index) for index in range(count)]
        corners = video.first_frame_boxes()
        data = f"real: DAVIS 2016 480p {sequence} frames 0-{count - 1} ({root})"
    else:
        from datamodules.synthetic_vos import render_video

        video = render_video(seed=0, num_frames=count, height=480, width=854, num_objects=1)
        frames = video.frames
        corners = boxes_from_mask(video.labels[0], [1])
        data = f"synthetic: render_video(seed=0) 480x854, one object, {count} frames (../shared/realdata absent)"
    boxes = {target: (x0, y0, x1 - x0, y1 - y0) for target, (x0, y0, x1, y1) in corners.items()}
    return frames, boxes, data


def load_model(args):
    from zoo.ftmu.model import FTMUSegmenter
    from zoo.hub import load_folder

    if args.weights:
        model = load_folder(args.weights, expected_type="ftmu", device=args.device)
        described = f"trained: Hub folder {args.weights}"
    else:
        torch.manual_seed(0)  # FTMUSegmenter's `seed` seeds the encoder only; the actor takes the global generator
        model = FTMUSegmenter(pretrained_backbone=True, seed=0).to(args.device).eval()
        described = "random actor (seed 0), ImageNet encoder; untrained: actions arbitrary"
    return model, described


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_resident_mib() -> float:
    """The process's peak resident set size. Not `ru_maxrss`: the kernel raises that high-water mark only when it
    syncs its per-thread RSS counters, so it can lag an RSS read just before it (the ALBA smoke test saw peak
    1196.14 < current 1196.24 MiB). /proc's VmHWM is computed at the read as the larger of the two."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024  # kB


def os_threads() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("Threads:"))


def cpu_load(load_before: float, threads: int, on_cpu: bool = True) -> dict:
    """What says whether a timing shared the cores: the process's threads, the load before the run, the cores."""
    return {
        "torch_threads": torch.get_num_threads(),
        "os_threads": os_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1min_before": load_before,
        "cpu_cores": os.cpu_count(),
        # other processes on the cores: torch's OpenMP threads then wait for each other, and more threads than free
        # cores can be many times slower than one (compare --threads 1)
        "cpu_contended": bool(on_cpu and load_before > (os.cpu_count() or 1) - threads + 0.5),
    }


def run(args: argparse.Namespace) -> dict:
    if args.frames < 2:
        raise SystemExit("--frames must be at least 2 (frame 0 gives the box, the others are tracked)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here; use --device cpu")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    frames, boxes, data = benchmark_video(args.frames, args.sequence)
    model, weights = load_model(args)
    tracker = model.build_tracker(cache_dir=None)  # the segmenter's generator, built here: no candidate cache
    if tracker.candidates.generator.cache is not None:
        raise RuntimeError("the benchmark's segmenter caches its candidates: the time would not be real")

    model.segment(frames[:2], boxes, video="warm-up")  # model loading and first-call allocations, not timed
    generator = model._generator
    calls_before, rss_before = generator.model_calls, resident_mib()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    labels = model.segment(frames, boxes, video=args.sequence)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    episode = model.last_episode
    tracked = [log for log in episode.logs if log.seconds]  # frame 0 (the box) records no breakdown
    breakdown = {key: float(sum(log.seconds[key] for log in tracked) / len(tracked)) for key in BREAKDOWN}
    actions = [d.action for d in episode.decisions]
    from zoo.ftmu.env import REPLACE

    result = {
        "data": data,
        "frame_size": list(frames[0].shape[:2]),
        "objects": len(boxes),
        "frames_timed": args.frames,
        "weights": weights,
        "backbone_weights": model.backbone_weights,
        "proposal_model": model.proposal_model,
        "segmenter_weights": generator.weights_tag,
        "candidate_cache": None,
        "device": args.device,
        "seconds_per_frame": seconds / args.frames,
        "frames_per_s": args.frames / seconds,
        "seconds_total": seconds,
        "seconds_per_frame_meaning": "wall time of one segment() call over all frames (frame 0's box-initialised "
                                     "segmentation included) divided by the number of frames, after a warm-up call",
        "breakdown_seconds_per_tracked_frame": breakdown,
        "breakdown_unaccounted_seconds_per_frame": (seconds - sum(breakdown.values()) * len(tracked)) / args.frames,
        "segmenter_calls": generator.model_calls - calls_before,
        "template_replace_rate": float(np.mean([a == REPLACE for a in actions])) if actions else None,
        "redetections": sum(len(log.redetected) for log in episode.logs),
        "region_kinds": {kind: sum(log.region_kind == kind for log in tracked)
                         for kind in sorted({log.region_kind for log in tracked})},
        "labelled_pixels_last_frame": int((labels[-1] > 0).sum()),
        "peak_rss_mib": peak_resident_mib(),
        "rss_before_timed_call_mib": rss_before,
        "peak_cuda_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None,
        "torch_interop_threads": torch.get_num_interop_threads(),
        **cpu_load(load_before, args.threads, on_cpu=args.device == "cpu"),
        "paper_reference": PAPER_REFERENCE,
    }
    return result
