"""Mask R-CNN proposal speed (frames/s) on DAVIS 480p frames, per model: `python -m recipes.benchmark proposals`.

Times `zoo.vision.proposals.ProposalGenerator` on consecutive frames of a DAVIS 2016 sequence from
`../shared/realdata` (synthetic 480x854 frames when that is absent; the JSON says which), with the cache off, on the
whole frame and on a `--region`-pixel square search region at the frame's centre (FTMU's use), and then the cost of
reading the whole-frame results back from the on-disk cache. By default the zoo's own segmenter (`segmenter-vos`) is
timed; the torchvision ResNet-50 models run at random init offline (`--models maskrcnn_resnet50_fpn_v2`): their
speed is the same as with COCO weights except that the number of proposals (which the mask head's cost depends on)
differs, so it is reported per model.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

from datamodules.image_io import read_rgb
from zoo.paths import shared_dir
from zoo.vision.proposals import MODELS, ZOO_SEGMENTER, ProposalGenerator, ProposalSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=[ZOO_SEGMENTER, *MODELS], default=[ZOO_SEGMENTER])
    parser.add_argument("--frames", type=int, default=4, help="frames timed per model (after one warm-up frame)")
    parser.add_argument("--sequence", default="bear", help="DAVIS 2016 sequence under ../shared/realdata")
    parser.add_argument("--min-size", type=int, default=None,
                        help="detector input size (default: the model's own; torchvision COCO 800, segmenter-vos 384)")
    parser.add_argument("--region", type=int, default=256, help="side of the square search region timed (0: none)")
    parser.add_argument("--box-score-thresh", type=float, default=0.05)
    parser.add_argument("--weights", choices=["DEFAULT", "none"], default="DEFAULT")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")


def benchmark_frames(count: int, sequence: str = "bear") -> tuple[list[np.ndarray], str]:
    """`count` consecutive RGB frames of a real DAVIS 2016 480p sequence, else deterministic synthetic ones."""
    shared = shared_dir()
    folder = shared / "realdata" / "DAVIS2016" / "JPEGImages" / "480p" / sequence if shared else None
    if folder is not None and folder.is_dir():
        paths = sorted(folder.glob("*.jpg"))[:count]
        if len(paths) == count:
            return [read_rgb(path) for path in paths], f"real: DAVIS2016 480p {sequence} frames 0-{count - 1}"
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (520, 900, 3), np.uint8), (0, 0), 3)
    frames = [np.ascontiguousarray(texture[index : index + 480, 2 * index : 2 * index + 854]) for index in range(count)]
    return frames, "synthetic: 480x854 blurred noise, shifted (2, 1) px per frame (realdata absent)"


def _time_frames(process, frames: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        process(index, frame)
    return time.perf_counter() - start


def timed_cache_reads(model, read_back: Callable[[], None], cache_dir) -> tuple[float, int]:
    """Seconds `read_back()` takes to read every output of `model` back from its cache in `cache_dir`, and the bytes
    of that cache; reads that run the model are an error (the benchmark's cache keys would be wrong)."""
    calls = model.model_calls
    start = time.perf_counter()
    read_back()
    seconds = time.perf_counter() - start
    if model.model_calls != calls:
        raise RuntimeError("cache reads ran the model: the benchmark's cache keys are wrong")
    return seconds, sum(path.stat().st_size for path in Path(cache_dir).rglob("*.npz"))


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    frames, data = benchmark_frames(args.frames + 1, args.sequence)
    settings = ProposalSettings(box_score_thresh=args.box_score_thresh, min_size=args.min_size)
    weights = None if args.weights == "none" else "DEFAULT"
    results = {}
    for model in args.models:
        with tempfile.TemporaryDirectory() as cache_dir:
            generator = ProposalGenerator(
                model, weights=weights, settings=settings, device=args.device, cache_dir=cache_dir
            )
            generator(frames[0])  # warm-up: first-call allocations
            outputs = []
            seconds = _time_frames(lambda index, frame: outputs.append(generator(frame)), frames[1:])
            region_seconds = None
            if args.region:
                height, width = frames[0].shape[:2]
                half = args.region / 2
                region = (width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half)
                generator(frames[0], region=region)
                region_seconds = _time_frames(lambda index, frame: generator(frame, region=region), frames[1:])
            key = generator.cache_key(None)
            for index, proposals in enumerate(outputs):
                generator.cache.put("proposals", "benchmark", index, key, proposals.as_arrays())

            def read_back():
                for index, frame in enumerate(frames[1:]):
                    generator(frame, video="benchmark", frame=index)

            cached_seconds, cache_bytes = timed_cache_reads(generator, read_back, cache_dir)
        results[model] = {
            "frames_per_s": args.frames / seconds,
            "s_per_frame": seconds / args.frames,
            "mean_proposals": float(np.mean([len(proposals) for proposals in outputs])),
            "region_frames_per_s": args.frames / region_seconds if region_seconds else None,
            "region_size": args.region or None,
            "pretrained": generator.pretrained,
            "weights": generator.weights_tag,
            "cached_frames_per_s": args.frames / cached_seconds,
            "cache_kib_per_frame": cache_bytes / args.frames / 1024,
        }
    return {
        "data": data,
        "frame_size": list(frames[0].shape[:2]),
        "frames_timed": args.frames,
        "settings": asdict(settings),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "models": results,
    }
