"""Train DRLT (Zhang et al. 2017, arXiv:1701.08936) with REINFORCE and evaluate it by OTB one-pass evaluation.

    python -m recipes.drlt_otb                                    # embedded synthetic OTB data, a few minutes on CPU
    python -m recipes.drlt_otb --data-dir OTB_ROOT --sequences drlt30          # the paper's protocol
    python -m recipes.drlt_otb --data-dir OTB_ROOT --protocol standard --test-sequences Deer,Liquor

Protocols. `paper`: train on the first third of the frames of every sequence, test on the whole sequences, so the
test frames include the training frames (as in the paper, §4.3; not the standard OTB protocol). `standard`: train
on sequences disjoint from the test sequences.

The run directory gets model/ (Hub folder: config.json + model.safetensors), checkpoints/last.ckpt, success_plot.png,
precision_plot.png, per_sequence.csv, metrics.json and results.json (what `python -m zoo.publish` reads). Re-running
the same command resumes from checkpoints/last.ckpt (`--restart` starts over); see `recipes._run_dir`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.otb import OTBSequence, discover_sequences, load_otb, sequence_names
from datamodules.synthetic_otb import write_synthetic_otb
from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import RunDirectory
from zoo.drlt.env import TrainingVideo, otb_to_normalized
from zoo.drlt.features import FeatureCache
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule
from zoo.backbones import RANDOM, pretrained_state, load_backbone_state
from zoo.evaluation.otb import evaluate_sequences, format_summary, plot_otb, write_per_sequence_csv
from zoo.paths import REPO_ROOT

PAPER = "Deep Reinforcement Learning for Visual Object Tracking in Videos (Zhang et al., 2017)"
PAPER_URL = "https://arxiv.org/abs/1701.08936"
PAPER_RESULTS = [{"dataset_name": "OTB-100 (DRLT 30-sequence subset)",
                  "metrics": [{"type": "success_auc", "value": 0.543}, {"type": "precision_20", "value": 0.635}]}]
DEFAULT_UPDATES = 1200
OVERLAP_NOTE = "test frames include the training frames (paper protocol: train on the first third of each sequence)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.drlt_otb", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="OTB root (<Seq>/img/%%04d.jpg + groundtruth_rect.txt); default: write synthetic OTB data")
    data.add_argument("--sequences", default=None,
                      help="subset name (drlt30, otb100, ...) or comma-separated names; default: every sequence")
    data.add_argument("--allow-missing-sequences", action="store_true",
                      help="with a subset name, use the sequences of it that are present instead of failing")
    data.add_argument("--protocol", choices=["paper", "standard"], default="paper")
    data.add_argument("--train-fraction", type=float, default=1 / 3,
                      help="paper protocol: leading fraction of each sequence used for training (paper: 1/3)")
    data.add_argument("--test-sequences", default=None,
                      help="standard protocol: comma-separated test sequences (default: the last third, by name)")
    data.add_argument("--synthetic-dir", type=Path, default=REPO_ROOT / ".cache" / "drlt" / "synthetic_otb")
    data.add_argument("--synthetic-sequences", type=int, default=6)
    data.add_argument("--synthetic-frames", type=int, default=60)
    data.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "drlt" / "features",
                      help="on-disk cache of the frozen backbone's features")

    net = parser.add_argument_group("network")
    net.add_argument("--backbone", default="tf_efficientnet_lite0",
                     help="timm backbone standing in for the paper's YOLO (frozen, ImageNet weights from zoo.backbones)")
    net.add_argument("--random-backbone", action="store_true",
                     help="keep the backbone randomly initialised (recorded as 'random'); without it, missing ImageNet "
                          "weights are an error, never a silent random backbone")
    net.add_argument("--input-size", type=int, default=224, help="frames are resized to this square")
    net.add_argument("--grid-size", type=int, default=3, help="last feature map pooled to grid×grid (keeps 'where')")
    net.add_argument("--hidden-size", type=int, default=256,
                     help="FC and LSTM width (paper: 5000; 256 keeps the published weights ≤ 20 MB)")

    rl = parser.add_argument_group("REINFORCE (Algorithm 1)")
    rl.add_argument("--steps-per-chunk", "-T", type=int, default=10, help="T, frames per update (paper: 10)")
    rl.add_argument("--episodes", "-N", type=int, default=5, help="N, sampled episodes per update (paper: 5)")
    rl.add_argument("--sigma", type=float, default=0.01, help="std of the Gaussian location policy (paper: 0.01)")
    rl.add_argument("--lr-start", type=float, default=1e-4, help="Adam learning rate at the start (paper: 1e-5)")
    rl.add_argument("--lr-end", type=float, default=1e-5, help="after exponential annealing (paper: 1e-6)")
    rl.add_argument("--epochs", type=int, default=None,
                    help=f"passes over the training frames (paper: 500); default: {DEFAULT_UPDATES} updates' worth")
    rl.add_argument("--eq2-fraction", type=float, default=0.6,
                    help="fraction of updates rewarded with Eq. 2 before switching to Eq. 3 (paper: 300/500)")
    rl.add_argument("--credit", choices=["step", "return"], default="step",
                    help="credit of action l_t: its reward r_t, or the reward to go")
    rl.add_argument("--gradient-clip", type=float, default=0.0, help="gradient norm clip (0: off, as in the paper)")
    rl.add_argument("--seed", type=int, default=0)

    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "drlt-otb")
    run.add_argument("--name", default="drlt-otb", help="model name recorded in results.json")
    start = run.add_mutually_exclusive_group()
    start.add_argument("--resume", type=Path, default=None,
                       help="Lightning checkpoint to resume from (default: the run directory's checkpoints/last.ckpt)")
    start.add_argument("--restart", action="store_true",
                       help="start over: delete the run directory's checkpoints instead of resuming from them")
    run.add_argument("--checkpoint-every", type=int, default=None,
                     help="epochs between checkpoints (default: a tenth of the epochs)")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0,
                     help="also checkpoint at the first epoch end this many minutes after the last checkpoint")
    run.add_argument("--accelerator", default="cpu")
    run.add_argument("--devices", default="1", help="Lightning Trainer devices")
    run.add_argument("--num-nodes", type=int, default=1)
    run.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    run.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (default 1: the recurrent updates are tiny, and on 2 cores a second "
                          "thread made them 10x slower; 0 = torch's choice)")
    run.add_argument("--hardware", default=None, help="hardware description for results.json (default: detected)")
    return parser


@dataclass
class Split:
    train: list[tuple[OTBSequence, int]]  # sequence, number of leading frames to train on
    test: list[OTBSequence]
    description: str


def load_sequences(args) -> tuple[Path, list[OTBSequence]]:
    if args.data_dir is None:
        root = args.synthetic_dir
        expected = [f"Synth{i + 1:02d}" for i in range(args.synthetic_sequences)]
        if not all((root / name / "groundtruth_rect.txt").is_file() for name in expected):
            print(f"writing synthetic OTB data to {root}")
            write_synthetic_otb(root, num_sequences=args.synthetic_sequences, num_frames=args.synthetic_frames,
                                seed=args.seed)
        return root, load_otb(root, expected)
    root = args.data_dir
    requested = args.sequences.split(",") if args.sequences and "," in args.sequences else args.sequences
    names = sequence_names(root, requested)
    present = set(discover_sequences(root))
    missing = [name for name in names if name not in present]
    if missing and args.allow_missing_sequences:
        print(f"note: {len(missing)} of the {len(names)} requested sequences are not under {root}; using the other "
              f"{len(names) - len(missing)}")
        names = [name for name in names if name in present]
    elif missing:
        raise SystemExit(f"{root} lacks {len(missing)} requested sequence(s): {', '.join(missing[:10])}"
                         f"{' ...' if len(missing) > 10 else ''} (add --allow-missing-sequences to use the rest)")
    if not names:
        raise SystemExit(f"no OTB sequences to use under {root}")
    return root, load_otb(root, names)


def split_sequences(args, sequences: list[OTBSequence]) -> Split:
    if args.protocol == "paper":
        if not 0 < args.train_fraction <= 1:
            raise SystemExit(f"--train-fraction must lie in (0, 1], got {args.train_fraction}")
        train = [(seq, max(1, math.floor(len(seq) * args.train_fraction))) for seq in sequences]
        return Split(train, sequences, f"paper protocol: {OVERLAP_NOTE}")
    by_name = {seq.name: seq for seq in sequences}
    if args.test_sequences:
        test_names = args.test_sequences.split(",")
        unknown = [name for name in test_names if name not in by_name]
        if unknown:
            raise SystemExit(f"--test-sequences names unknown sequence(s): {', '.join(unknown)}")
    else:
        ordered = sorted(by_name)
        test_names = ordered[len(ordered) - max(1, len(ordered) // 3):]
    train = [(seq, len(seq)) for seq in sequences if seq.name not in test_names]
    if not train:
        raise SystemExit("standard protocol: every sequence is a test sequence, none is left to train on")
    return Split(train, [by_name[name] for name in test_names], "standard protocol: train and test sequences disjoint")


def update_postfix(trainer, module) -> dict:
    metrics = trainer.callback_metrics
    return {"phase": module.reward_phase, "reward": f"{float(metrics.get('train/reward_step', 0)):.3f}",
            "iou": f"{float(metrics.get('train/iou_mu_step', 0)):.3f}"}


def hardware_description(args) -> str:
    if args.hardware:
        return args.hardware
    if args.accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return (f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), "
            f"{torch.get_num_threads()} torch thread(s)")


def main(argv: list[str] | None = None) -> dict | None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    quiet_lightning()
    with RunDirectory(args.run_dir, restart=args.restart, command=["python", "-m", "recipes.drlt_otb", *argv]) as run:
        return train_and_evaluate(args, argv, run)


def train_and_evaluate(args, argv: list[str], run: RunDirectory) -> dict | None:
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    root, sequences = load_sequences(args)
    split = split_sequences(args, sequences)

    tracker_config = {"backbone": args.backbone, "input_size": args.input_size, "grid_size": args.grid_size,
                      "hidden_size": args.hidden_size, "backbone_weights": RANDOM}
    pretrained = None
    if not args.random_backbone:
        pretrained, tracker_config["backbone_weights"] = pretrained_state(args.backbone)

    # Features of every frame either protocol touches, from the frozen backbone, cached on disk.
    backbone_tracker = DRLTTracker(**tracker_config)
    if pretrained is not None:
        load_backbone_state(backbone_tracker.backbone.body, pretrained, args.backbone)
    cache = FeatureCache(args.cache_dir, backbone_tracker)
    needed = {seq.name: seq for seq in [s for s, _ in split.train] + split.test}
    features = {name: cache.features(name, seq.frame_paths)
                for name, seq in progress(needed.items(), desc="backbone features", unit="seq")}

    videos = [TrainingVideo(seq.name, features[seq.name][:count], otb_to_normalized(seq.boxes[:count], seq.image_size))
              for seq, count in split.train]
    chunks_per_epoch = max(-(-len(video.features) // args.steps_per_chunk) for video in videos)
    epochs = args.epochs or max(1, math.ceil(DEFAULT_UPDATES / chunks_per_epoch))
    total_updates = epochs * chunks_per_epoch
    module = DRLTModule(tracker_config, updates_per_epoch=chunks_per_epoch, total_updates=total_updates,
                        steps_per_chunk=args.steps_per_chunk, episodes=args.episodes, sigma=args.sigma,
                        lr_start=args.lr_start, lr_end=args.lr_end, eq2_fraction=args.eq2_fraction,
                        credit=args.credit, gradient_clip=args.gradient_clip, seed=args.seed, videos=videos)
    module.tracker.load_state_dict(backbone_tracker.state_dict())  # the frozen backbone the features came from
    del backbone_tracker

    run_dir = args.run_dir
    # what a checkpoint must have been trained with to be resumed: the module's settings and the training frames
    identity = {"hparams": dict(module.hparams), "train": [[seq.name, count] for seq, count in split.train]}
    checkpoints = run.checkpoint_callback(identity=identity, every_minutes=args.checkpoint_minutes,
                                          every_n_epochs=args.checkpoint_every or max(1, epochs // 10))
    trainer = pl.Trainer(accelerator=args.accelerator, devices=_devices(args.devices), num_nodes=args.num_nodes,
                         strategy=args.strategy, max_epochs=epochs, logger=CSVLogger(run_dir, name="logs"),
                         callbacks=[checkpoints, TrainingProgress("DRLT updates", "upd", update_postfix)],
                         plugins=[run.checkpoint_io()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False, log_every_n_steps=10,
                         num_sanity_val_steps=0)
    resume = args.resume or run.resume_checkpoint(identity=identity)
    if trainer.is_global_zero:
        print(f"{split.description}\ntraining on {len(videos)} video(s), {sum(len(v.features) for v in videos)} "
              f"frames; {epochs} epochs × {chunks_per_epoch} updates (T={args.steps_per_chunk}, N={args.episodes}); "
              f"backbone {args.backbone} ({tracker_config['backbone_weights']}), hidden {args.hidden_size}")
    started = time.perf_counter()
    # an epoch is a few updates, so Lightning's advice about log_every_n_steps does not apply
    with expected_warnings(FROZEN_MODULES, r"The number of training batches \(\d+\) is smaller than the logging"):
        trainer.fit(module, ckpt_path=resume)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Evaluation runs on rank 0 alone; torchmetrics would otherwise wait for the other ranks to sync.
        torch.distributed.destroy_process_group()
    if not trainer.is_global_zero:
        return None
    train_seconds = time.perf_counter() - started

    tracker = module.tracker.cpu().eval()
    predictions = {seq.name: tracker.track_features(features[seq.name], seq.boxes[0], seq.image_size)
                   for seq in split.test}
    results = evaluate_sequences(predictions, {seq.name: seq.boxes for seq in split.test})
    results["protocol"] = split.description
    # Context for the scores: the same frames tracked by repeating the first box.
    repeated = evaluate_sequences({seq.name: np.repeat(seq.boxes[:1], len(seq), axis=0) for seq in split.test},
                                  {seq.name: seq.boxes for seq in split.test})
    results["baseline_repeat_first_box"] = {key: repeated[key] for key in ("success_auc", "precision_20")}
    results["train_seconds"] = train_seconds
    write_run_dir(args, argv, run_dir, tracker, results, split, root, trainer.world_size, total_updates)
    write_tracker_results(predictions, run_dir / "otb_results")
    print(format_summary(results))
    if args.protocol == "paper":
        print(f"note: {OVERLAP_NOTE}")
    print(f"repeating the first box instead: success AUC {repeated['success_auc']:.4f}  "
          f"precision@20 {repeated['precision_20']:.4f}")
    print(f"success AUC {results['success_auc']:.4f}  precision@20 {results['precision_20']:.4f}  "
          f"(run directory {run_dir})")
    return results


def _devices(value: str):
    return int(value) if value.isdigit() else value


def _describe(sequences) -> str:
    return ", ".join(f"{seq.name} ({count} frames)" for seq, count in sequences)


def write_tracker_results(predictions: dict[str, np.ndarray], folder: Path) -> None:
    """The boxes in the OTB toolkit's results format (`<Seq>.txt`, x,y,w,h rows), so that
    `python -m zoo.evaluate otb --results-dir RUN_DIR/otb_results` or any OTB toolkit can re-score them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, boxes in predictions.items():
        np.savetxt(folder / f"{name}.txt", boxes, fmt="%.4f", delimiter=",")


def write_run_dir(args, argv, run_dir: Path, tracker, results: dict, split: Split, root: Path, world: int,
                  total_updates: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker.save_pretrained(run_dir / "model")
    plot_otb(results, run_dir, label=args.name)
    write_per_sequence_csv(results, run_dir / "per_sequence.csv")
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2))

    source = "synthetic OTB data (datamodules.synthetic_otb, seed %d)" % args.seed if args.data_dir is None \
        else f"OTB sequences under {root}"
    trained_on = f"{source}: {_describe(split.train)}" + (
        " (first third of each sequence)" if args.protocol == "paper" else "")
    tested = _describe([(seq, len(seq)) for seq in split.test])
    data = f"{source}: {tested}, whole sequences, one-pass evaluation; " + (
        OVERLAP_NOTE if args.protocol == "paper" else "no test sequence was trained on")
    notes = [
        f"Backbone: timm {args.backbone} ({tracker.backbone_weights}, frozen) instead of the paper's YOLO fine-tuned "
        f"on PASCAL VOC; its last feature map is average-pooled to {args.grid_size}x{args.grid_size} and flattened.",
        f"Hidden size {args.hidden_size} for the FC layer and the LSTM (paper: 5000), so the weights fit 20 MB.",
        f"Adam learning rate {args.lr_start:g} -> {args.lr_end:g} over {total_updates} updates (paper: 1e-5 -> 1e-6 "
        "over 500 epochs of 30 sequences): far fewer updates here, so a larger rate.",
        f"Reward Eq. 2 for the first {args.eq2_fraction:.0%} of the updates, then Eq. 3 (paper: 300 of 500 epochs).",
        "Boxes are clamped to [0, 1] (mu is the last four LSTM hidden units, in (-1, 1)); frame 1's output is the "
        "given box, as OTB's one-pass evaluation expects.",
        "All training videos advance in parallel, one T-frame chunk each per update (the paper goes one video at a "
        "time); the LSTM state is carried across a video's chunks.",
    ]
    baseline = results["baseline_repeat_first_box"]
    notes.append(f"For scale, on the same frames and with the same evaluator, a tracker that repeats the first box "
                 f"scores success AUC {baseline['success_auc']:.3f} and precision@20 {baseline['precision_20']:.3f}.")
    if args.protocol == "paper":
        notes.append("Paper protocol: " + OVERLAP_NOTE + "; these are not OTB benchmark results.")
    summary = {
        "model": args.name, "method": "drlt", "paper": PAPER, "paper_url": PAPER_URL, "benchmark": "OTB",
        "command": "python -m recipes.drlt_otb " + shlex.join(a for a in argv if a != "--restart"),
        "hardware": hardware_description(args) + (f" x {world} processes" if world > 1 else ""),
        "trained_on": trained_on,
        "results": [{
            "task_type": "visual-object-tracking", "task_name": "Visual object tracking (OPE)",
            "dataset_name": "OTB (synthetic, embedded)" if args.data_dir is None
            else f"OTB ({len(split.test)} real sequences)",
            "dataset_type": "otb",
            "dataset_split": "whole sequences (training frames included)" if args.protocol == "paper"
            else "test sequences disjoint from training",
            "data": data,
            "metrics": [{"type": "success_auc", "name": "Success AUC", "value": results["success_auc"]},
                        {"type": "precision_20", "name": "Precision@20px", "value": results["precision_20"]}],
        }],
        "paper_results": PAPER_RESULTS,
        "notes": notes,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
