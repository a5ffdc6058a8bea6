"""Optical flow speed (frame pairs/s) on DAVIS 480p frames, per method: `python -m recipes.benchmark flow`.

Times `zoo.vision.flow.FlowEstimator` on consecutive frame pairs of a DAVIS 2016 sequence from `../shared/realdata`
(synthetic 480x854 frames when that is absent; the JSON says which), with the cache off, then reading the same flows
back from the on-disk cache. RAFT's speed does not depend on its weights, so random init (offline) times it fairly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict

import numpy as np
import torch

from recipes.benchmarks.proposals import benchmark_frames, timed_cache_reads
from zoo.vision.flow import DISSettings, FlowEstimator, RAFTSettings

CONFIGURATIONS = {
    "dis-ultrafast": ("dis", DISSettings(preset="ultrafast")),
    "dis-fast": ("dis", DISSettings(preset="fast")),
    "dis-medium": ("dis", DISSettings(preset="medium")),
    "raft_small": ("raft_small", RAFTSettings()),
    "raft_large": ("raft_large", RAFTSettings()),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    parser.add_argument("--pairs", type=int, default=4, help="frame pairs timed per method (after one warm-up pair)")
    parser.add_argument("--sequence", default="bear", help="DAVIS 2016 sequence under ../shared/realdata")
    parser.add_argument("--num-flow-updates", type=int, default=12, help="RAFT recurrent refinements")
    parser.add_argument("--weights", choices=["DEFAULT", "none"], default="DEFAULT", help="RAFT weights")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    frames, data = benchmark_frames(args.pairs + 2, args.sequence)
    pairs = list(zip(frames[:-1], frames[1:]))
    results = {}
    for name in args.methods:
        method, settings = CONFIGURATIONS[name]
        if method != "dis":
            settings = RAFTSettings(num_flow_updates=args.num_flow_updates)
        with tempfile.TemporaryDirectory() as cache_dir:
            estimator = FlowEstimator(
                method,
                settings=settings,
                weights=None if args.weights == "none" else "DEFAULT",
                cache_dir=cache_dir,
                device=args.device,
            )
            estimator(*pairs[0])  # warm-up
            start = time.perf_counter()
            flows = [estimator(source, target) for source, target in pairs[1:]]
            seconds = time.perf_counter() - start
            for index, flow in enumerate(flows):
                pair = f"{index:05d}_to_{index + 1:05d}"
                estimator.cache.put("flow", "benchmark", pair, estimator.cache_key(), {"flow": flow})

            def read_back():
                for index, (source, target) in enumerate(pairs[1:]):
                    estimator(source, target, video="benchmark", source_frame=index, target_frame=index + 1)

            cached_seconds, cache_bytes = timed_cache_reads(estimator, read_back, cache_dir)
        results[name] = {
            "pairs_per_s": args.pairs / seconds,
            "s_per_pair": seconds / args.pairs,
            "mean_magnitude_px": float(np.mean([np.linalg.norm(flow, axis=-1).mean() for flow in flows])),
            "pretrained": estimator.pretrained,
            "weights": estimator.weights_tag,
            "settings": asdict(settings),
            "cached_pairs_per_s": args.pairs / cached_seconds,
            "cache_kib_per_pair": cache_bytes / args.pairs / 1024,
        }
    return {
        "data": data,
        "frame_size": list(frames[0].shape[:2]),
        "pairs_timed": args.pairs,
        "device": args.device,
        "methods": results,
    }
