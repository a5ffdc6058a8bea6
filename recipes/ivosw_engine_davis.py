"""The learned interactive VOS engine of IVOS-W (issue #14): train the matching engine's key head, measure it on
held-out DAVIS against the weight-free flow engine, and write a model folder `zoo.load` reads.

    python -m recipes.ivosw_engine_davis                                   # embedded synthetic videos, CPU minutes
    python -m recipes.ivosw_engine_davis --data-dir ../shared/realdata/DAVIS2016 --year 2016 \\
        --extra-first-frames ../shared/realdata/DAVIS --threads 1 --run-dir runs/ivosw-engine-davis

Training data: the training split of ``--data-dir`` (never its evaluation split), ``--synthetic-train`` synthetic
DAVIS-2017-layout videos (`datamodules.synthetic_vos.synthetic_root`), and with ``--extra-first-frames`` the annotated
first frame of every DAVIS 2017 sequence there (sequences named like an evaluation video left out) plus ``--warps``
random affine warps of it (a pseudo-video: the network learns to match an object across viewpoint and scale).
Backbone features are computed once and cached in RUN_DIR/cache (float16); training runs the key head only
(`zoo.interactive.matching_module`).

Evaluation, on every held-out video (`--eval-split`, val):
(a) semi-supervised propagation from the first frame's ground truth (`interact_mask(0, gt[0])`), the official
    semi-supervised J&F (`zoo.metrics.davis.evaluate_semi_supervised`, frames 1..T-2): the matching engine (with and
    without watershed refinement), the flow engine given the same mask, and "repeat the first-frame mask";
(b) interactive: ``--rounds`` rounds of the DAVIS robot (`zoo.interactive.robot`, round 1 on the frame showing
    most of the objects, later rounds on the frame it picks), J&F over every frame after each round
    (`zoo.metrics.interactive.per_object_scores`, the IVOS-W session curve), and the seconds of every round (round 1
    includes the per-video features: the keys of the matching engine, the DIS flow of the flow engine).

Writes RUN_DIR/results.json (everything above, per sequence and mean), RUN_DIR/model/ (`zoo.load(RUN_DIR/model)`
or `zoo.hub.load_folder`: the engine, with the refinement `--refine` asks for, off by default: it costs ~0.6 s a
round on 50 480p frames and did not help consistently on held-out DAVIS),
checkpoints/last.ckpt (resumable: run the same command again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.davis import DAVIS
from datamodules.synthetic_vos import synthetic_root
from recipes._ivosw_common import quiet_robot
from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import RunDirectory, checkpoint_state, hardware
from zoo.backbones import create_backbone, load_backbone_state, pretrained_state
from zoo.interactive.engines import FlowPropagationEngine
from zoo.interactive.matching_engine import MatchingEngine
from zoo.interactive.matching_module import (
    EpochRangeSampler, MatchingModule, PairDataset, TrainingVideo, collate_pairs,
)
from zoo.ivosw.session import first_frame_for_robot
from zoo.metrics.davis import count_objects, evaluate_semi_supervised
from zoo.metrics.interactive import per_object_scores

VOID = 255
ENGINE_ROWS = ("matching", "matching_refined", "flow", "matching_untrained")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.ivosw_engine_davis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="DAVIS root (default: embedded synthetic DAVIS 2017-layout videos)")
    data.add_argument("--year", type=int, default=2017, choices=(2016, 2017))
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="val")
    data.add_argument("--extra-first-frames", type=Path, default=None,
                      help="a DAVIS 2017 root whose annotated first frames (+ --warps affine warps) join training")
    data.add_argument("--warps", type=int, default=4, help="random affine warps per extra first frame")
    data.add_argument("--synthetic-train", type=int, default=6, help="synthetic training videos")
    data.add_argument("--synthetic-val", type=int, default=3, help="synthetic evaluation videos (no --data-dir)")
    data.add_argument("--synthetic-frames", type=int, default=20)
    data.add_argument("--synthetic-size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    data.add_argument("--max-eval-videos", type=int, default=0, help="evaluate on the first N videos only (0: all)")
    net = parser.add_argument_group("network")
    net.add_argument("--short-side", type=int, default=240, help="network input short side (px)")
    net.add_argument("--key-dim", type=int, default=64)
    net.add_argument("--hidden", type=int, default=128)
    net.add_argument("--max-memory-frames", type=int, default=3)
    net.add_argument("--memory-pool", type=int, default=2, help="memory keys / masks average-pooled by this factor")
    net.add_argument("--refine", choices=("off", "on", "auto"), default="off",
                     help="the saved engine's watershed refinement (both are measured either way; auto: whichever "
                          "had the higher mean J&F over the rounds, which selects on the evaluation split)")
    net.add_argument("--random-backbone", action="store_true", help="a random backbone (never a silent fallback)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=None, help="default: 3 (synthetic), 15 (--data-dir)")
    train.add_argument("--steps-per-epoch", type=int, default=None, help="default: 40 (synthetic), 100 (--data-dir)")
    train.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--query-points", type=int, default=512, help="query cells per pair in the loss (0: all)")
    train.add_argument("--max-gap", type=int, default=30, help="largest |memory - query| frame distance")
    train.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("run")
    run.add_argument("--rounds", type=int, default=3, help="interactive rounds per held-out video")
    run.add_argument("--run-dir", type=Path, default=Path("runs/ivosw-engine-davis-default"))
    run.add_argument("--restart", action="store_true", help="discard the run directory's checkpoints")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


# -- data ------------------------------------------------------------------------------------------------------------


def sequence_arrays(sequence) -> tuple[list[np.ndarray], np.ndarray]:
    frames = [sequence.frame(i) for i in range(len(sequence))]
    labels = np.stack([sequence.require_mask(i) for i in range(len(sequence))])
    return frames, labels


def affine_warps(frame: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator):
    """`count` random similarity warps (rotation ±15°, scale 0.85–1.15, shift ±8 % of the size) of a frame (border
    reflected) and its labels (nearest, outside = void)."""
    height, width = labels.shape
    frames, masks = [frame], [labels]
    for _ in range(count):
        angle, scale = rng.uniform(-15, 15), rng.uniform(0.85, 1.15)
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        matrix[:, 2] += rng.uniform(-0.08, 0.08, 2) * (width, height)
        frames.append(cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT))
        masks.append(cv2.warpAffine(labels, matrix, (width, height), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=VOID))
    return frames, np.stack(masks)


def load_data(args):
    """(training [(name, frames, labels, K)] makers, evaluation sequences, description of each)."""
    train, trained_on = [], []
    height, width = args.synthetic_size
    synthetic = synthetic_root("davis2017", num_train=max(args.synthetic_train, 1), num_val=args.synthetic_val,
                               num_frames=args.synthetic_frames, height=height, width=width, seed=args.seed)
    if args.data_dir is not None:
        evaluation = list(DAVIS(args.data_dir, args.year, args.eval_split))
        described = f"DAVIS {args.year} {args.eval_split} ({args.data_dir})"
        real = list(DAVIS(args.data_dir, args.year, args.train_split))
        train += [("davis", s) for s in real]
        trained_on.append(f"DAVIS {args.year} {args.train_split} ({len(real)} videos, {sum(len(s) for s in real)} "
                          f"frames: {', '.join(s.name for s in real)})")
    else:
        evaluation = list(DAVIS(synthetic, 2017, "val"))
        described = f"synthetic DAVIS 2017-layout val ({len(evaluation)} videos, {height}x{width})"
    if args.max_eval_videos:
        evaluation = evaluation[:args.max_eval_videos]
    if args.synthetic_train:
        videos = list(DAVIS(synthetic, 2017, "train"))[:args.synthetic_train]
        train += [("synthetic", s) for s in videos]
        trained_on.append(f"{len(videos)} synthetic DAVIS 2017-layout videos ({args.synthetic_frames} frames, "
                          f"{height}x{width})")
    held_out = {s.name for s in evaluation}
    if args.extra_first_frames is not None:
        extras = [s for s in DAVIS(args.extra_first_frames, 2017, None)
                  if s.name not in held_out and s.has_mask(0) and count_objects(s.require_mask(0)) > 0]
        train += [("first-frame", s) for s in extras]
        trained_on.append(f"the annotated first frames of {len(extras)} DAVIS 2017 sequences "
                          f"({args.extra_first_frames}; {', '.join(s.name for s in extras)}) with {args.warps} "
                          "random affine warps each")
    overlap = {s.name for kind, s in train if kind == "davis"} & held_out
    if overlap:
        raise ValueError(f"sequences {sorted(overlap)} are in both the training and the evaluation split")
    return train, evaluation, described, "; ".join(trained_on)


def training_videos(args, network, train, cache_dir: Path, source: str) -> list[TrainingVideo]:
    """Backbone features of every training video, cached on disk keyed by the inputs."""
    identity = json.dumps({"videos": [f"{kind}:{s.name}:{len(s)}" for kind, s in train], "short_side":
                           args.short_side, "backbone": source, "warps": args.warps, "seed": args.seed,
                           "synthetic": [args.synthetic_frames, *args.synthetic_size]}, sort_keys=True)
    path = cache_dir / f"features-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        print(f"training features from {path}")
        return [TrainingVideo(**entry) for entry in torch.load(path, weights_only=True)]
    rng = np.random.default_rng(args.seed)
    videos = []
    for kind, sequence in progress(train, desc="training features", unit="video"):
        if kind == "first-frame":
            first = sequence.require_mask(0)
            frames, labels = affine_warps(sequence.frame(0), first, args.warps, rng)
        else:
            frames, labels = sequence_arrays(sequence)
        num_objects = max(count_objects(labels[0]), int(labels[labels != VOID].max(initial=0)), 1)
        videos.append(TrainingVideo.build(network, f"{kind}:{sequence.name}", frames, labels, num_objects,
                                          args.short_side))
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save([vars(video) for video in videos], temporary)
    temporary.replace(path)
    return videos


# -- evaluation ------------------------------------------------------------------------------------------------------


def semi_supervised_jf(truth: np.ndarray, labels: np.ndarray, name: str) -> float:
    result = evaluate_semi_supervised(truth, labels, name)
    rows = result.statistics()
    return float(np.mean((rows[:, 0] + rows[:, 3]) / 2))


def session_jf(labels: np.ndarray, truth: np.ndarray, num_objects: int) -> float:
    return float(per_object_scores(labels, truth, num_objects)["J_AND_F"].mean())


def interactive_session(engine, name: str, truth: np.ndarray, num_objects: int, rounds: int) -> dict:
    """`rounds` robot rounds on a started engine: J&F after each, seconds of each, the annotated frames."""
    robot, labels = quiet_robot(), np.zeros_like(truth)
    curve, seconds, annotated = [], [], []
    for round_index in range(rounds):
        frame = first_frame_for_robot(truth, num_objects) if round_index == 0 else None
        scribbles = robot.interact(name, labels, truth, num_objects, frame=frame, annotated_frames=annotated)
        frame = scribbles["annotated_frame"]
        started = time.perf_counter()
        out = engine.interact(frame, scribbles)
        seconds.append(time.perf_counter() - started)
        labels = out.labels.copy()
        annotated.append(frame)
        curve.append(session_jf(labels, np.where(truth == VOID, 0, truth), num_objects))
    return {"curve": curve, "seconds": seconds, "annotated": annotated}


def evaluate(args, engine: MatchingEngine, untrained: MatchingEngine, evaluation, cache_dir: Path) -> dict:
    from zoo.vision.flow import FlowEstimator

    per_sequence = {}
    for sequence in progress(evaluation, desc="held-out videos", unit="video"):
        frames, truth = sequence_arrays(sequence)
        num_objects = count_objects(truth[0])
        first = np.where(truth[0] == VOID, 0, truth[0])
        flow = FlowPropagationEngine(FlowEstimator("dis", cache_dir=cache_dir), video_name=f"eval-{sequence.name}")
        row = {"frames": len(frames), "objects": num_objects, "size": list(truth.shape[1:]), "interactive": {},
               "semi_supervised": {}}
        matching = engine.spawn()
        for name, candidate, refine in (("matching", matching, False), ("matching_refined", matching, True),
                                        ("flow", flow, None), ("matching_untrained", untrained.spawn(), False)):
            if refine is not None:
                candidate.refine = refine
            candidate.start(frames, num_objects)  # the matching keys are computed in the first variant's round 1
            row["interactive"][name] = interactive_session(candidate, sequence.name, truth, num_objects, args.rounds)
            candidate.reset()
            labels = candidate.interact_mask(0, first).labels.copy()
            row["semi_supervised"][name] = semi_supervised_jf(truth, labels, sequence.name)
        row["semi_supervised"]["repeat_first_mask"] = semi_supervised_jf(
            truth, np.repeat(first[None], len(frames), axis=0), sequence.name)
        per_sequence[sequence.name] = row
        print(f"{sequence.name}: semi-supervised J&F " + ", ".join(
            f"{k} {v:.3f}" for k, v in row["semi_supervised"].items()) + "; round 1 J&F " + ", ".join(
            f"{k} {v['curve'][0]:.3f} ({v['seconds'][0]:.2f} s)" for k, v in row["interactive"].items()))
    return per_sequence


def summarise(per_sequence: dict, rounds: int) -> dict:
    names = list(per_sequence)
    semi = {row: float(np.mean([per_sequence[n]["semi_supervised"][row] for n in names]))
            for row in (*ENGINE_ROWS, "repeat_first_mask")}
    curves = {row: np.mean([per_sequence[n]["interactive"][row]["curve"] for n in names], axis=0).tolist()
              for row in ENGINE_ROWS}
    first = {row: float(np.mean([per_sequence[n]["interactive"][row]["seconds"][0] for n in names]))
             for row in ENGINE_ROWS}
    later = {row: (float(np.mean([s for n in names for s in per_sequence[n]["interactive"][row]["seconds"][1:]]))
                   if rounds > 1 else None) for row in ENGINE_ROWS}
    return {"semi_supervised_jf": semi, "interactive_curve": curves, "round1_jf": {k: v[0] for k, v in curves.items()},
            "seconds_first_round": first, "seconds_later_rounds": later}


def table_markdown(per_sequence: dict, summary: dict) -> str:
    lines = ["| sequence (frames) | semi: matching | semi: matching+refine | semi: flow | semi: untrained head | "
             "semi: repeat mask | round 1: matching | round 1: matching+refine | round 1: flow | round 1: untrained "
             "head |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in per_sequence.items():
        semi, inter = row["semi_supervised"], row["interactive"]
        lines.append(f"| {name} ({row['frames']}) | " + " | ".join(f"{semi[k]:.3f}" for k in (*ENGINE_ROWS,
                     "repeat_first_mask")) + " | " + " | ".join(f"{inter[k]['curve'][0]:.3f}" for k in ENGINE_ROWS)
                     + " |")
    semi, first = summary["semi_supervised_jf"], summary["round1_jf"]
    lines.append("| **mean** | " + " | ".join(f"{semi[k]:.3f}" for k in (*ENGINE_ROWS, "repeat_first_mask")) + " | "
                 + " | ".join(f"{first[k]:.3f}" for k in ENGINE_ROWS) + " |")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    real = args.data_dir is not None
    args.epochs = args.epochs if args.epochs is not None else (15 if real else 3)
    args.steps_per_epoch = args.steps_per_epoch if args.steps_per_epoch is not None else (100 if real else 40)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    try:
        train, evaluation, described, trained_on = load_data(args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"{error} (--data-dir takes a DAVIS root: JPEGImages/480p/, Annotations/480p/, ImageSets/)")
    print(f"{len(train)} training videos; evaluating on {described}: {', '.join(s.name for s in evaluation)}")
    cache_dir = args.run_dir / "cache"
    seconds = {}
    module = MatchingModule(key_dim=args.key_dim, hidden=args.hidden, lr=args.lr, weight_decay=args.weight_decay,
                            query_points=args.query_points, memory_pool=args.memory_pool, seed=args.seed)
    if args.random_backbone:
        source = "random"
        module.network.backbone.load_state_dict(create_backbone(
            "tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3))[0].state_dict())
    else:
        state, source = pretrained_state("tf_efficientnet_lite0")
        load_backbone_state(module.network.backbone, state, "tf_efficientnet_lite0")
    untrained = MatchingEngine(key_dim=args.key_dim, hidden=args.hidden, short_side=args.short_side,
                               max_memory_frames=args.max_memory_frames, memory_pool=args.memory_pool,
                               backbone_weights=source)
    untrained.network.load_state_dict(module.network.state_dict())  # the head before training: the ablation row
    command = ["python", "-m", "recipes.ivosw_engine_davis", *argv]
    with RunDirectory(args.run_dir, restart=args.restart, command=command) as run:
        started = time.perf_counter()
        module.videos = training_videos(args, module.network, train, cache_dir, source)
        seconds["features"] = time.perf_counter() - started
        per_epoch = args.steps_per_epoch * args.batch_size
        dataset = PairDataset(module.videos, seed=args.seed, max_gap=args.max_gap)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate_pairs,
                                             sampler=EpochRangeSampler(per_epoch))
        identity = {"hparams": dict(module.hparams), "videos": [v.name for v in module.videos],
                    "backbone": source, "short_side": args.short_side, "batch_size": args.batch_size,
                    "steps_per_epoch": args.steps_per_epoch, "max_gap": args.max_gap}
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=args.epochs, logger=CSVLogger(args.run_dir, name="logs",
                                                                                  version="train"),
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10,
            num_sanity_val_steps=0,
            callbacks=[run.checkpoint_callback(identity=identity, every_n_epochs=1, every_minutes=5),
                       TrainingProgress("matching engine", "step")],
            plugins=[run.checkpoint_io()],
        )
        started = time.perf_counter()
        resume = run.resume_checkpoint(identity=identity)
        with expected_warnings("The number of training batches", "does not have many workers", FROZEN_MODULES,
                               "Experiment logs directory .* exists and is not empty"):
            trainer.fit(module, loader, ckpt_path=resume)
        seconds["training"] = time.perf_counter() - started
        timing = args.run_dir / "training_seconds.json"  # what the run that did the training measured
        if resume is not None and checkpoint_state(resume)["complete"] and timing.is_file():
            seconds["when_trained"] = json.loads(timing.read_text())
        else:
            timing.write_text(json.dumps({"features": seconds["features"], "training": seconds["training"]}))
    module = module.cpu().eval()
    engine = MatchingEngine(key_dim=args.key_dim, hidden=args.hidden, short_side=args.short_side,
                            max_memory_frames=args.max_memory_frames, memory_pool=args.memory_pool,
                            backbone_weights=source)
    engine.network.load_state_dict(module.network.state_dict())
    engine.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        per_sequence = evaluate(args, engine, untrained, evaluation, cache_dir)
    seconds["evaluation"] = time.perf_counter() - started
    summary = summarise(per_sequence, args.rounds)
    refine = {"on": True, "off": False}.get(args.refine)
    if refine is None:  # model selection on the evaluation split: results.json says so
        curves = summary["interactive_curve"]
        refine = float(np.mean(curves["matching_refined"])) > float(np.mean(curves["matching"]))
    saved = MatchingEngine(key_dim=args.key_dim, hidden=args.hidden, short_side=args.short_side,
                           max_memory_frames=args.max_memory_frames, memory_pool=args.memory_pool, refine=refine,
                           backbone_weights=source)
    saved.network.load_state_dict(module.network.state_dict())
    saved.save_pretrained(args.run_dir / "model")
    results = write_results(args, argv, per_sequence, summary, described, trained_on, seconds, source, refine,
                            float(module.network.temperature.detach()))
    print(results["table"])
    print(results["finding"])
    print(f"run directory {args.run_dir}; model {args.run_dir / 'model'}")
    return results


def write_results(args, argv, per_sequence, summary, described, trained_on, seconds, source, refine,
                  temperature) -> dict:
    semi, first = summary["semi_supervised_jf"], summary["round1_jf"]
    finding = (f"Held-out semi-supervised J&F (first-frame mask, memory = frame 0): matching {semi['matching']:.3f} "
               f"(+refine {semi['matching_refined']:.3f}) vs flow engine {semi['flow']:.3f} vs repeat-first-mask "
               f"{semi['repeat_first_mask']:.3f}; after one robot round: matching {first['matching']:.3f} (+refine "
               f"{first['matching_refined']:.3f}) vs flow {first['flow']:.3f}; after round {args.rounds}: matching "
               f"{summary['interactive_curve']['matching'][-1]:.3f} (+refine "
               f"{summary['interactive_curve']['matching_refined'][-1]:.3f}) vs flow "
               f"{summary['interactive_curve']['flow'][-1]:.3f}. Round seconds (1 = with the per-video "
               f"features): matching {summary['seconds_first_round']['matching']:.2f} then "
               f"{summary['seconds_later_rounds']['matching'] or 0:.2f}; flow "
               f"{summary['seconds_first_round']['flow']:.2f} then {summary['seconds_later_rounds']['flow'] or 0:.2f}. "
               f"The untrained key head (ImageNet features, random head): semi-supervised {semi['matching_untrained']:.3f}, round 1 "
               f"{first['matching_untrained']:.3f}.")
    row = "matching_refined" if refine else "matching"
    results = [{
        "task_type": "video-object-segmentation",
        "task_name": "Interactive VOS engine, J&F after the robot's first scribble round",
        "dataset_name": described, "dataset_type": "davis",
        "dataset_split": f"{args.eval_split}, never trained on" + (
            "; the refinement setting was selected on it (--refine auto)" if args.refine == "auto" else
            " or used for model selection"),
        "data": ", ".join(f"{name} ({row_['frames']} frames)" for name, row_ in per_sequence.items()),
        "metrics": [{"type": "round1_j_and_f", "name": "J&F after round 1", "value": first[row]},
                    {"type": "semi_supervised_j_and_f", "name": "Semi-supervised J&F-Mean", "value": semi[row]},
                    *({"type": f"round{index + 1}_j_and_f", "name": f"J&F after round {index + 1}", "value": value}
                      for index, value in enumerate(summary["interactive_curve"][row]) if index > 0)],
    }]
    output = {
        "finding": finding, "model": "ivosw-engine-davis", "method": "matching-engine",
        "paper": "the memory read of Space-Time Memory networks (Oh et al., ICCV 2019), as an interactive engine for "
                 "IVOS-W (Yin et al., CVPR 2021)",
        "paper_url": "https://arxiv.org/abs/1904.00607",
        "benchmark": f"DAVIS {args.year} interactive / semi-supervised" if args.data_dir else "synthetic DAVIS 2017",
        "command": "python -m recipes.ivosw_engine_davis " + shlex.join(argv), "hardware": hardware("cpu"),
        "synthetic": args.data_dir is None, "trained_on": trained_on, "evaluated_on": described,
        "backbone_weights": source, "saved_engine_refine": refine, "learned_temperature": temperature,
        "seconds": seconds, "training": {"epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
                                         "batch_size": args.batch_size, "lr": args.lr, "short_side": args.short_side},
        "summary": summary, "per_sequence": per_sequence, "table": table_markdown(per_sequence, summary),
        "results": results,
        "notes": [
            "semi_supervised: official DAVIS semi-supervised J&F (frames 1..T-2) of the labels after "
            "interact_mask(0, first-frame ground truth); every engine starts from the same mask.",
            "interactive: J&F over every frame (zoo.metrics.interactive.per_object_scores, the IVOS-W session "
            "curve) after each robot round; round 1 on the frame showing most of the objects.",
            "seconds: wall time of engine.interact alone; round 1 includes the per-video work (matching: backbone "
            "keys of every frame; flow: DIS flow, read from RUN_DIR/cache when a previous run computed it).",
        ],
    }
    (args.run_dir / "results.json").write_text(json.dumps(output, indent=2))
    return output


if __name__ == "__main__":
    main()
