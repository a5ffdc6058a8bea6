"""DRLT tracking speed of the published configuration: end to end from decoded frames (resize + frozen backbone +
LSTM) and recurrent-only on precomputed features (the paper's DRLT-LSTM), plus the process's peak memory.
Paper (GTX 1080): 45 fps end to end, 270 fps recurrent-only."""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from zoo.drlt.env import otb_to_normalized
from zoo.drlt.model import DRLTTracker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="drlt-otb",
                        help="registered name or checkpoint folder (default: the published drlt-otb); 'random' times "
                             "the published configuration with untrained weights (trained LSTM gates produce denormal "
                             "floats, so trained weights are the honest measurement)")
    parser.add_argument("--frames", type=int, default=200, help="frames per timed video")
    parser.add_argument("--height", type=int, default=360, help="decoded frame height (OTB frames are 240-720 px)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--window-lengths", default="10,20,40,80",
                        help="back-propagation windows T whose training-update activation memory is measured")
    parser.add_argument("--slots", type=int, default=32, help="episodes per training update (the recipe's --slots)")
    parser.add_argument("--feature-batch-size", type=int, default=None,
                        help="frames per backbone call (default: the model's feature_batch_size)")


def _best_fps(run, frames: int, repeats: int) -> float:
    run()  # warm-up: allocator, oneDNN kernels
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return frames / best


def activation_memory_mb(tracker: DRLTTracker, steps: int, slots: int) -> float:
    """Bytes autograd keeps for the backward pass of one training chunk of T = `steps` frames over `slots` episodes
    (the cost of a longer back-propagation window), counted with saved-tensor hooks; weights are not included."""
    saved = {}

    def pack(tensor):
        saved[(tensor.data_ptr(), tensor.shape, tensor.dtype)] = tensor.numel() * tensor.element_size()
        return tensor

    recurrent = tracker.recurrent
    maps = torch.randn(slots, steps, *tracker.feature_shape).half()
    boxes = torch.rand(slots, 4) * 0.5 + 0.25
    locations = torch.zeros(slots, steps, 4)
    locations[:, 0] = boxes
    state = recurrent.initial_state(maps[:, 0], boxes)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        mu, _ = recurrent(maps, locations, state)
    mu.sum().backward()
    recurrent.zero_grad(set_to_none=True)
    return sum(saved.values()) / 2**20


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "random":
        tracker = DRLTTracker().eval()
    else:
        from zoo.hub import load

        tracker = load(args.model)
        if tracker.model_type != "drlt":
            raise SystemExit(f"{args.model} is a '{tracker.model_type}' model, not a DRLT tracker")
    if args.feature_batch_size:
        tracker.feature_batch_size = args.feature_batch_size
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    init_box = [args.width / 4, args.height / 4, args.width / 5, args.height / 5]

    fps_end_to_end = _best_fps(lambda: tracker.track(frames, init_box), args.frames, args.repeats)
    features, image_size = tracker.encode(frames)
    init = otb_to_normalized(np.asarray(init_box), image_size)
    fps_recurrent = _best_fps(lambda: tracker.predict_locations(features, init), args.frames, args.repeats)
    config = {key: getattr(tracker, "_hub_mixin_config", {}).get(key) for key in
              ("backbone", "input_size", "feature_stage", "observation", "grid_size", "hidden_size")}
    memory = {str(steps): activation_memory_mb(tracker, steps, args.slots)
              for steps in (int(value) for value in args.window_lengths.split(","))}
    return {
        "fps_end_to_end": fps_end_to_end,
        "fps_recurrent_only": fps_recurrent,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux reports KiB
        "training_activation_mb_by_window": memory, "training_slots": args.slots,
        "targets": {"fps_end_to_end": 45, "fps_recurrent_only": 270},
        "frames": args.frames, "frame_size": [args.height, args.width], "config": config,
        "feature_batch_size": tracker.feature_batch_size,
        "parameters": sum(p.numel() for p in tracker.parameters()),
        "note": "CPU timings; the paper's figures are on a GTX 1080",
    }
