"""IVOS-W speed and memory on the CPU: `python -m recipes.benchmark ivosw`.

Three figures:

1. agent time per recommendation: `IVOSWRecommender.recommend(quality, counts)` on a `--video-frames` (default 100)
   frame state (random qualities, a few frames already annotated), the median over `--calls` timed calls after
   `--warm-up` untimed ones (goal: at most 5 ms on the CPU). Model: `--model`, a registered name (default
   "ivosw-davis") or a checkpoint folder; or `--random-weights`: an `IVOSWRecommender` with a randomly initialised
   Brain (torch seed 0), labelled as such in the JSON (the Brain's cost does not depend on its weights).
2. quality-network time per frame: `zoo.ivosw.quality.frame_quality` on one real DAVIS frame with 1 and with 2
   objects' probability maps (object 1: the frame's ground-truth mask; object 2: that mask mirrored left-right), the
   median over `--calls-quality` calls after a warm-up call. With `--model` the checkpoint's quality network is
   timed; with `--random-weights` a `QualityNetwork` on the ImageNet-pretrained Lite0 backbone (`zoo.backbones`),
   whose untrained head only changes the value, not the time.
3. each engine's time per round (`--engines`, default both: "flow", the weight-free
   `zoo.interactive.engines.FlowPropagationEngine`, and "matching", the learned `ivosw-engine-davis`), each inside
   `zoo.ivosw.session.run_session` (Oracle setting, the Worst strategy, `--rounds` rounds) on the first `--frames`
   frames (default 50: the issue's "50-frame 480p video") of a real DAVIS 2016 video (`../shared/realdata/DAVIS2016`,
   `--sequence`, default blackswan; `--height` downscales), with no on-disk cache. DAVIS 2016 has no scribble files,
   so round 1 is the robot's scribble on an empty prediction. The first round's engine time includes the per-video
   work (flow: the DIS flow of the whole video; matching: the keys of every frame), computed once and kept; later
   rounds are reported separately. The robot (the simulated user) and the J&F scoring are not the engine's time (listed apart).

Memory: the process's peak resident set size (VmHWM, model loading included). The paper's 0.70 s per
recommendation is measured on a GPU with the authors' code: quoted as a reference, never as a measurement here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from recipes.benchmarks.ftmu import cpu_load, peak_resident_mib, resident_mib
from recipes.benchmarks._davis2016 import davis2016_video

DEFAULT_MODEL = "ivosw-davis"
PAPER_REFERENCE = ("paper: 0.70 s per recommendation (agent + quality network) on a GPU (IVOS-W, Yin et al. CVPR "
                   "2021); quoted, not measured here, and not comparable to these CPU figures")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="registered name or checkpoint folder of an ivosw model (IVOSWRecommender)")
    parser.add_argument("--random-weights", action="store_true",
                        help="time an IVOSWRecommender with a random Brain and a pretrained-Lite0 quality network")
    parser.add_argument("--video-frames", type=int, default=100, help="frames in the agent's state (recommendation)")
    parser.add_argument("--calls", type=int, default=500, help="timed recommend calls")
    parser.add_argument("--warm-up", type=int, default=50, help="untimed recommend calls first")
    parser.add_argument("--calls-quality", type=int, default=10, help="timed frame_quality calls per object count")
    parser.add_argument("--frames", type=int, default=50, help="frames of the DAVIS video in the engine sessions")
    parser.add_argument("--engines", nargs="+", default=["flow", "matching"],
                        help="engines of recipes._ivosw_common.ENGINES to time")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the engine session (>= 2)")
    parser.add_argument("--sequence", default="blackswan", help="DAVIS 2016 sequence under ../shared/realdata")
    parser.add_argument("--height", type=int, default=None,
                        help="downscale frames and masks to this height (aspect kept); default: 480p as is")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")


def session_video(count: int, sequence: str, height: int | None):
    """The first `count` frames of a real DAVIS 2016 video as a `SessionVideo` (no initial scribble), and what it is."""
    from zoo.ivosw.session import SessionVideo

    video, root = davis2016_video("ivosw", sequence, count)
    session = SessionVideo.from_sequence(video, scribble=None, frames=range(count))
    described = f"real: DAVIS 2016 480p {sequence} frames 0-{count - 1} ({root})"
    if height is not None and height != session.frames.shape[1]:
        from PIL import Image

        width = round(session.frames.shape[2] * height / session.frames.shape[1])
        frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                           for f in session.frames])
        masks = np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.NEAREST))
                          for m in session.ground_truth])
        session = SessionVideo(session.name, frames, masks, session.num_objects)
        described += f", downscaled to {height}x{width}"
    return session, described


def load_model(args: argparse.Namespace):
    from zoo.ivosw.model import IVOSWRecommender

    if args.random_weights:
        from zoo.ivosw.quality import QualityNetwork

        torch.manual_seed(0)  # the Brain initialises from the global generator
        model = IVOSWRecommender()
        model.quality_network = QualityNetwork("tf_efficientnet_lite0", input_size=256, min_side=128.0).eval()
        return model, ("RANDOM WEIGHTS (untrained Brain, torch seed 0; quality network: ImageNet-pretrained Lite0 "
                       f"backbone ({model.quality_network.backbone_source}) with an untrained head): recommendations "
                       "and qualities arbitrary, times representative")
    from zoo.hub import load, load_folder

    folder = Path(args.model).is_dir()
    try:
        model = load_folder(args.model, expected_type="ivosw") if folder else load(args.model)
    except (KeyError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"--model {args.model!r} could not be loaded ({error}): give a checkpoint folder or "
                         "--random-weights") from error
    if getattr(model, "model_type", None) != "ivosw":
        raise SystemExit(f"--model {args.model!r} is a '{model.model_type}' model, not an ivosw one")
    return model.eval(), f"trained: {'checkpoint folder' if folder else 'registered model'} {args.model}"


def time_recommend(model, frames: int, calls: int, warm_up: int) -> dict:
    generator = np.random.default_rng(0)
    quality = torch.as_tensor(generator.uniform(0.2, 0.9, frames), dtype=torch.float32)
    counts = torch.zeros(frames)
    counts[generator.choice(frames, size=min(3, frames), replace=False)] = 1.0
    for _ in range(warm_up):
        model.recommend(quality, counts)
    seconds = []
    for _ in range(calls):
        tic = time.perf_counter()
        frame = model.recommend(quality, counts)
        seconds.append(time.perf_counter() - tic)
    if not 0 <= frame < frames:
        raise RuntimeError(f"recommend returned frame {frame} for a {frames}-frame video")
    return {
        "video_frames": frames,
        "calls_timed": calls,
        "warm_up_calls": warm_up,
        "median_ms": 1e3 * float(np.median(seconds)),
        "p90_ms": 1e3 * float(np.percentile(seconds, 90)),
        "min_ms": 1e3 * float(np.min(seconds)),
        "goal_ms": 5.0,
        "meets_goal": bool(1e3 * np.median(seconds) <= 5.0),
    }


def time_quality(network, image: np.ndarray, mask: np.ndarray, calls: int, backbone_weights: str) -> dict:
    from zoo.ivosw.quality import frame_quality

    first = mask.astype(np.float32)
    maps = {1: [first], 2: [first, np.ascontiguousarray(first[:, ::-1])]}
    result = {"frame_size": list(image.shape[:2]), "input_size": network.input_size,
              "backbone_weights": backbone_weights}
    for objects, probabilities in maps.items():
        frame_quality(network, image, probabilities)  # warm-up
        seconds = []
        for _ in range(calls):
            tic = time.perf_counter()
            frame_quality(network, image, probabilities)
            seconds.append(time.perf_counter() - tic)
        result[f"{objects}_object{'s' if objects > 1 else ''}_median_ms"] = 1e3 * float(np.median(seconds))
    result["calls_timed"] = calls
    return result


ENGINE_DESCRIPTIONS = {
    "flow": ("FlowPropagationEngine (weight-free, DIS flow)", "the DIS flow of the whole video"),
    "matching": ("MatchingEngine (learned memory read, ivosw-engine-davis)", "the keys of every frame"),
}


def time_engine(name: str, video, rounds: int) -> dict:
    from recipes._ivosw_common import ENGINES
    from zoo.ivosw.session import run_session, worst_strategy

    engine = ENGINES[name](None)
    description, per_video = ENGINE_DESCRIPTIONS.get(name, (name, "its per-video work"))
    started = time.perf_counter()
    session = run_session(video, engine, worst_strategy(), rounds=rounds, setting="oracle")
    wall = time.perf_counter() - started
    engine_seconds = [timing.engine for timing in session.timings]
    later = engine_seconds[1:]
    return {
        "engine": description,
        "strategy": "worst",
        "setting": "oracle",
        "rounds": rounds,
        "first_round_seconds": engine_seconds[0],
        "first_round_meaning": f"engine.interact of round 1, {per_video} included (computed once)",
        "later_rounds_mean_seconds": float(np.mean(later)),
        "later_rounds_median_seconds": float(np.median(later)),
        "later_rounds_max_seconds": float(np.max(later)),
        "seconds_per_round": engine_seconds,
        "robot_seconds_per_round_mean": float(np.mean([timing.robot for timing in session.timings])),
        "session_wall_seconds": wall,
        "frames_annotated": session.frames,
        "jf_curve": session.curve,
        **({"flow_calls": engine.flow_calls} if hasattr(engine, "flow_calls") else {}),
    }


def run(args: argparse.Namespace) -> dict:
    if args.frames < 2 or args.rounds < 2:
        raise SystemExit("--frames and --rounds must be at least 2")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    video, data = session_video(args.frames, args.sequence, args.height)
    rss_start = resident_mib()
    model, weights = load_model(args)
    with torch.inference_mode():
        recommend = time_recommend(model, args.video_frames, args.calls, args.warm_up)
        # a checkpoint's network is built on a random backbone and then loaded: its config names the real source
        backbone = model.quality_network.backbone_source if args.random_weights else model.backbone_weights
        quality = time_quality(model.quality_network, video.frames[0], video.ground_truth[0] == 1,
                               args.calls_quality, backbone or "not recorded in the checkpoint")
    engines = {name: time_engine(name, video, args.rounds) for name in args.engines}
    return {
        "data": data,
        "frame_size": list(video.frames.shape[1:3]),
        "frames": args.frames,
        "objects": video.num_objects,
        "random_weights": bool(args.random_weights),
        "weights": weights,
        "device": "cpu",
        "recommend": recommend,
        "quality_network": quality,
        "engines": engines,
        "paper_reference": PAPER_REFERENCE,
        # current first: the peak read after it includes it, so peak >= after even if memory grows in between
        "rss_after_mib": resident_mib(),
        "peak_rss_mib": peak_resident_mib(),
        "rss_before_model_mib": rss_start,
        **cpu_load(load_before, args.threads),
    }
