"""Train DRLT (Zhang et al. 2017, arXiv:1701.08936) with REINFORCE and evaluate it by OTB one-pass evaluation.

    python -m recipes.drlt_otb                                    # embedded synthetic data, a few minutes on CPU
    python -m recipes.drlt_otb --data-dir OTB_ROOT                # train on ../shared/realdata, test on every OTB video
    python -m recipes.drlt_otb --data-dir OTB_ROOT --protocol paper --sequences drlt30    # the paper's protocol

Protocols. `standard` (default): the test sequences are never trained on or used for model selection; training
uses the multi-object videos of `datamodules.tracking_videos` (`--train-sources`: real DAVIS 2016 videos, virtual
camera paths over COCO128 / CVPPP / DAVIS 2017 stills from `--realdata`, synthetic multi-target videos; with no
`--data-dir`, synthetic only), and a validation set of whole videos disjoint from both (DAVIS 2016 val and a hashed
12 % of the other videos) picks the best epoch and stops training when it stops improving. `paper`: additionally
train on the first third of the frames of every test sequence and test on the whole sequences, so the test frames
include the training frames (as in the paper, §4.3; not the standard OTB protocol); results are then also split
into the fitted first third and the unseen rest.

The run directory gets model/ (Hub folder: config.json + model.safetensors), checkpoints/last.ckpt, success_plot.png,
precision_plot.png, per_sequence.csv, metrics.json and results.json (what `python -m zoo.publish` reads). Re-running
the same command resumes from checkpoints/last.ckpt (`--restart` starts over); see `recipes._run_dir`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from datamodules.instance_frames import davis2016_val_sequences
from datamodules.otb import OTBSequence, discover_sequences, load_otb, sequence_names
from datamodules.synthetic_otb import write_synthetic_otb
from datamodules.tracking_videos import (TrackedVideo, otb_videos, realdata_tracking_sources,
                                         synthetic_multi_target_videos)
from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import RunDirectory, checkpoint_state
from zoo.drlt.env import TrainingTrack, otb_to_normalized
from zoo.drlt.features import FeatureCache
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule
from zoo.drlt.networks import OBSERVATIONS, OUTPUTS
from zoo.backbones import RANDOM, pretrained_state, load_backbone_state
from zoo.evaluation.otb import evaluate_sequences, format_summary, plot_otb, write_per_sequence_csv
from zoo.metrics.otb import center_error
from zoo.paths import REPO_ROOT

PAPER = "Deep Reinforcement Learning for Visual Object Tracking in Videos (Zhang et al., 2017)"
PAPER_URL = "https://arxiv.org/abs/1701.08936"
PAPER_RESULTS = [{"dataset_name": "OTB-100 (DRLT 30-sequence subset)",
                  "metrics": [{"type": "success_auc", "value": 0.543}, {"type": "precision_20", "value": 0.635}]}]
DEFAULT_UPDATES = 3000
DEFAULT_SYNTHETIC_UPDATES = 600
DEFAULT_CAMERA_FRAMES = 40  # rendered into --video-dir itself (where earlier versions rendered); other lengths below it
DEFAULT_REALDATA = Path(os.environ.get("ZOO_SHARED", REPO_ROOT.parent / "shared")) / "realdata"
REAL_SOURCES = ("davis2016", "coco128", "cvppp", "davis2017")
TRAIN_SOURCES = (*REAL_SOURCES, "synthetic", "otb")
OVERLAP_NOTE = "test frames include the training frames (paper protocol: train on the first third of each sequence)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.drlt_otb", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="OTB root (<Seq>/img/%%04d.jpg + groundtruth_rect.txt) holding the TEST sequences; default: "
                           "write synthetic OTB data")
    data.add_argument("--sequences", default=None,
                      help="test sequences: a subset name (drlt30, otb100, ...) or comma-separated names; default: every "
                           "sequence under --data-dir")
    data.add_argument("--allow-missing-sequences", action="store_true",
                      help="with a subset name, use the sequences of it that are present instead of failing")
    data.add_argument("--protocol", choices=["standard", "paper"], default="standard")
    data.add_argument("--train-fraction", type=float, default=1 / 3,
                      help="paper protocol: leading fraction of each test sequence also trained on (paper: 1/3)")
    data.add_argument("--paper-protocol-run", type=Path, default=None,
                      help="run directory of a --protocol paper run of this recipe: its recorded results are shown "
                           "beside these, labelled as training frames included")
    data.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA,
                      help="../shared/realdata: where the real training videos come from (with --data-dir)")
    data.add_argument("--train-sources", default=None,
                      help=f"comma-separated training sources among {', '.join(TRAIN_SOURCES)}; default: "
                           "synthetic without --data-dir, all of them with it")
    data.add_argument("--validation-fraction", type=float, default=0.12,
                      help="hashed share of the non-DAVIS-2016 training videos kept for validation (DAVIS 2016 val is "
                           "always validation)")
    data.add_argument("--synthetic-dir", type=Path, default=REPO_ROOT / ".cache" / "drlt" / "synthetic_otb")
    data.add_argument("--synthetic-sequences", type=int, default=6, help="synthetic single-target TEST videos")
    data.add_argument("--synthetic-frames", type=int, default=60)
    data.add_argument("--synthetic-videos", type=int, default=16,
                      help="synthetic multi-target TRAINING videos (3 targets each)")
    data.add_argument("--video-dir", type=Path, default=REPO_ROOT / ".cache" / "drlt" / "videos",
                      help="where the virtual-camera videos of still images are rendered (once)")
    data.add_argument("--camera-frames", type=int, default=DEFAULT_CAMERA_FRAMES,
                      help="frames per virtual-camera video of a still image (training and validation); longer ones "
                           "get more camera keyframes, not slower pans")
    data.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".cache" / "drlt" / "features",
                      help="on-disk cache of the frozen backbone's feature maps")

    net = parser.add_argument_group("network")
    net.add_argument("--backbone", default="tf_efficientnet_lite0",
                     help="timm backbone standing in for the paper's YOLO (frozen, ImageNet weights from zoo.backbones)")
    net.add_argument("--random-backbone", action="store_true",
                     help="keep the backbone randomly initialised (recorded as 'random'); without it, missing ImageNet "
                          "weights are an error, never a silent random backbone")
    net.add_argument("--feature-stage", type=int, default=3,
                     help="backbone stage whose feature map is used (3: stride 16, 14x14 at 224; -1: the last stage)")
    net.add_argument("--input-size", type=int, default=224, help="frames are resized to this square")
    net.add_argument("--grid-size", type=int, default=0,
                     help="feature map pooled to grid×grid for the paper's whole-frame features i_t (paper: YOLO's "
                          "7x7 grid); 0 leaves i_t out: beside ~1,000 grid features the template inputs drowned in "
                          "REINFORCE's noisy gradient and the tracker never moved from the first box")
    net.add_argument("--observation", choices=OBSERVATIONS, default="template",
                     help="'paper': [i_t, s_t]; 'template': plus the first box's appearance matched in every frame "
                          "(see zoo.drlt.networks)")
    net.add_argument("--output", choices=OUTPUTS, default="residual",
                     help="'absolute': mu_t = the last four LSTM hidden units (the paper); 'residual': they move the "
                          "previous estimate (an untrained tracker repeats the first box instead of drawing random "
                          "boxes)")
    net.add_argument("--residual-scale", type=float, default=0.5, help="largest move per frame, residual output")
    net.add_argument("--location-scale", type=float, default=5.0,
                     help="factor on s_t and the other location inputs, so the FC cannot ignore them (paper: 1)")
    net.add_argument("--hidden-size", type=int, default=256,
                     help="FC and LSTM width (paper: 5000; 256 keeps the published weights ≤ 20 MB)")

    rl = parser.add_argument_group("REINFORCE (Algorithm 1)")
    rl.add_argument("--steps-per-chunk", "-T", default="10,20:0.3,40:0.6",
                    help="T, frames per update, as a curriculum 'T[,T:fraction...]': each T from that fraction of the "
                         "updates (paper: 10)")
    rl.add_argument("--slots", type=int, default=32, help="episodes advanced in parallel per update")
    rl.add_argument("--episode-length", type=int, default=80,
                    help="frames per training episode (0: to the end of the video, as the paper)")
    rl.add_argument("--fixed-start", action="store_true",
                    help="start every episode at the first frame (the paper) instead of a random frame")
    rl.add_argument("--reverse-prob", type=float, default=0.5, help="chance an episode plays backwards in time")
    rl.add_argument("--flip-prob", type=float, default=0.5, help="chance an episode is mirrored left-right")
    rl.add_argument("--episodes", "-N", type=int, default=5, help="N, sampled episodes per update (paper: 5)")
    rl.add_argument("--sigma", type=float, default=0.01, help="std of the Gaussian location policy (paper: 0.01)")
    rl.add_argument("--lr-start", type=float, default=1e-3, help="Adam learning rate at the start (paper: 1e-5)")
    rl.add_argument("--lr-end", type=float, default=1e-4, help="after exponential annealing (paper: 1e-6)")
    rl.add_argument("--updates", type=int, default=None,
                    help=f"maximum updates (default: {DEFAULT_UPDATES} with --data-dir, {DEFAULT_SYNTHETIC_UPDATES} "
                         "without)")
    rl.add_argument("--validate-every", type=int, default=100, help="updates per epoch; validation after each")
    rl.add_argument("--patience", type=int, default=6,
                    help="stop after this many validations without a better validation AUC (0: never stop early)")
    rl.add_argument("--patience-from", type=float, default=None,
                    help="fraction of the updates from which --patience counts (default: where the last T of the "
                         "curriculum and the Eq. 3 reward have both begun, so that early stopping never ends a run "
                         "before the schedule's last phase; 0: from the start)")
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
    run.add_argument("--checkpoint-minutes", type=float, default=10.0,
                     help="also checkpoint at the first epoch end this many minutes after the last checkpoint")
    run.add_argument("--accelerator", default="cpu")
    run.add_argument("--devices", default="1", help="Lightning Trainer devices")
    run.add_argument("--num-nodes", type=int, default=1)
    run.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    run.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (default 1: the recurrent updates are small, and with two threads on a "
                          "busy 2-core machine they ran 15x slower; 0 = torch's choice)")
    run.add_argument("--hardware", default=None, help="hardware description for results.json (default: detected)")
    return parser


class EarlyStoppingFrom(EarlyStopping):
    """Lightning's EarlyStopping, silent until a validation that follows training past `start_update`: a run with a
    T curriculum and the Eq. 2 -> Eq. 3 switch is not stopped before its last phase (runs stopped on a plateau of the
    T = 20 phase, Eq. 2 reward, never reached the Eq. 3 reward the paper trains with). The best checkpoint is still
    chosen over all validations."""

    def __init__(self, *, start_update: int, updates_per_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.start_update = start_update
        self.updates_per_epoch = updates_per_epoch

    def on_validation_end(self, trainer, pl_module) -> None:  # the recipe checks at validation end only
        if (trainer.current_epoch + 1) * self.updates_per_epoch > self.start_update:
            super().on_validation_end(trainer, pl_module)


def patience_from(args) -> float:
    """The fraction of the updates from which early stopping counts (see --patience-from)."""
    if args.patience_from is not None:
        return args.patience_from
    return max(args.eq2_fraction, parse_chunk_schedule(args.steps_per_chunk)[-1][1])


def parse_chunk_schedule(text: str) -> tuple[tuple[int, float], ...]:
    """'10,20:0.3,40:0.6' -> ((10, 0.0), (20, 0.3), (40, 0.6))."""
    schedule = []
    try:
        for index, entry in enumerate(text.split(",")):
            steps, _, fraction = entry.partition(":")
            schedule.append((int(steps), float(fraction) if fraction else 0.0))
    except ValueError:
        raise SystemExit(f"--steps-per-chunk {text!r}: expected 'T' or 'T,T:fraction,...', e.g. 10,20:0.3,40:0.6")
    if schedule[0][1] != 0 or any(b[1] <= a[1] for a, b in zip(schedule, schedule[1:])) or schedule[-1][1] >= 1:
        raise SystemExit(f"--steps-per-chunk {text!r}: fractions must start at 0 and increase below 1")
    return tuple(schedule)


@dataclass
class Data:
    train: list[TrainingTrack]
    validation: list[TrainingTrack]
    test: list[OTBSequence]
    fitted_frames: dict[str, int]  # paper protocol: leading frames of each test sequence that were trained on
    description: str
    trained_on: str
    validated_on: str


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


def _name_hash(name: str) -> float:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2**32


def validation_names(names: list[str], fraction: float, davis2016_val: set[str]) -> set[str]:
    """DAVIS 2016 val sequences always; of the others a fixed share, by a hash of the name (stable across runs and
    subsets); at least one video when there are several (the lowest hash), so that small runs validate too."""
    chosen = set()
    for name in names:
        source, _, group = name.partition("/")
        if group in davis2016_val if source == "davis2016" else _name_hash(name) < fraction:
            chosen.add(name)
    others = [name for name in names if not name.startswith("davis2016/")]
    if not chosen and len(others) > 1:
        chosen.add(min(others, key=_name_hash))
    return chosen


def training_videos(args, sources: list[str], test_names: set[str]) -> list[TrackedVideo]:
    videos = []
    real = [source for source in sources if source in REAL_SOURCES]
    if real:
        if not args.realdata.is_dir():
            raise SystemExit(f"--realdata {args.realdata} does not exist: point it at ../shared/realdata, or leave the "
                             f"real sources ({', '.join(real)}) out of --train-sources")
        # each length in its own folder, so that switching lengths does not render the videos again
        video_dir = args.video_dir if args.camera_frames == DEFAULT_CAMERA_FRAMES else \
            args.video_dir / f"{args.camera_frames}-frames"
        found = realdata_tracking_sources(args.realdata, video_dir, seed=args.seed, sources=tuple(real),
                                          num_frames=args.camera_frames,
                                          progress=progress)
        for source in real:
            if not found.get(source):
                raise SystemExit(f"--train-sources names {source}, but {args.realdata} holds none of its data")
            videos += found[source]
    if "synthetic" in sources:
        videos += synthetic_multi_target_videos(args.synthetic_dir.with_name("synthetic_multi"),
                                                num_videos=args.synthetic_videos, num_frames=args.synthetic_frames,
                                                seed=args.seed)
    if "otb" in sources:
        if args.data_dir is None:
            raise SystemExit("--train-sources otb needs --data-dir (its non-test sequences are trained on)")
        videos += [video for video in otb_videos(args.data_dir) if video.name.split("/", 1)[1] not in test_names]
    return videos


def tracks_of(video: TrackedVideo, features: torch.Tensor, frames: int | None = None) -> list[TrainingTrack]:
    tracks = []
    for target, boxes in video.boxes.items():
        locations = otb_to_normalized(boxes[:frames], video.image_size)
        if int(torch.isfinite(locations).all(-1).sum()) >= 2:
            tracks.append(TrainingTrack(f"{video.name}#{target}", features[:frames], locations))
    return tracks


def balance_sources(tracks: list[TrainingTrack]) -> None:
    """Each source gets the same share of the episodes, whatever its number of tracks (CVPPP has ~900 leaves)."""
    counts: dict[str, int] = {}
    for track in tracks:
        counts[track.name.split("/")[0]] = counts.get(track.name.split("/")[0], 0) + 1
    for track in tracks:
        track.weight = 1.0 / counts[track.name.split("/")[0]]


def build_data(args, cache: FeatureCache, test: list[OTBSequence], root: Path) -> Data:
    default_sources = "synthetic" if args.data_dir is None else ",".join(s for s in TRAIN_SOURCES if s != "otb")
    sources = (args.train_sources or default_sources).split(",")
    unknown = [source for source in sources if source not in TRAIN_SOURCES]
    if unknown:
        raise SystemExit(f"--train-sources: unknown source(s) {', '.join(unknown)}; choose among "
                         f"{', '.join(TRAIN_SOURCES)}")
    videos = training_videos(args, sources, {seq.name for seq in test})
    train, validation = [], []
    davis2016 = args.realdata / "DAVIS2016"
    davis2016_val = set(davis2016_val_sequences(davis2016)) if "davis2016" in sources else set()
    held_out = validation_names([video.name for video in videos], args.validation_fraction, davis2016_val)
    for video in progress(videos, desc="backbone features", unit="video"):
        features = cache.features(video.name.replace("/", "-"), video.frame_paths)
        if video.name in held_out:
            validation += tracks_of(video, features)[:1]  # whole video, first target
        else:
            train += tracks_of(video, features)
    fitted = {}
    if args.protocol == "paper":
        if not 0 < args.train_fraction <= 1:
            raise SystemExit(f"--train-fraction must lie in (0, 1], got {args.train_fraction}")
        for seq in test:
            fitted[seq.name] = max(2, math.floor(len(seq) * args.train_fraction))
            features = cache.features(f"otb-{seq.name}", seq.frame_paths)
            locations = otb_to_normalized(seq.boxes[:fitted[seq.name]], seq.image_size)
            train.append(TrainingTrack(f"test/{seq.name}#1", features[:fitted[seq.name]], locations))
    if not train:
        raise SystemExit("no training tracks: every video went to validation; lower --validation-fraction")
    if not validation:
        raise SystemExit("no validation videos: raise --validation-fraction or include davis2016 in --train-sources")
    balance_sources(train)
    counts = {}
    for track in train:
        counts[track.name.split("/")[0]] = counts.get(track.name.split("/")[0], 0) + 1
    trained_on = "; ".join(f"{source}: {count} tracks" for source, count in counts.items())
    validated_on = ", ".join(track.name.split("#")[0] for track in validation)
    description = ("paper protocol: " + OVERLAP_NOTE) if args.protocol == "paper" else \
        "standard protocol: test sequences never trained on or used for model selection"
    return Data(train, validation, test, fitted, description, trained_on, validated_on)


def update_postfix(trainer, module) -> dict:
    metrics = trainer.callback_metrics
    return {"phase": module.reward_phase, "T": module.steps_per_chunk,
            "reward": f"{float(metrics.get('train/reward_step', 0)):.3f}",
            "iou": f"{float(metrics.get('train/iou_mu_step', 0)):.3f}",
            "val_auc": f"{float(metrics.get('val/auc', float('nan'))):.3f}"}


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
    chunk_schedule = parse_chunk_schedule(args.steps_per_chunk)
    if args.camera_frames < 2:
        raise SystemExit(f"--camera-frames must be at least 2, got {args.camera_frames}")
    if args.patience_from is not None and not 0 <= args.patience_from < 1:
        raise SystemExit(f"--patience-from is a fraction of the updates in [0, 1), got {args.patience_from}")
    root, test = load_sequences(args)

    tracker_config = {"backbone": args.backbone, "input_size": args.input_size, "grid_size": args.grid_size,
                      "hidden_size": args.hidden_size, "backbone_weights": RANDOM, "observation": args.observation,
                      "feature_stage": args.feature_stage, "location_scale": args.location_scale,
                      "output": args.output, "residual_scale": args.residual_scale}
    pretrained = None
    if not args.random_backbone:
        pretrained, tracker_config["backbone_weights"] = pretrained_state(args.backbone)

    # Features of every frame, from the frozen backbone, cached on disk.
    backbone_tracker = DRLTTracker(**tracker_config)
    if pretrained is not None:
        load_backbone_state(backbone_tracker.backbone.body, pretrained, args.backbone)
    cache = FeatureCache(args.cache_dir, backbone_tracker)
    data = build_data(args, cache, test, root)
    test_features = {seq.name: cache.features(f"otb-{seq.name}", seq.frame_paths)
                     for seq in progress(test, desc="test features", unit="seq")}

    total_updates = args.updates or (DEFAULT_UPDATES if args.data_dir is not None else DEFAULT_SYNTHETIC_UPDATES)
    epochs = max(1, math.ceil(total_updates / args.validate_every))
    module = DRLTModule(tracker_config, updates_per_epoch=args.validate_every, total_updates=total_updates,
                        chunk_schedule=chunk_schedule, slots=args.slots, episode_length=args.episode_length or None,
                        random_start=not args.fixed_start, reverse_prob=args.reverse_prob, flip_prob=args.flip_prob,
                        episodes=args.episodes, sigma=args.sigma, lr_start=args.lr_start, lr_end=args.lr_end,
                        eq2_fraction=args.eq2_fraction, credit=args.credit, gradient_clip=args.gradient_clip,
                        seed=args.seed, tracks=data.train, validation_tracks=data.validation)
    module.tracker.load_state_dict(backbone_tracker.state_dict())  # the frozen backbone the features came from
    del backbone_tracker

    run_dir = args.run_dir
    # what a checkpoint must have been trained with to be resumed: the module's settings and the training tracks
    identity = {"hparams": dict(module.hparams), "train": sorted(track.name for track in data.train),
                "validation": [track.name for track in data.validation]}
    last = run.checkpoint_callback(identity=identity, every_minutes=args.checkpoint_minutes, every_n_epochs=1)
    # Both act when validation ends, so that last.ckpt (written at the epoch's end) already holds this epoch's
    # best score and patience count; acting at the epoch's end they would run after it, and a resumed run would
    # take its first validation for the best and count patience one short.
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/auc", mode="max",
                           save_top_k=1, save_last=False, enable_version_counter=False, save_on_train_epoch_end=False)
    callbacks = [last, best, TrainingProgress("DRLT updates", "upd", update_postfix)]
    if args.patience > 0:
        callbacks.append(EarlyStoppingFrom(start_update=round(patience_from(args) * total_updates),
                                           updates_per_epoch=args.validate_every, monitor="val/auc", mode="max",
                                           patience=args.patience, min_delta=1e-4, check_on_train_epoch_end=False))
    trainer = pl.Trainer(accelerator=args.accelerator, devices=_devices(args.devices), num_nodes=args.num_nodes,
                         strategy=args.strategy, max_epochs=epochs, logger=CSVLogger(run_dir, name="logs"),
                         callbacks=callbacks, plugins=[run.checkpoint_io()], enable_checkpointing=True,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         log_every_n_steps=10, num_sanity_val_steps=0)
    resume = args.resume or run.resume_checkpoint(identity=identity)
    if trainer.is_global_zero:
        print(f"{data.description}\ntraining on {len(data.train)} track(s) ({data.trained_on}); validating on "
              f"{len(data.validation)} whole video(s); up to {total_updates} updates, validation every "
              f"{args.validate_every} (T={args.steps_per_chunk}, N={args.episodes}, {args.slots} slots); backbone "
              f"{args.backbone} ({tracker_config['backbone_weights']}), observation {args.observation}")
    finished = resume is not None and checkpoint_state(resume)["complete"]
    if finished:  # fitting again would train past an early stop; evaluate what the run ended with
        module.load_state_dict(torch.load(resume, map_location="cpu", weights_only=True)["state_dict"])
    else:
        # an epoch is a few updates, so Lightning's advice about log_every_n_steps does not apply
        with expected_warnings(FROZEN_MODULES, r"The number of training batches \(\d+\) is smaller than the logging",
                               r"Checkpoint directory .* exists and is not empty"):
            trainer.fit(module, ckpt_path=resume)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Evaluation runs on rank 0 alone; torchmetrics would otherwise wait for the other ranks to sync.
            torch.distributed.destroy_process_group()
        if not trainer.is_global_zero:
            return None
    train_seconds, updates_done = float(module.train_seconds), int(module.updates)

    best_path = run_dir / "checkpoints" / "best.ckpt"
    best_epoch = None
    if best_path.is_file():  # the published weights: the best validation epoch, not the last
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(best_state)
        best_epoch = {"path": str(best_path.relative_to(run_dir)), "updates": int(module.updates),
                      "val_auc": _best_score(run_dir, int(module.updates))}
    tracker = module.tracker.cpu().eval()
    results = evaluate_test(tracker, data, test_features)
    predictions = results.pop("_predictions")
    results["train_seconds"] = train_seconds
    results["updates_done"] = updates_done
    results["best_epoch"] = best_epoch
    results["validation_videos"] = [track.name for track in data.validation]
    write_run_dir(args, argv, run_dir, tracker, results, data, root, trainer.world_size, total_updates)
    write_tracker_results(predictions, run_dir / "otb_results")
    print(format_summary(results))
    print(per_sequence_table(results))
    print(f"success AUC {results['success_auc']:.4f} (repeating the first box: "
          f"{results['baseline_repeat_first_box']['success_auc']:.4f})  precision@20 {results['precision_20']:.4f}  "
          f"(run directory {run_dir})")
    return results


def _best_score(run_dir: Path, updates: int) -> float | None:
    """The validation AUC logged at `updates` (from the run's CSV log), for the record."""
    for log in sorted((run_dir / "logs").glob("version_*/metrics.csv"), reverse=True):
        with open(log) as handle:
            for row in csv.DictReader(handle):
                if row.get("val/auc") and row.get("val/updates") and int(float(row["val/updates"])) == updates:
                    return float(row["val/auc"])
    return None


def evaluate_test(tracker: DRLTTracker, data: Data, features: dict[str, torch.Tensor]) -> dict:
    """OTB scores of the test sequences beside repeating the first box; in the paper protocol also split into the
    fitted leading frames and the unseen rest (each part scored on its own frames, with the same predictions)."""
    predictions = {seq.name: tracker.track_features(features[seq.name], seq.boxes[0], seq.image_size)
                   for seq in data.test}
    truths = {seq.name: seq.boxes for seq in data.test}
    repeated = {seq.name: np.repeat(seq.boxes[:1], len(seq), axis=0) for seq in data.test}
    results = evaluate_sequences(predictions, truths)
    results["protocol"] = data.description
    baseline = evaluate_sequences(repeated, truths)
    results["baseline_repeat_first_box"] = {key: baseline[key] for key in ("success_auc", "precision_20")}
    for name, scores in results["per_sequence"].items():
        scores["baseline_success_auc"] = baseline["per_sequence"][name]["success_auc"]
        scores["baseline_precision_20"] = baseline["per_sequence"][name]["precision_20"]
    if data.fitted_frames:
        for part, cut in (("fitted", lambda n, x: x[:n]), ("unseen", lambda n, x: x[n:])):
            part_results = evaluate_sequences(
                {name: cut(data.fitted_frames[name], boxes) for name, boxes in predictions.items()},
                {name: cut(data.fitted_frames[name], boxes) for name, boxes in truths.items()})
            part_baseline = evaluate_sequences(
                {name: cut(data.fitted_frames[name], boxes) for name, boxes in repeated.items()},
                {name: cut(data.fitted_frames[name], boxes) for name, boxes in truths.items()})
            results[f"{part}_frames"] = {"success_auc": part_results["success_auc"],
                                         "precision_20": part_results["precision_20"],
                                         "baseline_success_auc": part_baseline["success_auc"]}
    results["first_box_sensitivity"] = first_box_sensitivity(tracker, data.test, features, predictions)
    results["_predictions"] = predictions
    return results


def first_box_sensitivity(tracker: DRLTTracker, sequences, features: dict[str, torch.Tensor],
                          predictions: dict[str, np.ndarray], shift_fraction: float = 0.2) -> dict:
    """How far the predictions move when s_1 moves: the first box shifted sideways by `shift_fraction` of the frame
    width (right where it fits, else left), the mean distance in pixels between the two runs' box centres over
    frames 2 onwards (OTB's centre error between the two runs). A tracker that ignores s_1 scores ~0."""
    per_sequence = {}
    for seq in sequences:
        box = np.asarray(seq.boxes[0], dtype=np.float64).copy()
        shift = shift_fraction * seq.image_size[1]
        box[0] += shift if box[0] - 1 + box[2] + shift <= seq.image_size[1] else -shift
        moved = tracker.track_features(features[seq.name], box, seq.image_size)
        original = predictions[seq.name]
        per_sequence[seq.name] = float(center_error(moved[1:], original[1:]).mean()) if len(original) > 1 else 0.0
    return {"shift_fraction_of_width": shift_fraction, "per_sequence_px": per_sequence,
            "mean_centre_shift_px": float(np.mean(list(per_sequence.values())))}


def per_sequence_table(results: dict) -> str:
    lines = ["| sequence | success AUC | repeat first box | precision@20 | repeat first box |", "|---|---|---|---|---|"]
    for name, scores in results["per_sequence"].items():
        lines.append(f"| {name} | {scores['success_auc']:.3f} | {scores['baseline_success_auc']:.3f} | "
                     f"{scores['precision_20']:.3f} | {scores['baseline_precision_20']:.3f} |")
    baseline = results["baseline_repeat_first_box"]
    lines.append(f"| **mean** | **{results['success_auc']:.3f}** | {baseline['success_auc']:.3f} | "
                 f"**{results['precision_20']:.3f}** | {baseline['precision_20']:.3f} |")
    better = sum(scores["success_auc"] > scores["baseline_success_auc"] for scores in results["per_sequence"].values())
    lines.append(f"\nSuccess AUC above repeating the first box on {better} of {len(results['per_sequence'])} "
                 "sequences.")
    return "\n".join(lines)


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


def write_run_dir(args, argv, run_dir: Path, tracker, results: dict, data: Data, root: Path, world: int,
                  total_updates: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tracker.save_pretrained(run_dir / "model")
    plot_otb(results, run_dir, label=args.name)
    write_per_sequence_csv(results, run_dir / "per_sequence.csv")
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2))

    source = f"synthetic OTB data (datamodules.synthetic_otb, seed {args.seed})" if args.data_dir is None \
        else f"OTB sequences under {display_path(root)}"
    tested = _describe([(seq, len(seq)) for seq in data.test])
    paper = args.protocol == "paper"
    split = "whole sequences (training frames included)" if paper else "never trained on or used for model selection"
    dataset = "OTB (synthetic, embedded)" if args.data_dir is None else f"OTB ({len(data.test)} real sequences)"
    rows = [_result_row(dataset, split, f"{source}: {tested}, one-pass evaluation", results)]
    if paper:
        for part, words in (("unseen", "frames after the trained first third"), ("fitted", "the trained first third")):
            rows.append(_result_row(dataset, f"{words} only", f"{source}: {words}", results[f"{part}_frames"]))
    baseline = results["baseline_repeat_first_box"]
    best = results.get("best_epoch")
    notes = [
        f"For scale, on the same frames and with the same evaluator, repeating the first box scores success AUC "
        f"{baseline['success_auc']:.3f} and precision@20 {baseline['precision_20']:.3f} (per sequence in the table "
        "above).",
        "It follows the first box: shifting s_1 sideways by {:.0%} of the frame width moves its predicted centres on "
        "frames 2 onwards by {:.0f} px on average over the test sequences (per sequence in metrics.json, "
        "first_box_sensitivity).".format(results["first_box_sensitivity"]["shift_fraction_of_width"],
                                         results["first_box_sensitivity"]["mean_centre_shift_px"]),
        f"Backbone: timm {args.backbone} ({tracker.backbone_weights}, frozen) instead of the paper's YOLO fine-tuned "
        f"on PASCAL VOC; stage {args.feature_stage} feature maps at {args.input_size}x{args.input_size}.",
        f"Observation '{args.observation}'" + (
            ": the paper's [i_t, s_t] plus the first box's appearance matched against every frame (similarity map, "
            "soft-argmax inside a window around the previous estimate, the previous estimate and the first box), "
            "because ImageNet features, unlike the paper's VOC-trained YOLO, do not say which object is the target; "
            "see zoo.drlt.networks." if args.observation == "template" else ": the paper's [i_t, s_t].") +
        f" Location inputs scaled by {args.location_scale:g}; "
        + (f"whole-frame features pooled to {args.grid_size}x{args.grid_size}." if args.grid_size else
           "no whole-frame features i_t (--grid-size 0): beside them the template inputs drowned in REINFORCE's noisy "
           "gradient and the tracker never moved from the first box.")
        + (f" Output: mu_t = mu_(t-1) + {args.residual_scale:g} x the last four hidden units (residual; the paper "
           "reads the box from them directly), so an untrained tracker repeats the first box." if args.output ==
           "residual" else " Output: mu_t = the last four hidden units, as in the paper."),
        f"Training data: {data.trained_on} (multi-object videos, still images filmed by a virtual camera over "
        f"{args.camera_frames} frames; a random target, start frame, direction and mirror per episode of up to "
        f"{args.episode_length or 'all'} frames) instead of the first third of each test sequence." if not paper
        else f"Training data: {data.trained_on}, including the first third of each test sequence (paper protocol).",
        f"T curriculum {args.steps_per_chunk} (T:fraction of updates; paper: T = 10), {args.slots} episodes per "
        f"update, N = {args.episodes}, sigma = {args.sigma:g}.",
        f"Adam learning rate {args.lr_start:g} -> {args.lr_end:g} over at most {total_updates} updates (paper: 1e-5 -> "
        "1e-6 over 500 epochs); reward Eq. 2 for the first "
        f"{args.eq2_fraction:.0%} of the updates, then Eq. 3 (paper: 300 of 500 epochs).",
        f"Model selection: validation success AUC on {len(data.validation)} whole videos disjoint from training and "
        f"test, every {args.validate_every} updates; the best "
        + (f"(after {best['updates']} of {results['updates_done']} updates, validation AUC "
           f"{best['val_auc']:.3f}) " if best and best["val_auc"] is not None else "")
        + f"is published; training stops after {args.patience} validations without improvement, counted from update "
        f"{round(patience_from(args) * total_updates)} (the start of the schedule's last phase by "
        "default; the paper stops when the reward stops increasing).",
        f"Hidden size {args.hidden_size} for the FC layer and the LSTM (paper: 5000), so the weights fit 20 MB.",
        "Boxes are clamped to [0, 1] (mu is the last four LSTM hidden units, in (-1, 1)); frame 1's output is the "
        "given box, as OTB's one-pass evaluation expects.",
    ]
    summary = {
        "model": args.name, "method": "drlt", "paper": PAPER, "paper_url": PAPER_URL, "benchmark": "OTB",
        "command": "python -m recipes.drlt_otb " + shlex.join(a for a in argv if a != "--restart"),
        "hardware": hardware_description(args) + (f" x {world} processes" if world > 1 else ""),
        "train_seconds": round(results["train_seconds"]),
        "trained_on": data.trained_on + (f"; validated on {data.validated_on}" if data.validated_on else ""),
        "per_sequence_table": per_sequence_table(results),
        "paper_protocol_section": paper_protocol_section(args.paper_protocol_run),
        "results": rows,
        "paper_results": PAPER_RESULTS,
        "notes": notes,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))


def paper_protocol_section(run_dir: Path | None) -> str:
    """Markdown for the card: the recorded results of a separate --protocol paper run (training frames included),
    with its fitted first third and unseen rest apart, or a line saying none was recorded."""
    title = "## The paper's protocol (training frames included; a separate run)\n\n"
    if run_dir is None:
        return title + "Not recorded for this run (`--paper-protocol-run` names a `--protocol paper` run directory)."
    path = run_dir / "results.json"
    if not path.is_file():
        raise SystemExit(f"--paper-protocol-run {run_dir}: no results.json there; run the recipe with --protocol paper "
                         f"--run-dir {run_dir} first")
    paper_run = json.loads(path.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "fitted_frames" not in metrics:
        raise SystemExit(f"--paper-protocol-run {run_dir} was not a --protocol paper run")
    rows = ["| frames scored | success AUC | repeat first box | precision@20 |", "|---|---|---|---|"]
    for label, scores in (("whole sequences (first third trained on)", {**metrics, "baseline_success_auc": metrics[
            "baseline_repeat_first_box"]["success_auc"]}), ("first third only (fitted)", metrics["fitted_frames"]),
            ("the rest only (unseen frames of trained-on videos)", metrics["unseen_frames"])):
        rows.append(f"| {label} | {scores['success_auc']:.3f} | {scores['baseline_success_auc']:.3f} | "
                    f"{scores['precision_20']:.3f} |")
    return (title + "The paper trains on the first third of every test sequence and tests on the whole of it. A "
            "model trained that way (same recipe, `" + paper_run["command"] + "`) scores as below; these numbers "
            "include frames it was trained on and are not comparable with the table above.\n\n" + "\n".join(rows)
            + "\n\nPer sequence:\n\n" + paper_run["per_sequence_table"])


def display_path(path: Path) -> str:
    """The data folder as a reader elsewhere would write it: ../shared/... rather than this machine's path."""
    text = str(path)
    marker = f"{os.sep}shared{os.sep}"
    return "../shared/" + text.split(marker, 1)[1] if marker in text else text


def _result_row(dataset: str, split: str, data: str, scores: dict) -> dict:
    return {"task_type": "visual-object-tracking", "task_name": "Visual object tracking (OPE)",
            "dataset_name": dataset, "dataset_type": "otb", "dataset_split": split, "data": data,
            "metrics": [{"type": "success_auc", "name": "Success AUC", "value": scores["success_auc"]},
                        {"type": "precision_20", "name": "Precision@20px", "value": scores["precision_20"]}]}


if __name__ == "__main__":
    main()
