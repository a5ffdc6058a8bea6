"""Train FTMU's template-update agent (actor-critic, and Table 2's supervised variant) and measure Table 2 on DAVIS.

    python -m recipes.ftmu_davis                           # embedded synthetic DAVIS 2017 videos, minutes on 2 CPU cores
    python -m recipes.ftmu_davis --data-dir DAVIS          # real DAVIS 2017: train on train, evaluate on val
    python -m recipes.ftmu_davis --data-dir ../shared/realdata/DAVIS2016 --year 2016 --synthetic-train 12 \\
        --updates 400 --run-dir runs/ftmu-davis            # the published weights' run (real + synthetic)

The run directory gets model/ (the inference model: frozen encoder + actor, float16), checkpoints/train-<mode>/
(re-running the command resumes; `--restart` starts over), results/<row>/<seq>/<frame>.png (DAVIS layout, one folder
per Table 2 row) with the official global_results / per-sequence CSVs, table2.md, per_sequence.csv, actions.png
(frames with template boxes and actions), metrics.json, results.json and logs/.

Candidates come from the zoo's instance segmenter (`segmenter-vos`, standing in for YOLACT) and are cached on disk
(``--cache-dir``), keyed by frame and search region; states from the frozen ImageNet EfficientNet-Lite0.
The agent used for evaluation is the last one trained: nothing is selected on the evaluation sequences.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.davis import DAVIS
from datamodules.synthetic_vos import synthetic_root
from recipes._ftmu_common import ROWS, plot_actions, score_rows, table_markdown
from recipes._progress import TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import EpochSeededSampler, RunDirectory, hardware, is_launcher
from zoo.evaluation.davis import write_official_csvs
from zoo.ftmu.env import FTMUConfig, Tracker
from zoo.ftmu.model import FTMUSegmenter, ProposalCandidates, WholeFrameCandidates, proposal_generator
from zoo.ftmu.module import ClipEnvironment, FTMUModule
from zoo.ftmu.networks import FeatureStates

PAPER = "Fast Template Matching and Update for Video Object Tracking and Segmentation (Sun et al., CVPR 2020)"
PAPER_URL = "https://arxiv.org/abs/2004.07538"
# The paper's Table 2 (DAVIS 2017 val, Jm in %), quoted as the paper's, never as a measurement here.
PAPER_TABLE2_JM = {"no-update": 27.3, "iou-update": 63.1, "appearance-update": 67.2, "rl-no-redetection": 68.1,
                   "full": 69.1, "supervised": 60.2}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.ftmu_davis", description=__doc__.splitlines()[0])
    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", type=Path, default=None, help="DAVIS root (default: embedded synthetic videos)")
    data.add_argument("--year", type=int, default=2017, choices=(2016, 2017))
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="val")
    data.add_argument("--eval-sequences", nargs="*", default=None, help="evaluate only these sequences")
    data.add_argument("--synthetic-train", type=int, default=None,
                      help="synthetic training videos (default: 8 without --data-dir, 0 with it)")
    data.add_argument("--synthetic-val", type=int, default=3, help="synthetic evaluation videos (no --data-dir)")
    data.add_argument("--synthetic-frames", type=int, default=24)
    data.add_argument("--synthetic-size", type=int, nargs=2, default=(144, 192), metavar=("H", "W"))
    train = parser.add_argument_group("training (paper values unless said)")
    train.add_argument("--updates", type=int, default=60, help="actor-critic updates (batches of clips)")
    train.add_argument("--supervised-updates", type=int, default=None, help="default: --updates")
    train.add_argument("--clips-per-batch", type=int, default=20)
    train.add_argument("--clip-length", type=int, default=10)
    train.add_argument("--actor-lr", type=float, default=1e-4)
    train.add_argument("--critic-lr", type=float, default=5e-4)
    train.add_argument("--lr-decay", type=float, default=0.99)
    train.add_argument("--decay-every", type=int, default=200)
    train.add_argument("--gamma", type=float, default=0.9)
    train.add_argument("--value-scale", type=float, default=100.0,
                       help="critic output scale (not in the paper; see zoo.ftmu.networks.Critic)")
    train.add_argument("--reward-on", choices=("prediction", "final"), default="prediction",
                       help="J_t of Eq. 7 on the preliminary result P (the paper) or on the mask output after the "
                            "action (not the paper's; see zoo.ftmu.module.decision_jaccard)")
    train.add_argument("--hidden", type=int, nargs="+", default=(2048, 512))
    train.add_argument("--seed", type=int, default=0)
    tracker = parser.add_argument_group("tracker (Sec. 3.4, 4.2)")
    for name, value in FTMUConfig().__dict__.items():
        if name in ("redetection", "matching"):
            continue
        tracker.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    tracker.add_argument("--proposal-model", default="segmenter-vos")
    tracker.add_argument("--box-score-thresh", type=float, default=0.1)
    tracker.add_argument("--detections-per-img", type=int, default=10)
    tracker.add_argument("--training-candidates", choices=("frame", "region"), default="frame",
                         help="frame: in training, segment each frame once and keep the candidates overlapping the "
                              "search region (CPU shortcut); region: segment the search region as the paper does. "
                              "Evaluation always segments the search region")
    tracker.add_argument("--state-view", choices=("frame", "box"), default="frame",
                         help="frame: S_T / S_P are whole blacked-out frames (the paper); box: cropped around their "
                              "boxes (not the paper's; see zoo.ftmu.networks.FeatureStates)")
    tracker.add_argument("--random-backbone", action="store_true", help="random encoder (never a silent fallback)")
    run = parser.add_argument_group("run")
    run.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS), help="Table 2 rows to measure")
    run.add_argument("--run-dir", type=Path, default=Path("runs/ftmu-davis-embedded"))
    run.add_argument("--cache-dir", type=Path, default=None, help="candidate cache (default RUN_DIR/cache)")
    run.add_argument("--restart", action="store_true")
    run.add_argument("--threads", type=int, default=None)
    run.add_argument("--accelerator", default="cpu")
    run.add_argument("--devices", default="1")
    run.add_argument("--strategy", default="auto")
    return parser


def tracker_config(args) -> FTMUConfig:
    names = [name for name in FTMUConfig().__dict__ if name not in ("redetection", "matching")]
    return FTMUConfig(**{name: getattr(args, name) for name in names})


def load_data(args) -> tuple[list, list, str, str]:
    """(training sequences, evaluation sequences, what they are, trained_on)."""
    synthetic_train = args.synthetic_train if args.synthetic_train is not None else (0 if args.data_dir else 8)
    train, evaluation = [], []
    if args.data_dir is not None:
        train += list(DAVIS(args.data_dir, year=args.year, split=args.train_split))
        evaluation += list(DAVIS(args.data_dir, year=args.year, split=args.eval_split,
                                 sequences=args.eval_sequences))
        described = f"DAVIS {args.year} {args.eval_split} at {args.data_dir}"
        trained_on = f"DAVIS {args.year} {args.train_split} at {args.data_dir} ({len(train)} videos)"
    if synthetic_train or args.data_dir is None:
        height, width = args.synthetic_size
        root = synthetic_root("davis2017", num_train=synthetic_train, num_val=args.synthetic_val,
                              num_frames=args.synthetic_frames, height=height, width=width, seed=args.seed)
        train += list(DAVIS(root, year=2017, split="train"))
        if args.data_dir is None:
            evaluation += list(DAVIS(root, year=2017, split="val", sequences=args.eval_sequences))
            described = f"synthetic DAVIS 2017 val ({len(evaluation)} videos, {height}x{width})"
            trained_on = f"synthetic DAVIS 2017 train ({synthetic_train} videos, {height}x{width})"
        else:
            trained_on += f" + {synthetic_train} synthetic DAVIS-layout videos ({height}x{width})"
    overlap = {s.name for s in train} & {s.name for s in evaluation}
    if overlap:
        raise ValueError(f"sequences {sorted(overlap)} are in both the training and the evaluation split")
    return train, evaluation, described, trained_on


def train_agent(mode: str, updates: int, args, environment: ClipEnvironment, state_dim: int,
                run: RunDirectory) -> FTMUModule:
    module = FTMUModule(state_dim=state_dim, hidden=tuple(args.hidden), mode=mode, actor_lr=args.actor_lr,
                        critic_lr=args.critic_lr, lr_decay=args.lr_decay, decay_every=args.decay_every,
                        gamma=args.gamma, value_scale=args.value_scale, reward_on=args.reward_on, seed=args.seed)
    module.environment = environment
    clips = environment.clips()
    if not clips:
        raise ValueError(f"no training clip of {args.clip_length + 1} annotated frames with a visible object")
    loader = torch.utils.data.DataLoader(clips, batch_size=args.clips_per_batch, collate_fn=list,
                                         sampler=EpochSeededSampler(len(clips), args.seed))
    identity = {"hparams": dict(module.hparams), "tracker": environment.tracker.config.__dict__,
                "clips_per_batch": args.clips_per_batch, "clip_length": args.clip_length,
                "train": sorted(s.name for s in environment.sequences), "encoder": args.random_backbone,
                "training_candidates": args.training_candidates,
                **({"state_view": args.state_view} if args.state_view != "frame" else {})}
    stage = f"train-{mode}"
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=int(args.devices) if args.devices.isdigit() else args.devices,
        strategy=args.strategy, max_steps=2 * updates, max_epochs=-1,  # two optimisers: two steps per update
        logger=CSVLogger(args.run_dir, name="logs", version=mode), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0,
        callbacks=[run.checkpoint_callback(stage, identity=identity, every_n_epochs=10, every_minutes=5),
                   TrainingProgress(f"FTMU {mode} updates", "update", steps_per_batch=2)],
        plugins=[run.checkpoint_io()],
    )
    with expected_warnings("The number of training batches", "does not have many workers"):
        trainer.fit(module, loader, ckpt_path=run.resume_checkpoint(stage, identity=identity))
    return module.cpu().eval()


def write_outputs(args, argv, measured: dict, described: str, trained_on: str, sequences, model: FTMUSegmenter,
                  train_seconds: dict) -> dict:
    run_dir = args.run_dir
    for slug, row in measured.items():
        write_official_csvs(row["summary"], run_dir / "results" / slug, args.eval_split)
    table = table_markdown(measured, PAPER_TABLE2_JM)
    (run_dir / "table2.md").write_text(table + "\n")
    with open(run_dir / "per_sequence.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["row", "sequence", "objects", "frames", "J&F-Mean", "J-Mean", "F-Mean", "replace_rate",
                         "redetections"])
        for slug, row in measured.items():
            for name, scores in row["per_sequence"].items():
                writer.writerow([slug, name, scores["objects"], scores["frames"], f"{scores['J&F-Mean']:.4f}",
                                 f"{scores['J-Mean']:.4f}", f"{scores['F-Mean']:.4f}", scores["replace_rate"],
                                 scores["redetections"]])
    shown = "full" if "full" in measured else next(iter(measured))
    sequence = max(sequences, key=lambda s: len(s.object_ids))
    plot_actions(sequence, measured[shown]["episodes"][sequence.name], run_dir / "actions.png")
    synthetic = args.data_dir is None
    metrics = {
        slug: {key: value for key, value in row.items() if key != "episodes"} for slug, row in measured.items()
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    command = "python -m recipes.ftmu_davis " + shlex.join(argv)
    results = [
        {
            "task_type": "video-object-segmentation",
            "task_name": f"Box-initialised VOS, Table 2 row: {row['title']}",
            "dataset_name": described,
            "dataset_type": "davis",
            "dataset_split": f"{args.eval_split}, never trained on or used for model selection",
            "data": ", ".join(f"{s.name} ({len(s)} frames, {len(s.object_ids)} objects)" for s in sequences),
            "metrics": [
                {"type": "j_and_f", "name": "J&F-Mean", "value": row["summary"]["J&F-Mean"]},
                {"type": "j_mean", "name": "J-Mean", "value": row["summary"]["J-Mean"]},
                {"type": "f_mean", "name": "F-Mean", "value": row["summary"]["F-Mean"]},
            ],
        }
        for slug, row in measured.items()
        if slug == "full" or "full" not in measured  # the model's own row; the baselines are in the card's tables
    ]
    titles = {slug: row["title"] for slug, row in measured.items()}
    per_sequence_table = "\n".join(
        ["| sequence (objects, frames) | " + " | ".join(titles.values()) + " |",
         "|---|" + "---|" * len(titles)]
        + [f"| {s.name} ({len(s.object_ids)}, {len(s)}) | "
           + " | ".join(f"{measured[slug]['per_sequence'][s.name]['J&F-Mean']:.3f}" for slug in titles) + " |"
           for s in sequences]
    )
    summary = {
        "finding": finding(measured),
        "model": "ftmu-davis", "method": "ftmu", "paper": PAPER, "paper_url": PAPER_URL,
        "benchmark": f"DAVIS {args.year if args.data_dir else '2017 (synthetic)'} box-initialised",
        "command": command, "hardware": hardware(args.accelerator), "synthetic": synthetic,
        "trained_on": trained_on, "train_seconds": train_seconds, "table2": table,
        "per_sequence_table": per_sequence_table,
        "backbone_weights": model.backbone_weights, "results": results,
        "paper_results": [{"dataset_name": "DAVIS 2017 val (paper, Table 2, Jm %)",
                           "metrics": [{"type": f"jm_{slug}", "value": value}
                                       for slug, value in PAPER_TABLE2_JM.items()]}],
        "notes": notes(args, model),
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def finding(measured: dict) -> str:
    """One sentence, from the measurements, on what the trained agent did against the fixed update rules."""
    if "full" not in measured:
        return ""
    decisions = [d.action for row in ("full",) for e in measured[row]["episodes"].values() for d in e.decisions]
    replaced = float(np.mean([a == 0 for a in decisions])) if decisions else float("nan")
    score = lambda slug: measured[slug]["summary"]["J&F-Mean"]  # noqa: E731
    sentence = (f"The trained agent (re-detection on) replaced the template at {replaced:.0%} of its "
                f"{len(decisions)} decisions on these sequences; its J&F is {score('full'):.3f}")
    comparisons = [f"{measured[slug]['title']} {score(slug):.3f}" for slug in ("iou-update", "no-update",
                                                                            "appearance-update") if slug in measured]
    return sentence + (" (" + ", ".join(comparisons) + ")." if comparisons else ".")


def notes(args, model: FTMUSegmenter) -> list[str]:
    config = model.settings
    return [
        f"Segmenter: the zoo's class-agnostic Mask R-CNN ('{args.proposal_model}', at most "
        f"{args.detections_per_img} candidates of score >= {args.box_score_thresh}) instead of YOLACT trained on "
        "PASCAL VOC; candidates cached per frame and search region.",
        f"State encoder: frozen ImageNet EfficientNet-Lite0 ({model.backbone_weights}), pooled to 1280 per image, "
        "so s_t has 2560 dimensions (the paper: ResNet-50, 2 x 2048); actor and critic heads as the authors' code "
        f"with hidden sizes {list(args.hidden)}.",
        "Re-detection embedding (Eq. 3): the same frozen ImageNet features of the box patches, L2-normalised, not "
        "trained further (the paper trains a Siamese network on data it does not name).",
        f"Search-region ratios big / intermediate / small = {config.big_ratio} / {config.intermediate_ratio} / "
        f"{config.small_ratio}, motion threshold {config.motion_threshold} of the box diagonal: one setting for "
        "every sequence (the authors' code sets ratios per DAVIS val sequence).",
        {"prediction": "Reward Eq. 7 on J of the preliminary result P_mask, as the paper's text defines it.",
         "final": "Reward Eq. 7 on J of the mask output after the action (P_mask on a0, the kept template's mask on "
                  "a1), not the paper's P_mask: the action's effect shows in its own reward."}[args.reward_on],
        f"Training: {args.updates} actor-critic updates of {args.clips_per_batch} clips of {args.clip_length} "
        f"decisions each, Adam at {args.actor_lr:g} (actor) / {args.critic_lr:g} (critic) decaying by "
        f"{1 - args.lr_decay:.0%} every {args.decay_every} updates, gamma {args.gamma} (the paper: 1e-4 / 5e-4; at "
        "the paper's rates the 2560-input actor's sampled policy turned deterministic within the first few dozen "
        "updates in this port's embedded runs; the authors' code uses 1e-6 / 5e-6).",
        f"Critic output scaled by {args.value_scale} (a reparameterisation, not in the paper) so that Adam reaches "
        "Eq. 7's return range; the clip's last decision is terminal.",
        "Evaluation: arg-max actions, the last agent trained (the authors' code samples actions at validation and "
        "keeps the best validation epoch).",
        "'RL update w/o re-detection' is the same trained agent run with re-detection off.",
        {"frame": "State images S_T / S_P: the whole blacked-out frames, resized to 224 x 224 (Eq. 4-6).",
         "box": "State images S_T / S_P cropped around T_box / P_box with half a box of context before the encoder "
                "(not the paper's whole frames; close to the authors' code's ROI crops)."}[args.state_view],
        {"frame": "Training candidates: each training frame segmented once as a whole, the search region keeping "
                  "the candidates that overlap it (a CPU shortcut); evaluation segments the search region.",
         "region": "Training and evaluation segment the search region, as the paper does."}[args.training_candidates],
    ]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.supervised_updates is None:
        args.supervised_updates = args.updates
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    try:
        train_sequences, eval_sequences, described, trained_on = load_data(args)
    except (FileNotFoundError, ValueError) as error:
        build_parser().error(f"{error} (--data-dir takes a DAVIS root: JPEGImages/480p/, Annotations/480p/, "
                             "ImageSets/; leave it out for the embedded synthetic videos)")
    print(f"{len(train_sequences)} training videos; evaluating on {described}")
    model = FTMUSegmenter(hidden=tuple(args.hidden), tracker=tracker_config(args).__dict__,
                          proposal_model=args.proposal_model, box_score_thresh=args.box_score_thresh,
                          detections_per_img=args.detections_per_img, pretrained_backbone=not args.random_backbone,
                          state_view=args.state_view, seed=args.seed)
    model.half().float()  # the frozen encoder exactly as it is published (float16), for training and evaluation
    cache_dir = args.cache_dir or args.run_dir / "cache"
    generator = proposal_generator(args.proposal_model, args.box_score_thresh, args.detections_per_img, cache_dir)
    candidates = ProposalCandidates(generator)
    states = FeatureStates(model.encoder, view=args.state_view)

    training_candidates = WholeFrameCandidates(candidates) if args.training_candidates == "frame" else candidates

    def make_tracker(overrides: dict, source=candidates) -> Tracker:
        return Tracker(FTMUConfig(**{**model.settings.__dict__, **overrides}), source, states)

    needed = {ROWS[slug].decider for slug in args.rows} & {"rl", "supervised"}
    actors, train_seconds = {}, {}
    with RunDirectory(args.run_dir, restart=args.restart, command=["python", "-m", "recipes.ftmu_davis", *argv]) as run:
        for mode in ("rl", "supervised"):
            if mode not in needed and mode != "rl":
                continue
            environment = ClipEnvironment(train_sequences, make_tracker({}, training_candidates), args.clip_length)
            started = time.perf_counter()
            updates = args.updates if mode == "rl" else args.supervised_updates
            module = train_agent(mode, updates, args, environment, states.state_dim, run)
            train_seconds[mode] = time.perf_counter() - started
            actors[mode] = module.actor.half().float()  # evaluated exactly as published (float16)
    if not is_launcher():  # other DDP processes only help training
        sys.exit(0)
    model.actor.load_state_dict(actors["rl"].state_dict())
    model.half().save_pretrained(args.run_dir / "model")
    model.float()
    rows = [ROWS[slug] for slug in args.rows]
    with progress(total=len(rows) * len(eval_sequences), desc="Table 2 rows x sequences", unit="seq") as bar:
        measured = score_rows(args.run_dir / "results", rows, eval_sequences,
                              lambda row: make_tracker(row.overrides), actors, bar)
    summary = write_outputs(args, argv, measured, described, trained_on, eval_sequences, model, train_seconds)
    print(summary["table2"])
    print(f"segmenter calls {generator.model_calls}, encoded images {states.encoded}; run directory {args.run_dir}")
    return summary


if __name__ == "__main__":
    main()
