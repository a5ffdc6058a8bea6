"""Train the zoo's class-agnostic instance segmenter (Mask R-CNN on an ImageNet EfficientNet-Lite0 + FPN) and
measure how well its proposals cover objects in real frames it never saw.

    python -m recipes.segmenter_vos                       # short embedded default (a few minutes on 2 CPU cores)
    python -m recipes.segmenter_vos --steps 1500 --run-dir runs/segmenter-vos     # the published weights' run

Training data: every real instance mask under `../shared/realdata` (DAVIS 2016 sequences, DAVIS 2017 annotated
frames, COCO128-seg polygons, CVPPP A1 leaves) plus synthetic DAVIS-layout frames, except the held-out set: the DAVIS
2016 `val` sequences (in either DAVIS folder) and a fixed 20% of the DAVIS 2017 sequences and COCO images
(`datamodules.instance_frames.held_out_split`). Without `../shared` it trains on synthetic frames alone and says so.

Measured on the held-out frames: per ground-truth object, the best proposal's mask IoU (at most
`--detections-per-img` proposals at score ≥ 0.05, as ALBA uses them); the fraction of objects covered at IoU ≥ 0.5
and ≥ 0.7 and the mean, for the trained segmenter and for the same detector at random initialisation.

The run directory gets model/ (config.json + model.safetensors, weights stored as float16 to fit the zoo's 20 MB,
and every figure measured with exactly those weights), checkpoints/ (re-running the command resumes from
last.ckpt, written atomically; `--restart` starts over; a second run into the same directory is refused),
per_sequence.csv, metrics.json, results.json and held_out_proposals.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.instance_frames import (
    InstanceFrame,
    InstanceFramesDataModule,
    held_out_split,
    real_frames,
    synthetic_frames,
)
from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import RunDirectory, hardware
from zoo.metrics.proposals import ProposalCoverage
from zoo.paths import REPO_ROOT, shared_dir
from zoo.vision.segmenter import InstanceSegmenter
from zoo.vision.segmenter_module import SegmenterModule

STEPS_PER_EPOCH = 50  # optimiser steps between augmentation reseeds (an "epoch" of sampled images)
SOURCE_WEIGHTS = {"davis2016": 0.3, "davis2017": 0.2, "coco128": 0.3, "cvppp": 0.05, "synthetic": 0.15}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.segmenter_vos", description=__doc__.splitlines()[0])
    data = parser.add_argument_group("data")
    default_realdata = (shared_dir() / "realdata") if shared_dir() else None
    data.add_argument("--realdata", type=Path, default=default_realdata,
                      help="folder of real samples (../shared/realdata); 'none' trains on synthetic frames only")
    data.add_argument("--synthetic-sequences", type=int, default=6)
    data.add_argument("--synthetic-dir", type=Path, default=REPO_ROOT / ".cache" / "segmenter" / "synthetic_davis")
    data.add_argument("--eval-stride", type=int, default=10,
                      help="measure every k-th frame of the held-out DAVIS 2016 sequences (all of the others)")
    train = parser.add_argument_group("training")
    train.add_argument("--steps", type=int, default=150, help="optimiser steps (embedded default: 150)")
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--short-side", type=int, default=384, help="training images' shorter side before scaling")
    train.add_argument("--random-backbone", action="store_true", help="start from a random backbone (recorded)")
    train.add_argument("--seed", type=int, default=0)
    model = parser.add_argument_group("model")
    model.add_argument("--min-size", type=int, default=384, help="inference input: shorter side (480p -> 384x683)")
    model.add_argument("--detections-per-img", type=int, default=100)
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", type=Path, default=REPO_ROOT / "runs" / "segmenter-vos")
    run.add_argument("--name", default="segmenter-vos")
    run.add_argument("--restart", action="store_true", help="delete the run directory's checkpoints and start over")
    run.add_argument("--checkpoint-every", type=int, default=1,
                     help=f"epochs ({STEPS_PER_EPOCH} optimiser steps each) between checkpoints")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0, help="...or minutes, whichever comes first")
    run.add_argument("--accelerator", default="auto")
    run.add_argument("--devices", default="1")
    run.add_argument("--num-nodes", type=int, default=1)
    run.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    run.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    run.add_argument("--skip-baseline", action="store_true", help="do not measure the random-init detector")
    return parser


def collect_frames(args) -> tuple[list[InstanceFrame], list[InstanceFrame], str]:
    if not (args.synthetic_dir / "ImageSets").is_dir():
        from datamodules.synthetic_vos import write_davis2017

        staging = args.synthetic_dir.with_name(args.synthetic_dir.name + f".{os.getpid()}.tmp")
        write_davis2017(staging, num_train=args.synthetic_sequences, num_val=0, num_frames=12, height=240,
                        width=427, seed=args.seed)
        staging.rename(args.synthetic_dir)
    synthetic = synthetic_frames(args.synthetic_dir)
    realdata = args.realdata if args.realdata and str(args.realdata) != "none" else None
    if realdata is None or not Path(realdata).is_dir():
        print("no ../shared/realdata: training and measuring on synthetic frames only (numbers say nothing about "
              "real frames)")
        groups = sorted({frame.group for frame in synthetic})
        held = set(groups[: max(1, len(groups) // 5)])  # whole sequences, as with real data
        return ([f for f in synthetic if f.group not in held], [f for f in synthetic if f.group in held],
                "synthetic DAVIS-layout frames only")
    train, held_out = held_out_split(real_frames(realdata), realdata)
    shared = shared_dir()
    shown = "../shared/realdata" if shared and Path(realdata).resolve() == (shared / "realdata").resolve() else realdata
    return train + synthetic, held_out, f"real samples under {shown} + synthetic DAVIS-layout frames"


def evaluation_frames(held_out: list[InstanceFrame], stride: int) -> list[InstanceFrame]:
    davis2016_groups = {frame.group for frame in held_out if frame.source == "davis2016"}
    chosen, seen = [], defaultdict(int)
    for frame in held_out:
        if frame.source == "davis2017" and frame.group in davis2016_groups:
            continue  # the same video's frames are measured from the DAVIS 2016 copy
        if frame.source == "davis2016":
            seen[frame.group] += 1
            if (seen[frame.group] - 1) % stride:
                continue
        chosen.append(frame)
    return chosen


def measure(segmenter: InstanceSegmenter, frames: list[InstanceFrame], label: str) -> dict:
    overall, per_group, per_source = ProposalCoverage(), defaultdict(ProposalCoverage), defaultdict(ProposalCoverage)
    seconds, proposals_count = 0.0, 0
    for frame in progress(frames, desc=f"measuring {label}", unit="frame"):
        rgb, objects = frame.read()
        start = time.perf_counter()
        detections = segmenter.detect(rgb)
        seconds += time.perf_counter() - start
        proposals_count += len(detections["scores"])
        for metric in (overall, per_group[f"{frame.source}/{frame.group}"], per_source[frame.source]):
            metric.update(detections["masks"], objects)
    return {
        **overall.compute(),
        "frames": len(frames),
        "mean_proposals": proposals_count / max(1, len(frames)),
        "s_per_frame": seconds / max(1, len(frames)),
        "per_source": {name: metric.compute() for name, metric in sorted(per_source.items())},
        "per_sequence": {name: metric.compute() for name, metric in sorted(per_group.items())},
    }


class EpochSeed(pl.Callback):
    """New augmentation draws every epoch (the dataset's rng is seeded by (seed, epoch, index)). The sampler's
    generator is not checkpointed, so a resumed run draws other images than the uninterrupted one would have."""

    def on_train_epoch_start(self, trainer, pl_module):
        trainer.train_dataloader.dataset.epoch = trainer.current_epoch


def train(args, frames: list[InstanceFrame], config: dict, run: RunDirectory) -> SegmenterModule:
    module = SegmenterModule(config, total_steps=args.steps, lr=args.lr, warmup_steps=min(50, args.steps // 5))
    # What must match to resume; --steps may grow (warm-up and cosine schedule then follow the new total).
    identity = {"hparams": {k: v for k, v in module.hparams.items() if k not in ("total_steps", "warmup_steps")},
                "seed": args.seed,
                "batch_size": args.batch_size, "short_side": args.short_side}
    trainer = pl.Trainer(accelerator=args.accelerator, devices=int(args.devices) if args.devices.isdigit()
                         else args.devices, num_nodes=args.num_nodes, strategy=args.strategy, max_steps=args.steps,
                         max_epochs=-1, logger=CSVLogger(args.run_dir, name="logs"),
                         callbacks=[run.checkpoint_callback(identity=identity, every_n_epochs=args.checkpoint_every,
                                                            every_minutes=args.checkpoint_minutes),
                                    EpochSeed(), TrainingProgress("segmenter steps", "step")],
                         plugins=[run.checkpoint_io()], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=10, use_distributed_sampler=False,
                         num_sanity_val_steps=0)
    data = InstanceFramesDataModule(frames, SOURCE_WEIGHTS, args.batch_size, STEPS_PER_EPOCH * args.batch_size,
                                    short_side=args.short_side, seed=args.seed)
    with expected_warnings(FROZEN_MODULES):
        trainer.fit(module, datamodule=data, ckpt_path=run.resume_checkpoint(identity=identity))
    if not trainer.is_global_zero:
        sys.exit(0)
    return module


def rounded_to_float16(segmenter: InstanceSegmenter) -> InstanceSegmenter:
    """The weights as they are published (float16), back in float32 for CPU inference."""
    return segmenter.half().float().eval()


def plot_examples(segmenter: InstanceSegmenter, frames: list[InstanceFrame], path: Path, count: int = 6) -> None:
    """Held-out frames with each object's best proposal outlined (green) over the ground truth (red tint)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.metrics.proposals import mask_ious

    picks = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(count, len(frames)))]
    figure, axes = plt.subplots(2, (len(picks) + 1) // 2, figsize=(4 * ((len(picks) + 1) // 2), 6), squeeze=False)
    for axis, frame in zip(axes.flat, picks):
        rgb, objects = frame.read()
        masks = segmenter.detect(rgb)["masks"]
        canvas = rgb.copy()
        canvas[objects.any(0)] = (0.6 * canvas[objects.any(0)] + [100, 0, 0]).clip(0, 255).astype(np.uint8)
        ious = mask_ious(masks, objects)
        for best in ious.argmax(1) if len(masks) else []:
            contours, _ = cv2.findContours(masks[best].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, (0, 255, 0), 2)
        best_ious = ious.max(1) if len(masks) else np.zeros(len(objects))
        axis.imshow(canvas)
        axis.set_title(f"{frame.group} (best IoU {', '.join(f'{v:.2f}' for v in best_ious[:4])})", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle("held-out frames: best proposal per object (green) over the ground truth (red)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def previous_train_seconds(run_dir: Path) -> float:
    """Training time that earlier invocations of this run recorded (a resumed run adds its own to it); a session that
    died before writing metrics.json is not counted."""
    path = run_dir / "metrics.json"
    return float(json.loads(path.read_text()).get("train_seconds", 0.0)) if path.is_file() else 0.0


def frame_name(frame: InstanceFrame) -> str:
    """source/group/file: names a frame without the machine's paths."""
    return f"{frame.source}/{frame.group}/{frame.image.name}"


SOURCE_NAMES = {
    "davis2016": ("Held-out DAVIS 2016 val sequences", "every {stride}th frame of the DAVIS 2016 val sequences"),
    "davis2017": ("Held-out DAVIS 2017 sequences", "the annotated frames of held-out DAVIS 2017 sequences"),
    "coco128": ("Held-out COCO128 images", "held-out COCO128-seg images (80 classes, many small objects)"),
    "synthetic": ("Held-out synthetic sequences", "held-out synthetic DAVIS-layout sequences"),
}


def result_groups(measured: dict, eval_frames: list[InstanceFrame], stride: int) -> list[tuple[str | None, str, str]]:
    """(per_source key or None for all, dataset name, what was measured): video frames first, the VOS use."""
    def described(frames: list[InstanceFrame], what: str) -> str:
        groups = sorted({frame.group for frame in frames})
        listed = ", ".join(groups[:8]) + (f" and {len(groups) - 8} more" if len(groups) > 8 else "")
        return f"{what}: {len(frames)} real frames never used in training ({listed})"

    results = []
    for key, (name, detail) in SOURCE_NAMES.items():
        if key in measured["per_source"]:
            frames = [frame for frame in eval_frames if frame.source == key]
            results.append((key, name, described(frames, detail.format(stride=stride))))
    everything = f"all of the above (DAVIS 2016 val every {stride}th frame)"
    return results + [(None, "All held-out frames", described(eval_frames, everything))]


def coverage_result(name: str, values: dict, data: str) -> dict:
    return {
        "task_type": "image-segmentation", "task_name": "Class-agnostic instance proposals",
        "dataset_name": name, "dataset_type": "instance-proposals",
        "dataset_split": f"held out, {values['objects']} objects", "data": data,
        "metrics": [
            {"type": "covered_iou50", "name": "Objects covered at IoU 0.5", "value": round(values["covered@0.5"], 4)},
            {"type": "covered_iou70", "name": "Objects covered at IoU 0.7", "value": round(values["covered@0.7"], 4)},
            {"type": "mean_best_iou", "name": "Mean best-proposal IoU", "value": round(values["mean_best_iou"], 4)},
        ],
    }


def write_run_dir(args, argv, segmenter, measured, baseline, description, train_frames, eval_frames, seconds) -> dict:
    run_dir = args.run_dir
    segmenter.half().save_pretrained(run_dir / "model")
    segmenter.float()
    metrics = {"zoo_segmenter": measured, "random_init_detector": baseline, "train_seconds": seconds,
               "train_frames": len(train_frames), "eval_stride": args.eval_stride,
               "eval_frames": [frame_name(frame) for frame in eval_frames]}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(run_dir / "per_sequence.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sequence", "objects", "covered@0.5", "covered@0.7", "mean_best_iou",
                         "random_init_covered@0.5", "random_init_mean_best_iou"])
        for name, row in measured["per_sequence"].items():
            base = (baseline or {}).get("per_sequence", {}).get(name, {})
            writer.writerow([name, row["objects"], f"{row['covered@0.5']:.4f}", f"{row['covered@0.7']:.4f}",
                             f"{row['mean_best_iou']:.4f}", f"{base.get('covered@0.5', float('nan')):.4f}",
                             f"{base.get('mean_best_iou', float('nan')):.4f}"])
    plot_examples(segmenter, eval_frames, run_dir / "held_out_proposals.png")
    counts = defaultdict(int)
    for frame in train_frames:
        counts[frame.source] += 1
    trained_on = f"{description}: " + ", ".join(f"{count} {source} frames" for source, count in sorted(counts.items()))
    notes = [
        f"Backbone: timm tf_efficientnet_lite0 with ImageNet weights from {segmenter.backbone_weights}, "
        "BatchNorm frozen, stem and first two stages frozen; FPN 128 channels; box head 512; mask head two "
        "convolutions (128, 256): the paper methods' Mask R-CNN / YOLACT use ResNet-50/101 trained on COCO.",
        f"Inference at shorter side {args.min_size} (480p -> {args.min_size}x{round(args.min_size * 854 / 480)}), at most "
        f"{args.detections_per_img} proposals at score >= 0.05; weights stored as float16 (every figure here "
        "measured with them).",
        f"Trained {args.steps} AdamW steps of {args.batch_size} augmented images (scale, crop, flip, colour), "
        f"sources drawn with shares {SOURCE_WEIGHTS}.",
    ]
    if baseline is not None:
        per_source = "; ".join(f"{SOURCE_NAMES.get(key, (key,))[0]}: {v['covered@0.5']:.3f} / {v['covered@0.7']:.3f} / "
                               f"{v['mean_best_iou']:.3f}" for key, v in baseline["per_source"].items())
        notes.append(
            f"Baseline, the same detector at random initialisation on the same frames (covered@0.5 / covered@0.7 / "
            f"mean best IoU): all {baseline['covered@0.5']:.3f} / {baseline['covered@0.7']:.3f} / "
            f"{baseline['mean_best_iou']:.3f} ({baseline['mean_proposals']:.0f} proposals per frame); {per_source}.")
    notes.append(f"Trained segmenter: {measured['mean_proposals']:.1f} proposals per frame on average, "
                 f"{measured['s_per_frame']:.2f} s per frame while measuring ({hardware(args.accelerator)}).")
    summary = {
        "model": args.name, "method": "segmenter", "benchmark": "held-out real DAVIS / COCO frames",
        "train_seconds": round(seconds, 1),
        "paper": "Class-agnostic Mask R-CNN (He et al., ICCV 2017) serving the zoo's VOS methods",
        "paper_url": "https://arxiv.org/abs/1703.06870",
        "command": "python -m recipes.segmenter_vos " + shlex.join(argv),
        "hardware": hardware(args.accelerator), "trained_on": trained_on,
        "results": [coverage_result(name, measured if key is None else measured["per_source"][key], detail)
                    for key, name, detail in result_groups(measured, eval_frames, args.eval_stride)],
        "paper_results": [],
        "notes": notes,
        "backbone_weights": segmenter.backbone_weights,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    train_frames, held_out, description = collect_frames(args)
    eval_frames = evaluation_frames(held_out, args.eval_stride)
    print(f"{description}: {len(train_frames)} training frames, {len(eval_frames)} held-out frames measured")
    config = {"min_size": args.min_size, "detections_per_img": args.detections_per_img,
              "pretrained_backbone": not args.random_backbone, "seed": args.seed}
    quiet_lightning()
    with RunDirectory(args.run_dir, restart=args.restart, command=["python", "-m", "recipes.segmenter_vos", *argv]) as run:
        started = time.perf_counter()
        module = train(args, train_frames, config, run)
        seconds = time.perf_counter() - started
    seconds += previous_train_seconds(args.run_dir) if not args.restart else 0.0
    segmenter = rounded_to_float16(module.segmenter.cpu())
    measured = measure(segmenter, eval_frames, "trained segmenter")
    baseline = None
    if not args.skip_baseline:
        random_config = {**config, "pretrained_backbone": False}
        baseline = measure(InstanceSegmenter(**random_config).eval(), eval_frames, "random-init detector")
    metrics = write_run_dir(args, argv, segmenter, measured, baseline, description, train_frames, eval_frames, seconds)
    print(json.dumps({key: metrics["zoo_segmenter"][key] for key in ("covered@0.5", "covered@0.7", "mean_best_iou",
                                                                       "objects", "s_per_frame")}))
    if baseline:
        print("random-init detector:", json.dumps({key: baseline[key] for key in ("covered@0.5", "covered@0.7",
                                                                               "mean_best_iou")}))
    print(f"run directory {args.run_dir}")
    return metrics


if __name__ == "__main__":
    main()
