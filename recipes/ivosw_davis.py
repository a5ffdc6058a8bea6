"""IVOS-W on DAVIS: learn which frame the user should annotate next in interactive VOS (double DQN over an interactive
engine and the scribble robot), train the Wild setting's quality network, then Table 1 for every engine × setting.

    python -m recipes.ivosw_davis                                   # embedded synthetic DAVIS 2017 videos, CPU minutes
    python -m recipes.ivosw_davis --data-dir DAVIS2017              # real DAVIS 2017: train on train, evaluate on val
    python -m recipes.ivosw_davis --stage evaluate --model ivosw-davis --data-dir DAVIS2017 --json out.json
    python -m recipes.ivosw_davis --stage evaluate --benchmark youtube-vos --model RUN_DIR/model \
        --data-dir YouTubeVOS2018 --json ytvos.json                 # the paper's 50-sequence YouTube-VOS protocol

Stages (each resumable: a re-run continues or reuses what RUN_DIR holds; `--restart` starts over):
1. prefill: μ̂, σ̂ of the random policy (`--random-runs` per training video and round) and the replay buffer
   filled by random episodes (`IVOSWAgentModule.collect_random_statistics` / `warm_buffer`), in checkpoints/prefill/;
2. agent: `IVOSWAgentModule` fit by a Lightning Trainer on `--window`-frame training windows (Oracle quality as the
   state, as the authors train), checkpoints/agent/;
3. quality (per engine): Worst-policy sessions on the training videos give (frame, one object's probability map, its
   J&F) samples; `QualityModule` fits them (checkpoints/quality-<engine>/); PCC and MSE on the same kind of samples of
   the held-out evaluation videos (Table 3);
4. evaluate: per engine × setting (oracle, wild), Ours, Random (5 runs), Linspace and Worst over `--rounds` rounds on
   every evaluation (sequence, scribble): the J&F-per-round curve, IVOS-W's AUC, the time AUC and J&F@60 s.

Writes to RUN_DIR: model/ (`IVOSWRecommender`: agent + quality network, `zoo.load`-able), evaluation/<engine>-<setting>
.json, table1.md, curves.png, per_sequence.csv, metrics.json, results.json, logs/.
`--stage evaluate --model NAME_OR_DIR` evaluates a saved agent without training and writes `--json`.
Engines: `recipes._ivosw_common.ENGINES`, both by default: "flow", the weight-free engine, and "matching", the learned
engine (`recipes.ivosw_engine_davis`; the bundled `ivosw-engine-davis` weights, or $ZOO_MATCHING_ENGINE); the agent is
trained with the first of `--engines` and evaluated, unchanged, with each.

`--benchmark youtube-vos` (only with `--stage evaluate`: the agent is trained on DAVIS and tested, unchanged, for
generalisation, as in the paper; `--stage all` with it is an error saying so) evaluates on the paper's YouTube-VOS
protocol: `--data-dir` is a YouTube-VOS 2018 release root read by `datamodules.youtube_vos.YouTubeVOS(root, "train",
2018)` (the authors take 50 sequences of the 2018 *train* split, whose annotations are dense on the sampled frames:
every 5th frame of the video, the frames JPEGImages holds); without `--data-dir`, a synthetic tree of that layout.
- Sequences: `--sequences` names them; otherwise `--num-sequences` (default 50, fewer if fewer exist) chosen by
  `youtube_vos_selection`: among the videos whose meta.json lists at least one annotated object, the ones with the
  smallest SHA-1 hex digest of their name, evaluated in name order. The rule depends on nothing but the names (not
  on `--seed`, numpy or Python versions), and a video keeps its place when others are added to the release.
- Round 1: the authors' re-annotation (3 scribbles per sequence) cannot be downloaded, so every sequence is one
  sample whose round 1 is the zoo's robot scribbling an empty prediction on the frame showing the most objects
  (`zoo.ivosw.session.first_frame_for_robot`): "<video>#robot" in the JSON; `--scribbles` has no effect.
- Ground truth (`youtube_vos_session_video`): every sampled frame's annotation (a frame without one, which no object
  of meta.json lists, is all background); objects are the ids of meta.json with pixels in the video, renumbered
  1..K in id order. An object entering after frame 0 is background in the ground truth before it enters, so a
  frame without it scores J = F = 1 for it when the engine predicts none of it there (davis-interactive's rule).
- `--max-side` (default 854, DAVIS 480p's width: 1280x720 becomes 854x480, the scale the agent and the quality
  network were trained at, and less than half the pixels; 0 keeps the native size) shrinks frames (area) and
  ground truth (nearest) so that the longer side is at most that.
The JSON names the benchmark, the selection rule and the chosen videos. Both functions are in
`recipes._ivosw_youtube_vos`.
"""

from __future__ import annotations

import argparse
import json
import os
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
from recipes import _ivosw_common as common
from recipes._ivosw_youtube_vos import YOUTUBE_VOS_MAX_SIDE, YOUTUBE_VOS_SEQUENCES, youtube_vos_videos
from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import EpochSeededSampler, RunDirectory, checkpoint_state, hardware
from zoo.hub import load_folder
from zoo.ivosw.env import TEST_ROUNDS, TRAIN_ROUNDS
from zoo.ivosw.model import IVOSWRecommender
from zoo.ivosw.module import GOAL_REWARDS, REWARDS, STATE_FEATURES, IVOSWAgentModule
from zoo.ivosw.quality import QualityDataset, QualityModule, pearson_and_mse
from zoo.ivosw.session import SETTINGS, InteractiveSession

PAPER = "Learning to Recommend Frame for Interactive Video Object Segmentation in the Wild (Yin et al., CVPR 2021)"
PAPER_URL = "https://arxiv.org/abs/2103.10391"
BENCHMARKS = ("davis", "youtube-vos")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.ivosw_davis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "evaluate"), default="all",
                        help="all: every stage; evaluate: only Table 1 of a saved agent (--model)")
    data = parser.add_argument_group("data")
    data.add_argument("--benchmark", choices=BENCHMARKS, default="davis",
                      help="youtube-vos: --stage evaluate only, on YouTube-VOS 2018 train (module docstring)")
    data.add_argument("--data-dir", type=Path, default=None, help="DAVIS root, or with --benchmark youtube-vos a "
                      "YouTube-VOS 2018 root (default: embedded synthetic videos)")
    data.add_argument("--year", type=int, default=2017, choices=(2016, 2017))
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="val")
    data.add_argument("--sequences", nargs="+", default=None, help="evaluate only these sequences")
    data.add_argument("--num-sequences", type=int, default=None,
                      help=f"youtube-vos: how many sequences `youtube_vos_selection` picks when --sequences is not "
                           f"given (default {YOUTUBE_VOS_SEQUENCES}, the paper's)")
    data.add_argument("--max-side", type=int, default=None,
                      help=f"youtube-vos: shrink frames and ground truth so the longer side is at most this (default "
                           f"{YOUTUBE_VOS_MAX_SIDE}; 0: native size)")
    data.add_argument("--scribbles", choices=("all", "first"), default="all",
                      help="every scribble file of a sequence is one sample, or only 001 (robot where none)")
    data.add_argument("--synthetic-train", type=int, default=6)
    data.add_argument("--synthetic-val", type=int, default=3)
    data.add_argument("--synthetic-frames", type=int, default=24)
    data.add_argument("--synthetic-size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    agent = parser.add_argument_group("agent")
    agent.add_argument("--engines", nargs="+", default=["flow", "matching"], choices=list(common.ENGINES),
                       help="interactive VOS engines; the agent trains with the first (matching: the learned engine, "
                            "the bundled ivosw-engine-davis, see recipes.ivosw_engine_davis)")
    agent.add_argument("--hidden", type=int, default=128)
    agent.add_argument("--head-hidden", type=int, default=128)
    agent.add_argument("--window", type=int, default=25, help="frames per training episode (the paper's N' = 25; "
                       "cut to the shortest training video)")
    agent.add_argument("--train-rounds", type=int, default=TRAIN_ROUNDS)
    agent.add_argument("--random-runs", type=int, default=30)
    agent.add_argument("--buffer", type=int, default=5760)
    agent.add_argument("--warmup-transitions", type=int, default=400)
    agent.add_argument("--agent-epochs", type=int, default=25, help="epochs of one episode per training video")
    agent.add_argument("--updates-per-episode", type=int, default=3 * TRAIN_ROUNDS - 1)
    agent.add_argument("--batch-size", type=int, default=32)
    agent.add_argument("--lr", type=float, default=1e-4, help="Adam lr (the paper: 5e-6 over ~12k updates)")
    agent.add_argument("--epsilon-steps", type=int, default=None,
                       help="decisions over which ε decays 0.7 -> 0.25 (default: the run's decisions; paper 5000)")
    agent.add_argument("--goal-reward", choices=GOAL_REWARDS, default="eq3")
    agent.add_argument("--rewards", choices=REWARDS, default="both")
    agent.add_argument("--state-features", choices=STATE_FEATURES, default="both")
    agent.add_argument("--no-decomposition", action="store_true", help="Table 7: no task decomposition")
    quality = parser.add_argument_group("quality network")
    quality.add_argument("--quality-rounds", type=int, default=TRAIN_ROUNDS)
    quality.add_argument("--quality-samples", type=int, default=1500, help="training samples kept (seeded subset)")
    quality.add_argument("--quality-heldout-samples", type=int, default=1000)
    quality.add_argument("--quality-epochs", type=int, default=4)
    quality.add_argument("--quality-size", type=int, default=None, help="crop side (default 256 = the paper with "
                         "--data-dir, 96 on the synthetic videos)")
    quality.add_argument("--quality-batch", type=int, default=16)
    quality.add_argument("--quality-lr", type=float, default=1e-3,
                         help="SGD lr (the paper: 5e-6 for 50 epochs; 3e-3 collapsed to one constant prediction on "
                              "the synthetic videos)")
    quality.add_argument("--quality-weight-decay", type=float, default=0.0, help="the paper: 5e-4")
    quality.add_argument("--quality-backbone", default="tf_efficientnet_lite0")
    quality.add_argument("--random-backbone", action="store_true", help="tests only: no ImageNet weights")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--rounds", type=int, default=TEST_ROUNDS)
    evaluation.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    evaluation.add_argument("--strategies", nargs="+", default=list(common.STRATEGIES), choices=common.STRATEGIES)
    evaluation.add_argument("--model", default=None, help="--stage evaluate: a zoo name or a model folder")
    evaluation.add_argument("--engine", default=None, choices=list(common.ENGINES),
                            help="--stage evaluate: the engine (default: the one the model was trained with)")
    evaluation.add_argument("--setting", default="wild", choices=SETTINGS, help="--stage evaluate: the setting")
    evaluation.add_argument("--json", type=Path, default=None, help="--stage evaluate: where to write the result")
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--accelerator", default="cpu")
    run.add_argument("--run-dir", type=Path, default=Path("runs/ivosw-davis-default"))
    run.add_argument("--cache-dir", type=Path, default=None, help="flow cache (default RUN_DIR/cache)")
    run.add_argument("--engines-in-memory", type=int, default=8,
                     help="live engines kept (each holds its video's flow); others reload it from the cache")
    run.add_argument("--restart", action="store_true", help="discard the run directory's checkpoints")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


# -- data ------------------------------------------------------------------------------------------------------------


def load_data(args, need_train: bool = True):
    """(training sequences, evaluation sequences, what they are). Raises FileNotFoundError / ValueError."""
    if args.data_dir is not None:
        evaluation = list(DAVIS(args.data_dir, args.year, args.eval_split, task="interactive",
                                sequences=args.sequences))
        train = list(DAVIS(args.data_dir, args.year, args.train_split, task="interactive")) if need_train else []
        described = f"DAVIS {args.year} {args.eval_split} ({args.data_dir})"
        trained_on = f"DAVIS {args.year} {args.train_split}: {', '.join(s.name for s in train)}"
    else:
        height, width = args.synthetic_size
        root = synthetic_root("davis2017", num_train=args.synthetic_train, num_val=args.synthetic_val,
                              num_frames=args.synthetic_frames, height=height, width=width, seed=args.seed)
        train = list(DAVIS(root, 2017, "train", task="interactive"))
        evaluation = list(DAVIS(root, 2017, "val", task="interactive", sequences=args.sequences))
        described = f"synthetic DAVIS 2017 val ({len(evaluation)} videos, {args.synthetic_frames} frames, " \
                    f"{height}x{width})"
        trained_on = (f"{len(train)} synthetic DAVIS 2017 train videos ({args.synthetic_frames} frames, "
                      f"{height}x{width})")
    overlap = {s.name for s in train} & {s.name for s in evaluation}
    if overlap:
        raise ValueError(f"sequences {sorted(overlap)} are in both the training and the evaluation split")
    if not evaluation:
        raise ValueError(f"no evaluation sequence in {args.data_dir or 'the synthetic tree'}")
    return train, evaluation, described, trained_on


class CountedVideo:
    """An `InteractiveVideo` that advances a progress bar per round (the module plays the random episodes itself)."""

    def __init__(self, session, bar=None):
        self.session, self.bar = session, bar
        self.key, self.num_frames = session.key, session.num_frames

    def _tick(self, played):
        if self.bar is not None:
            self.bar.update(1)
        return played

    def reset(self):
        return self._tick(self.session.reset())

    def annotate(self, frame):
        return self._tick(self.session.annotate(frame))


# -- stages 1-2: the agent --------------------------------------------------------------------------------------------


class StageSeconds(dict):
    """Seconds per stage, kept in RUN_DIR/seconds.json: a stage finished by an earlier invocation keeps its time, and
    a stage resumed from a checkpoint adds this invocation's time to the time recorded before (an invocation that
    was interrupted records nothing, so a stage finished over several invocations is undercounted)."""

    def __init__(self, path: Path):
        super().__init__(json.loads(path.read_text()) if path.is_file() else {})
        self.path = path

    def record(self, stage: str, since: float, resumed: bool = False) -> None:
        self.set(stage, (self.get(stage, 0.0) if resumed else 0.0) + time.perf_counter() - since)

    def set(self, stage: str, seconds: float | None) -> None:
        self[stage] = None if seconds is None else round(seconds, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self, indent=2))


def _save_atomically(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def prefill(module: IVOSWAgentModule, videos: list[CountedVideo], run: RunDirectory, identity: dict) -> dict:
    """Stage 1, stored in checkpoints/prefill/prefill.pt. Videos whose random-policy runs all score alike after some
    round are dropped (Eqs. 2-3 divide by σ̂; the authors drop sequences whose random gain is under 0.05)."""
    path = run.checkpoints / "prefill" / "prefill.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["identity"] != json.dumps(identity, sort_keys=True):
            raise SystemExit(f"{path} was written by a run with other settings; pass --restart or use another "
                             "--run-dir")
        module.statistics.load_state_dict(saved["statistics"])
        module.replay.load_state_dict(saved["replay"])
        print(f"{path}: random-policy statistics and buffer reused ({len(module.replay)} transitions)",
              file=sys.stderr)
        return {"dropped": saved["dropped"], "kept": [v for v in videos if repr(v.key) not in saved["dropped"]],
                "computed": False}
    rounds = module.hparams.rounds
    episodes = -(-module.hparams.warmup_transitions // (rounds - 1))
    total = (module.hparams.random_runs * len(videos) + episodes) * rounds
    dropped = []
    with progress(total=total, desc="random policy: statistics + buffer", unit="round") as bar:
        for video in videos:
            video.bar = bar
        module.videos = list(videos)
        while True:
            try:
                module.collect_random_statistics()
                break
            except ValueError as error:  # a video the random policy cannot change: drop it, keep the others
                bad = next(v for v in module.videos if any(module.statistics.mean_std((v.key, r))[1] <= 0
                                                           for r in range(2, rounds + 1)
                                                           if (v.key, r) in module.statistics))
                dropped.append(repr(bad.key))
                print(f"dropped {bad.key}: {error}", file=sys.stderr)
                module.videos = [v for v in module.videos if v is not bad]
                if not module.videos:
                    raise SystemExit("every training video was dropped: the random policy changes none of them")
        module.warm_buffer()
        for video in videos:
            video.bar = None
    _save_atomically({"identity": json.dumps(identity, sort_keys=True), "statistics": module.statistics.state_dict(),
                      "replay": module.replay.state_dict(), "dropped": dropped}, path)
    return {"dropped": dropped, "kept": module.videos, "computed": True}


def train_agent(args, windows, pool, run: RunDirectory, seconds: StageSeconds) -> IVOSWAgentModule:
    train_engine = args.engines[0]
    videos = [CountedVideo(InteractiveSession(video, pool.get(train_engine, video), "oracle",
                                              robot=common.quiet_robot())) for video in windows]
    decisions = (args.train_rounds - 1) * len(videos) * args.agent_epochs
    module = IVOSWAgentModule(
        hidden=args.hidden, head_hidden=args.head_hidden, rounds=args.train_rounds, lr=args.lr,
        batch_size=args.batch_size, buffer_capacity=args.buffer, warmup_transitions=args.warmup_transitions,
        updates_per_episode=args.updates_per_episode, epsilon_steps=args.epsilon_steps or max(decisions, 1),
        random_runs=args.random_runs, goal_reward=args.goal_reward, rewards=args.rewards,
        state_features=args.state_features, decomposition=not args.no_decomposition, seed=args.seed)
    identity = {"engine": train_engine, "videos": [repr(v.key) for v in videos], "window": windows[0].num_frames,
                "hparams": dict(module.hparams)}
    resume = run.resume_checkpoint("agent", identity=identity)
    if resume is not None and checkpoint_state(resume)["complete"]:
        return IVOSWAgentModule.load_from_checkpoint(resume, weights_only=True).eval()
    started = time.perf_counter()
    # also when resuming an interrupted fit: the file says which videos were dropped (the checkpoint then restores
    # the statistics and the buffer over what it loads)
    prefilled = prefill(module, videos, run, {k: v for k, v in identity.items() if k != "hparams"} |
                        {"runs": args.random_runs, "rounds": args.train_rounds, "buffer": args.buffer,
                         "warmup": args.warmup_transitions, "seed": args.seed})
    if prefilled["computed"]:
        seconds.record("prefill", started)
    module.videos = prefilled["kept"]
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=1, max_epochs=args.agent_epochs,
        logger=CSVLogger(args.run_dir, name="logs", version="agent"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0,
        callbacks=[run.checkpoint_callback("agent", identity=identity, every_n_epochs=5, every_minutes=5),
                   TrainingProgress("IVOS-W agent", "episode")],
        plugins=[run.checkpoint_io()])
    started = time.perf_counter()
    with expected_warnings("The number of training batches", "does not have many workers"):
        trainer.fit(module, ckpt_path=resume)
    seconds.record("agent", started, resumed=resume is not None)
    return module.cpu().eval()


# -- stage 3: the quality network --------------------------------------------------------------------------------------


def train_quality(args, engine: str, train_videos, heldout_videos, pool, run: RunDirectory, size: int,
                  min_side: float, seconds: StageSeconds, counts: dict) -> tuple[QualityModule, dict]:
    """The quality network of one engine and its Table 3 figures on the held-out videos (reused on a re-run)."""
    module = QualityModule(backbone=args.quality_backbone, random_backbone=args.random_backbone, input_size=size,
                           min_side=min_side, lr=args.quality_lr, weight_decay=args.quality_weight_decay,
                           seed=args.seed)
    stage = f"quality-{engine}"
    identity = {"engine": engine, "train": [common.sample_name(v) for v in train_videos],
                "heldout": [common.sample_name(v) for v in heldout_videos], "rounds": args.quality_rounds,
                "samples": [args.quality_samples, args.quality_heldout_samples], "batch": args.quality_batch,
                "hparams": dict(module.hparams)}
    resume = run.resume_checkpoint(stage, identity=identity)
    figures_path = args.run_dir / f"{stage}.json"
    if resume is not None and checkpoint_state(resume)["complete"] and figures_path.is_file():
        figures = json.loads(figures_path.read_text())
        if figures.get("identity") == json.dumps(identity, sort_keys=True, default=str):
            return QualityModule.load_from_checkpoint(resume, weights_only=True).eval(), figures["table3"]
    started = time.perf_counter()
    total = (len(train_videos) + len(heldout_videos)) * args.quality_rounds
    with progress(total=total, desc=f"quality data ({engine}, Worst policy)", unit="round") as bar:
        train, offered = common.worst_policy_samples(train_videos, pool, engine, args.quality_rounds,
                                                     args.quality_samples, args.seed, bar)
        heldout, heldout_offered = common.worst_policy_samples(heldout_videos, pool, engine, args.quality_rounds,
                                                               args.quality_heldout_samples, args.seed + 1, bar)
    seconds.record(f"{stage}-data", started)
    counts[f"{stage}-samples"] = {"train": len(train), "train_offered": offered, "heldout": len(heldout),
                                  "heldout_offered": heldout_offered}
    loader = torch.utils.data.DataLoader(QualityDataset(train, size=size, min_side=min_side),
                                         batch_size=args.quality_batch,
                                         sampler=EpochSeededSampler(len(train), args.seed))
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=1, max_epochs=args.quality_epochs,
        logger=CSVLogger(args.run_dir, name="logs", version=stage), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, num_sanity_val_steps=0,
        callbacks=[run.checkpoint_callback(stage, identity=identity, every_n_epochs=1, every_minutes=5),
                   TrainingProgress(f"quality network ({engine})", "batch")],
        plugins=[run.checkpoint_io()])
    started = time.perf_counter()
    with expected_warnings("The number of training batches", "does not have many workers",
                           "You defined a `validation_step`", FROZEN_MODULES):
        trainer.fit(module, loader, ckpt_path=resume)
    seconds.record(stage, started, resumed=resume is not None)
    module = module.cpu().eval()
    predictions = common.predict_quality(module.network, heldout)
    targets = np.array([s.quality for s in heldout])
    pcc, mse = pearson_and_mse(predictions, targets) if len(heldout) > 1 else (float("nan"), float("nan"))
    # None, not NaN, where undefined (constant predictions, or no held-out sample): NaN is not JSON
    table3 = {"pcc": pcc if np.isfinite(pcc) else None, "mse": mse if np.isfinite(mse) else None,
              "prediction_std": float(predictions.std()) if len(predictions) else None,
              "heldout_samples": len(heldout), "train_samples": len(train),
              "heldout_target_mean": float(targets.mean()) if len(targets) else None,
              "heldout_target_std": float(targets.std()) if len(targets) else None,
              "backbone_weights": module.backbone_weights}
    figures_path.write_text(json.dumps({"identity": json.dumps(identity, sort_keys=True, default=str),
                                        "table3": table3}, indent=2))
    return module, table3


# -- outputs ---------------------------------------------------------------------------------------------------------


def notes(args, dropped: list, window: int, quality_size: int, min_side: float) -> list[str]:
    return [
        f"Engines: {', '.join(args.engines)} (flow: the weight-free FlowPropagationEngine, watershed seeds from "
        "scribbles, DIS flow propagation, nearest-annotated-frame fusion; matching: the learned MatchingEngine of "
        "ivosw-engine-davis, a space-time-memory read on ImageNet Lite0 keys), not the paper's ATNet / MANet / IPN; "
        "the agent trained with the first and is evaluated unchanged with each.",
        f"Agent: {args.agent_epochs} epochs of one episode per training video ({window}-frame windows, "
        f"{args.train_rounds} rounds), Adam lr {args.lr} (the paper: 5e-6), ε decays over "
        f"{args.epsilon_steps or 'all the run’s'} decisions (the paper: 5000), buffer {args.buffer} pre-filled with "
        f"{args.warmup_transitions} random-policy transitions (the paper: the whole buffer), "
        f"{args.random_runs} random runs per video for μ̂, σ̂; hidden {args.hidden}/{args.head_hidden}; flags "
        f"goal={args.goal_reward}, rewards={args.rewards}, state={args.state_features}, "
        f"decomposition={'off' if args.no_decomposition else 'on'}.",
        f"Training videos dropped because every random-policy run scored alike: {', '.join(dropped) or 'none'}.",
        f"Quality network: {args.quality_backbone} "
        f"({'random weights: tests only' if args.random_backbone else 'ImageNet'}"
        f"; the paper: ResNet-50), {quality_size}x{quality_size} crops with min side {min_side:.1f} px (the paper's "
        f"128 px at 480p, scaled with the frame height), SGD lr {args.quality_lr}, weight decay "
        f"{args.quality_weight_decay}, {args.quality_epochs} epochs (the paper: lr 5e-6, 5e-4, 50 epochs), on at "
        f"most {args.quality_samples} Worst-policy samples "
        f"({args.quality_rounds} rounds; a frame's sample only when its map changed in the round).",
        "Table 3 figures are on Worst-policy samples of the evaluation videos, which neither network trained on.",
        "Each engine's Wild rows use a quality network trained on that engine's own outputs; the saved model holds the "
        f"one of the first engine ({args.engines[0]}), so `--stage evaluate --model ... --engine` with another engine "
        "pairs that engine with it (RUN_DIR/checkpoints/quality-<engine>/ keeps the others).",
        f"Evaluation: {args.rounds} rounds, round 1 the scribble file where the data has one, else the robot on an "
        "empty prediction; curves are the object-weighted mean over (sequence, scribble); Random is 5 runs "
        f"(seeds {args.seed}..{args.seed + common.RANDOM_RUNS - 1}), mean ± sample std. The time AUC and J&F@60 s use "
        "each round's measured method time (engine + quality network + recommendation) with no time budget "
        "(timeout = rounds × the longest round), so they are not comparable with the official challenge numbers.",
        "The paper reports AUC in percent for DAVIS 2017 val; the values measured here are fractions in [0, 1].",
    ]


def write_outputs(args, argv, measured, quality_figures, described, trained_on, seconds, counts, extra_notes):
    run_dir = args.run_dir
    table = common.table_markdown(measured)
    (run_dir / "table1.md").write_text(table + "\n")
    common.plot_curves(measured, run_dir / "curves.png")
    common.write_per_sequence(measured, run_dir / "per_sequence.csv")
    metrics = {"table1": measured, "quality": quality_figures}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    results = []
    for engine, settings in measured.items():
        for setting, cells in settings.items():
            if "ours" not in cells:
                continue
            row = cells["ours"]
            results.append({
                "task_type": "interactive-video-object-segmentation",
                "task_name": f"Frame recommendation, Table 1 row: {setting} / Ours ({engine} engine, {args.rounds} "
                             "rounds)",
                "dataset_name": described, "dataset_type": "davis",
                "dataset_split": f"{args.eval_split}, never trained on or used for model selection",
                "data": ", ".join(row["per_sequence"]),
                "metrics": [{"type": "ivosw_auc", "name": f"IVOS-W AUC, {engine} / {setting} / Ours",
                             "value": row["auc"]},
                            {"type": "jf_at_60s", "name": f"J&F@60s, {engine} / {setting} / Ours",
                             "value": row["jf_at_60s"]},
                            {"type": "time_auc", "name": f"time AUC, {engine} / {setting} / Ours",
                             "value": row["time_auc"]}],
            })
    summary = {
        "finding": common.finding(measured), "model": "ivosw-davis", "method": "ivosw", "paper": PAPER,
        "paper_url": PAPER_URL, "benchmark": f"DAVIS {args.year if args.data_dir else '2017 (synthetic)'} interactive",
        "command": "python -m recipes.ivosw_davis " + shlex.join(argv), "hardware": hardware(args.accelerator),
        "synthetic": args.data_dir is None, "trained_on": trained_on, "seconds": seconds, "counts": counts,
        "table1": table, "quality": quality_figures, "per_sequence_table": common.per_sequence_markdown(measured),
        "table1_markdown": table, "table3_markdown": common.quality_markdown(quality_figures),
        "results": results, "paper_results": common.paper_results(),
        "notes": extra_notes,
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


# -- main ------------------------------------------------------------------------------------------------------------


def evaluate_only(args) -> dict:
    """`--stage evaluate`: a saved agent on the evaluation videos, nothing trained."""
    from zoo.hub import load

    if args.model is None:
        raise SystemExit("ivosw_davis: error: --stage evaluate needs --model (a zoo name or a model folder)")
    selection = None
    try:
        if args.benchmark == "youtube-vos":
            videos, described, selection = youtube_vos_videos(args)
        else:
            _, evaluation, described, _ = load_data(args, need_train=False)
            videos = common.session_videos(evaluation, args.scribbles)
    except (FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SystemExit(f"ivosw_davis: error: --data-dir {args.data_dir}: {message}") from None
    model = load(args.model)
    engine = args.engine or model.engine
    pool = common.EnginePool(args.cache_dir, args.engines_in_memory)
    plans = len(args.strategies) + (common.RANDOM_RUNS - 1 if "random" in args.strategies else 0)
    with progress(total=len(videos) * plans, desc="sessions", unit="session") as bar:
        table = common.evaluate_setting(videos, pool, engine, args.setting, args.rounds, model,
                                        model.quality_network, args.strategies, args.seed, bar)
    result = {**common.evaluation_json(table, engine, args.setting, args.rounds), "model": args.model,
              "benchmark": args.benchmark, "data": described,
              "sequences": [common.sample_name(v) for v in videos]}
    if selection is not None:
        result["selection"] = selection
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return result


def check_benchmark(args) -> None:
    """One-line errors for options that do not fit `--benchmark` / `--stage`."""
    if args.benchmark == "youtube-vos" and args.stage != "evaluate":
        raise SystemExit(
            "ivosw_davis: error: --benchmark youtube-vos only evaluates (the paper trains on DAVIS and tests on "
            "YouTube-VOS for generalisation): train on DAVIS (python -m recipes.ivosw_davis --data-dir DAVIS2017 "
            "--run-dir RUN_DIR), then evaluate with --stage evaluate --benchmark youtube-vos --model RUN_DIR/model "
            "--data-dir YOUTUBE_VOS_2018 --json OUT")
    if args.benchmark == "davis":
        given = [flag for flag, value in (("--num-sequences", args.num_sequences), ("--max-side", args.max_side))
                 if value is not None]
        if given:
            raise SystemExit(f"ivosw_davis: error: {', '.join(given)} apply only to --benchmark youtube-vos")
    if args.num_sequences is not None and args.num_sequences < 1:
        raise SystemExit(f"ivosw_davis: error: --num-sequences must be at least 1, got {args.num_sequences}")
    if args.max_side is not None and args.max_side < 0:
        raise SystemExit(f"ivosw_davis: error: --max-side must be 0 (native size) or positive, got {args.max_side}")


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    check_benchmark(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    if args.stage == "evaluate":
        return evaluate_only(args)
    try:
        train, evaluation, described, trained_on = load_data(args)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"ivosw_davis: error: --data-dir {args.data_dir}: {error}") from None
    train_videos = common.session_videos(train, args.scribbles)
    eval_videos = common.session_videos(evaluation, args.scribbles)
    if not train_videos:
        raise SystemExit(f"ivosw_davis: error: no training sequence in {args.data_dir or 'the synthetic tree'}")
    window = min(args.window, min(v.num_frames for v in train_videos))
    height = train_videos[0].frames.shape[1]
    quality_size = args.quality_size or (256 if args.data_dir else 96)
    min_side = 128.0 * height / 480  # the authors' 128 px at DAVIS's 480 rows
    print(f"{len(train_videos)} training samples ({window}-frame windows); evaluating on {described} "
          f"({len(eval_videos)} samples)")
    seconds, counts, quality_figures = StageSeconds(args.run_dir / "seconds.json"), {}, {}
    command = ["python", "-m", "recipes.ivosw_davis", *argv]
    with RunDirectory(args.run_dir, restart=args.restart, command=command) as run:
        pool = common.EnginePool(args.cache_dir or args.run_dir / "cache", args.engines_in_memory)
        windows = [common.window_of(video, window) for video in train_videos]
        agent = train_agent(args, windows, pool, run, seconds)
        counts.update(agent_episodes=int(agent.episodes), agent_updates=int(agent.updates),
                      agent_decisions=int(agent.environment_steps), target_copies=int(agent.target_copies))
        quality_modules = {}
        for engine in args.engines:
            quality_modules[engine], quality_figures[engine] = train_quality(
                args, engine, train_videos, eval_videos, pool, run, quality_size, min_side, seconds, counts)
        first = quality_modules[args.engines[0]]
        model = IVOSWRecommender(hidden=args.hidden, head_hidden=args.head_hidden, state_features=args.state_features,
                                 quality_backbone=args.quality_backbone, quality_input_size=quality_size,
                                 quality_min_side=min_side, backbone_weights=first.backbone_weights,
                                 engine=args.engines[0])
        model.agent.load_state_dict(agent.policy.state_dict())
        model.quality_network.load_state_dict(first.network.state_dict())
        model.save_pretrained(args.run_dir / "model")
        model = load_folder(args.run_dir / "model", expected_type="ivosw")  # evaluate what was saved
        networks = {engine: module.network for engine, module in quality_modules.items()}
        networks[args.engines[0]] = model.quality_network
        measured, evaluation_seconds = common.evaluate(args, model, networks, eval_videos, pool, args.engines,
                                                       args.settings, common.model_digest(args.run_dir / "model"))
        seconds.pop("evaluate", None)  # before per-cell seconds, one figure for the whole stage
        for cell, took in evaluation_seconds.items():
            seconds.set(f"evaluate-{cell}", took)
        prefill_file = run.checkpoints / "prefill" / "prefill.pt"
        dropped = torch.load(prefill_file, weights_only=True)["dropped"] if prefill_file.is_file() else []
        summary = write_outputs(args, argv, measured, quality_figures, described, trained_on, seconds, counts,
                                notes(args, dropped, window, quality_size, min_side))
    print(summary["table1"])
    print(summary["finding"])
    print(f"run directory {args.run_dir}")
    return summary


if __name__ == "__main__":
    main()
