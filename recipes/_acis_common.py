"""Shared driver of the ACIS recipes (`recipes.acis_cvppp`, `recipes.acis_kitti`).

Stages, each a Lightning fit writing `RUN_DIR/checkpoints/<stage>/last.ckpt` every `--checkpoint-every` epochs and
at its end (re-running the command skips finished stages and resumes an interrupted one; `--restart` starts the
stages it runs over; see `recipes._run_dir`):
`preproc` (foreground + angles FCN), `cvae` (pre-training), `init` (the actor trained with BCE before the
RL stage; here on its own rollouts from ground-truth start states, see `ActorCriticModule.sampled_state_update`),
`train` (the `--ablation`: AC, AC-NoKL, AC-NoSP, BL or BL-Trunc; each row in its own `checkpoints/train-<ablation>`,
and `eval` only takes the row it is asked for), then `eval`
(metrics JSON, per-image CSV, Fig.-4-style picture, Hub folder `RUN_DIR/model`, `results.json`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger

from recipes._progress import FROZEN_MODULES, TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import RunDirectory, checkpoint_state, is_launcher, recorded_commands
from zoo.hub import load_folder
from zoo.registry import markdown_row
from zoo.acis.model import ForegroundComponents
from zoo.acis.module import ActorCriticModule, CVAEModule, PreprocessingModule, prepare_batch
from zoo.acis.networks import ACISConfig, state_pyramid

STAGES = ("preproc", "cvae", "init", "train", "eval")
SHAREABLE = STAGES[:3]  # the stages --pretrained-run can provide
PROFILES = ("embedded", "cpu", "paper")
ABLATIONS = ("AC", "AC-NoKL", "AC-NoSP", "BL", "BL-Trunc")
PAPER = "Actor-Critic Instance Segmentation (Araslanov, Rothkopf, Roth; CVPR 2019)"
PAPER_URL = "https://arxiv.org/abs/1904.05126"


@dataclass
class Schedule:
    """Epoch counts per stage and the stage-2 hyper-parameters (the authors' are `paper_schedule()`; the embedded
    schedule is scaled to minutes of CPU).

    Two kinds of schedule: the `*curriculum` fields are [[from_update, sequence_length], ...], counted in updates
    (the CPU-sized profiles); the `*_epoch_schedule` fields are [[from_epoch, {name: value}], ...], counted in the
    stage's own epochs from 0 and applied at every epoch start (`zoo.acis.module.scheduled_settings`; a value set
    there replaces the constant field, and an epoch schedule's "seq_len" replaces the curriculum). `--epochs-scale`
    scales their epochs with the stages'.
    """

    preproc_epochs: int
    cvae_epochs: int
    init_epochs: int
    train_epochs: int
    batch_size: int
    preproc_lr: float = 1e-3
    cvae_lr: float = 2e-4
    cvae_lambda_kl: float = 1.0
    lr: float = 5e-4
    beta_kl: float = 1e-4
    critic_warmup: int = 1024
    critic_iter: int = 4
    ac_lr: float | None = None  # the actor's lr in the last stage, every row alike (None: `lr`)
    ac_beta_kl: float | None = None  # beta of the last stage, every row alike (None: `beta_kl`)
    critic_lr_factor: float = 2.0  # the critic's lr is this times the actor's (paper: 2)
    init_rollout: int = 1  # actor steps trained per init update, each on the state its own masks made
    init_rollout_fraction: float = 0.0  # share of init updates starting from M_1 = 0 (else from ground-truth leaves)
    init_dice_weight: float = 0.0  # soft-Dice loss weight beside the init stage's BCE (0: BCE only, the paper's loss)
    init_train_decoder: bool = False  # fine-tune the cVAE decoder in the init stage (the later rows keep it frozen)
    init_sample_actions: bool = False  # the init stage decodes sampled actions, not the mean, so that it trains sigma
    critic_repeats: bool = False  # AC rows: the critic also regresses re-taken earlier masks (known outcome)
    init_curriculum: list = field(default_factory=lambda: [[0, 1]])  # counted in updates (unused by the init stage)
    curriculum: list = field(default_factory=lambda: [[0, 5]])  # AC rows, counted in updates
    bl_curriculum: list = field(default_factory=lambda: [[0, 5]])  # BL rows, counted in updates
    cvae_epoch_schedule: list | None = None  # names "lr", "lambda_kl"
    init_epoch_schedule: list | None = None  # "lr", "beta_kl"
    ac_epoch_schedule: list | None = None  # the AC rows: "seq_len", "lr" (the actor's), "beta_kl"
    bl_epoch_schedule: list | None = None  # BL and BL-Trunc: the same names
    # after the cVAE stage, stop when its reconstructions of training instances stay below this Dice (0: no check)
    min_reconstruction_dice: float = 0.0
    framing: str = "crop"  # how training items are framed (`datamodules.cvppp` geometries; KITTI ignores it)
    storage_dtype: str = "float32"  # of the published weights (`ACISSegmenter.storage_dtype`)


def embedded_config(*, height: int, width: int, latent_size: int, feature_size: int) -> ACISConfig:
    """The CPU-sized widths of the embedded runs (the paper's are `ACISConfig.paper_cvppp()` / `paper_kitti()`)."""
    return ACISConfig(
        height=height, width=width, latent_size=latent_size,
        preproc_widths=[12, 16, 24, 32, 32], preproc_fc=64,
        encoder_widths=[16, 24, 32, 48], bottleneck=128, rnn_size=128, rnn_layers=2, feature_size=feature_size,
        latent_channels=16, decoder_widths=[32, 24, 16, 8],
        critic_widths=[16, 24, 32, 48], critic_fc=[256, 128, 64], control_size=64,
        batch_norm=True,
    )


def embedded_schedule(*, init_epochs: int, curriculum_switch: int) -> Schedule:
    """Minutes of CPU per stage; the sequence length goes 5 -> 10 after `curriculum_switch` updates."""
    return Schedule(
        preproc_epochs=25, cvae_epochs=60, init_epochs=init_epochs, train_epochs=40, batch_size=8,
        preproc_lr=3e-3, cvae_lr=3e-3, cvae_lambda_kl=0.1,
        lr=5e-4, beta_kl=1e-4, critic_warmup=60, critic_iter=4,
        # AC: a slower actor (1e-4) and a critic 10x faster (paper 2x), the actor moving every 4th update after 60
        # critic-only ones: with the paper's ratios (5e-4, 2x, every 4th after 40) the actor exploited a critic that
        # had seen ~100 updates and drifted to one image-independent blob; beta 1e-2 instead of 1e-4 collapsed it to
        # empty masks (KITTI) or did not help (CVPPP)
        ac_lr=1e-4, critic_lr_factor=10.0, ac_beta_kl=1e-4,
        curriculum=[[0, 5], [curriculum_switch, 10]], bl_curriculum=[[0, 5], [curriculum_switch, 10]],
        # init: 4 trained steps per update on the actor's own rollout, a quarter of them from M_1 = 0 (one step from
        # ground-truth states alone gave an actor that emitted empty masks after its second leaf)
        init_rollout=4, init_rollout_fraction=0.25,
    )


# The epoch of the authors' numbering (1-based, counted from the first epoch of their "-init" run) at which their
# last stage starts: AC and BL-Trunc continue the init run's 600 epochs at 601.
AUTHORS_LAST_STAGE_START = 601


def _own_epochs(entries: list, first: int) -> list:
    """The authors' [[epoch, settings], ...] in the epochs of a stage that starts at their epoch `first`, from 0."""
    return [[epoch - first, settings] for epoch, settings in entries]


def paper_schedule(batch_size: int = 8) -> Schedule:
    """The authors' schedules (`runs/cvppp_*.sh`, `schedules.lua`), each in its stage's own epochs counted from 0.

    - preproc: 300 epochs at lr 1e-3 (their Adam's learning_rate_decay 2e-5 is not reproduced).
    - cVAE: lambda_KL 1; lr 2e-4 for 400 epochs, 2e-5 to 600, 2e-6 to 800.
    - init ("-init", sequence length 1 = one trained step per update, `init_rollout=1`): lr 5e-4, lambda_KL 0.1 for
      400 epochs, then lambda_KL 0 to 600. The authors decode a sample of the posterior there and switch to
      `-noSampling` (the mean) with lambda_KL 0; this init stage always decodes the latent mean (see
      `ActorCriticModule.sampled_state_update`), so its first 400 epochs are their `-noSampling` with the KL term
      kept (it pulls the means and variances towards N(0, I) that the AC stage samples from), and the last 200 are
      exactly theirs.
    - AC rows, from the authors' epoch 601 (their epoch E is epoch E - 601 here) to 10000, 9400 epochs: length 5, lr
      5e-4, beta 1e-4; epoch 5000 lr 5e-5; 7000 length 10; 8000 lr 1e-5, beta 1e-5; 9000 length 15, lr 1e-6. The
      critic's lr stays `critic_lr_factor` (2) times the actor's.
    - BL rows: the authors' BL-Trunc lengths 5 (601), 10 (4001), 21 (9000) over the same 9400 epochs; their schedule
      changes neither lr nor beta, so those stay at 5e-4 and 1e-4.
    """
    last = AUTHORS_LAST_STAGE_START
    return Schedule(
        preproc_epochs=300, cvae_epochs=800, init_epochs=last - 1, train_epochs=10000 - (last - 1),
        batch_size=batch_size, preproc_lr=1e-3, cvae_lr=2e-4, cvae_lambda_kl=1.0, lr=5e-4, beta_kl=1e-4,
        critic_warmup=1024, critic_iter=4, critic_lr_factor=2.0, init_rollout=1,
        cvae_epoch_schedule=[[0, {"lr": 2e-4}], [400, {"lr": 2e-5}], [600, {"lr": 2e-6}]],
        init_epoch_schedule=[[0, {"lr": 5e-4, "beta_kl": 0.1}], [400, {"beta_kl": 0.0}]],
        ac_epoch_schedule=_own_epochs([
            [601, {"seq_len": 5, "lr": 5e-4, "beta_kl": 1e-4}],
            [5000, {"lr": 5e-5}],
            [7000, {"seq_len": 10}],
            [8000, {"lr": 1e-5, "beta_kl": 1e-5}],
            [9000, {"seq_len": 15, "lr": 1e-6}],
        ], last),
        bl_epoch_schedule=_own_epochs([[601, {"seq_len": 5}], [4001, {"seq_len": 10}], [9000, {"seq_len": 21}]], last),
    )


def evaluate_segmenter(segmenter, dataset, metrics, examples: int = 4):
    """Segment every image of `dataset`, score it with `metrics` (a per-image torchmetrics Metric), and return the
    summary, per-image rows (with predicted and ground-truth counts) and a few examples to draw."""
    rows, drawn = [], []
    for index in progress(range(len(dataset)), desc="evaluating", unit="image"):
        item = dataset[index]
        image = image_to_uint8(item["image"])
        labels, order = segmenter.segment(image)
        gt = item["labels"].numpy()
        metrics.update(labels, gt)
        rows.append({"name": item["name"], "predicted": len(order), "ground_truth": int(len(np.unique(gt[gt > 0])))})
        if len(drawn) < examples:
            drawn.append((item["name"], image, gt, labels))
    # the dataset means' names (KITTI: AvgFP, not FP), which metrics.json, per_image.csv and the card's tables share
    rows = [{**row, **scores} for row, scores in zip(rows, metrics.per_image(dataset_names=True))]
    summary = {key: float(value) for key, value in metrics.compute().items()}
    return summary, rows, drawn


@dataclass
class Benchmark:
    name: str  # model name, e.g. "acis-cvppp"
    title: str  # e.g. "CVPPP LSC A1"
    dataset_type: str
    score: str  # reward potential: "dice" or "iou"
    embedded_config: ACISConfig
    paper_config: ACISConfig
    embedded_schedule: Schedule
    paper_schedule: Schedule
    write_synthetic: Callable[[Path], Path]  # root -> data dir
    # (data_dir, batch_size, framing, size) -> datamodule
    datamodule: Callable[..., pl.LightningDataModule]
    evaluate: Callable  # (segmenter, dataset) -> (summary dict, per-image rows)
    metric_names: dict  # key in summary -> (type, human name)
    paper_results: list
    synthetic_description: str
    val_split_name: str
    cpu_config: ACISConfig | None = None  # `--profile cpu`: real data on a 2-core CPU (the card records each stage's time)
    cpu_schedule: Schedule | None = None
    # (data_dir) -> the validation images at the benchmark's own resolution, as evaluation reads them (None: the
    # datamodule's validation set)
    eval_dataset: Callable | None = None


def build_parser(benchmark: Benchmark) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m recipes.{benchmark.name.replace('-', '_')}",
        description=f"ACIS on {benchmark.title}: all stages, then evaluation (default: embedded synthetic data).",
    )
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="real data in its native layout; without it synthetic data is written and used")
    parser.add_argument("--run-dir", type=Path, default=Path("runs") / benchmark.name)
    parser.add_argument("--stage", choices=("all",) + STAGES, default="all")
    parser.add_argument("--ablation", choices=ABLATIONS, default="AC", help="the Table 1 row trained by `train`")
    parser.add_argument("--pretrained-run", type=Path, default=None,
                        help="take the checkpoints of the --share-stages from this run dir instead of training them")
    parser.add_argument("--share-stages", nargs="+", choices=SHAREABLE, default=list(SHAREABLE),
                        help="with --pretrained-run: the earlier stages taken from it, a leading part of "
                        f"{' '.join(SHAREABLE)} (default: all three; e.g. `preproc cvae` trains its own init stage)")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="network widths and schedule: 'embedded' (minutes, the default without --data-dir), "
                        "'paper' (the paper's, the default with --data-dir; GPU-days), 'cpu' (real data on 2 CPU "
                        "cores, where the benchmark has one)")
    parser.add_argument("--paper-config", action="store_true", help="the same as --profile paper")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every stage's epochs (and the epochs at which its schedule steps)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="epochs of the last (train) stage, overriding the profile's (Table 1 gives every row "
                        "the same budget with it)")
    parser.add_argument("--init-dice-weight", type=float, default=None,
                        help="weight of the soft-Dice loss beside the init stage's BCE (default: the profile's; 0 = BCE "
                        "only, the paper's loss)")
    parser.add_argument("--init-train-decoder", action=argparse.BooleanOptionalAction, default=None,
                        help="fine-tune the cVAE decoder in the init stage (default: the profile's; the paper keeps it "
                        "as pre-trained)")
    parser.add_argument("--init-sample-actions", action=argparse.BooleanOptionalAction, default=None,
                        help="the init stage decodes a sampled action instead of the policy's mean, so that it trains "
                        "the policy's sigma, the last stage's exploration (default: the profile's)")
    parser.add_argument("--cvae-epochs", type=int, default=None,
                        help="epochs of the cVAE stage (default: the profile's)")
    parser.add_argument("--init-epochs", type=int, default=None,
                        help="epochs of the init stage (default: the profile's; a finished shorter init stage resumes "
                        "and trains on)")
    parser.add_argument("--init-rollout", type=int, default=None,
                        help="actor steps of its own rollout trained per init-stage update (default: the profile's)")
    parser.add_argument("--critic-warmup", type=int, default=None,
                        help="AC rows: updates that train the critic alone before the actor's first step (default: "
                        "the profile's)")
    parser.add_argument("--critic-repeats", action=argparse.BooleanOptionalAction, default=None,
                        help="AC rows: the critic also regresses, at every step, the re-take of an earlier mask of the "
                        "episode, whose outcome is known (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads; data loading runs in one worker process beside them (default 1: "
                        "more threads oversubscribe a small shared CPU badly)")
    run = parser.add_argument_group("run")
    run.add_argument("--restart", action="store_true",
                     help="start the stages this command runs over, deleting their checkpoints (default: resume)")
    run.add_argument("--checkpoint-every", type=int, default=5, help="epochs between checkpoints within a stage")
    run.add_argument("--checkpoint-minutes", type=float, default=10.0,
                     help="also checkpoint at the first epoch end this many minutes after the last checkpoint")
    run.add_argument("--accelerator", default="cpu", help="Lightning accelerator, e.g. gpu")
    run.add_argument("--devices", default="1", help="Lightning Trainer devices (e.g. 2 with --strategy ddp)")
    run.add_argument("--num-nodes", type=int, default=1)
    run.add_argument("--strategy", default="auto", help="Lightning strategy")
    return parser


def main(benchmark: Benchmark, argv: list[str] | None = None) -> dict:
    """The results (or the timings when `eval` did not run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(benchmark).parse_args(argv)
    quiet_lightning()
    module_name = "recipes." + benchmark.name.replace("-", "_")
    with RunDirectory(args.run_dir, command=["python", "-m", module_name, *argv]) as run:
        return run_stages(benchmark, args, argv, run)


def run_stages(benchmark: Benchmark, args, argv: list[str], run: RunDirectory) -> dict:
    # the command that reproduces the run: --stage only picks which part of the same pipeline runs now
    kept = [a for i, a in enumerate(argv) if a not in ("--stage", "--restart") and (i == 0 or argv[i - 1] != "--stage")]
    command = "python -m recipes." + benchmark.name.replace("-", "_") + "".join(" " + a for a in kept)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    run_dir = args.run_dir
    synthetic = args.data_dir is None
    data_dir = benchmark.write_synthetic(run_dir / "data") if synthetic else args.data_dir
    data_dir = str(data_dir)  # Lightning stores the datamodule hparams in checkpoints: keep them weights_only-safe
    config, schedule = profile_settings(benchmark, args)
    if config.preproc_backbone != "fcn":
        from zoo.backbones import pretrained_state

        # recorded in every stage's config, so the published config.json says where the body's weights came from
        config = ACISConfig.from_dict({**config.to_dict(), "backbone_weights": pretrained_state(config.preproc_backbone)[1]})
    if args.ablation == "AC-NoSP":
        config = ACISConfig.from_dict({**config.to_dict(), "state_pyramid": False})
    datamodule = benchmark.datamodule(data_dir, schedule.batch_size, schedule.framing, config.height)
    if args.pretrained_run is not None and args.ablation == "AC-NoSP":
        raise SystemExit("--ablation AC-NoSP needs its own cVAE without the State Pyramid: drop --pretrained-run")
    shared = shared_stages(args)
    if args.stage in shared:
        raise SystemExit(f"--stage {args.stage}: this run takes that stage from --pretrained-run {args.pretrained_run}; "
                         f"leave it out of --share-stages to train it here")
    stages = STAGES if args.stage == "all" else (args.stage,)
    if args.stage == "all":
        stages = tuple(stage for stage in STAGES if stage not in shared)
    epochs = lambda n: max(1, round(n * args.epochs_scale))  # noqa: E731

    def epoch_schedule(entries: list | None) -> list | None:
        """A stage's epoch schedule at --epochs-scale: a shortened run keeps the schedule's shape."""
        return None if entries is None else [[round(start * args.epochs_scale), values] for start, values in entries]
    timings = {}
    spans = {}  # stage -> [first epoch, last epoch] this invocation trained: a resumed stage's time covers only those
    if "train" in stages or "eval" in stages:
        adopt_legacy_train_checkpoint(run_dir)
    if args.restart:
        for stage in stages:
            run.discard_checkpoints(stage_folder(stage, args.ablation))

    def source(stage: str) -> Path:
        return source_of(args, run_dir, stage)

    def fit(module, stage: str, max_epochs: int) -> bool:
        """Trains the stage (False when it had finished already)."""
        # hparams a run leaves at None (e.g. no epoch_schedule) stay out, so checkpoints older than them still resume
        hparams = {key: value for key, value in module.hparams.items() if value is not None}
        identity = {"stage": stage, "hparams": hparams, "seed": args.seed,
                    "data": "synthetic" if synthetic else str(Path(data_dir).resolve())}
        folder = stage_folder(stage, args.ablation)
        resume = run.resume_checkpoint(folder, identity)
        spans[stage] = [0, max_epochs]
        if resume is not None:
            if isinstance(module, ActorCriticModule):
                check_mode(resume, module.hparams.mode)
            state = checkpoint_state(resume)
            if state["complete"] and state["epochs"] >= max_epochs:
                return False
            spans[stage][0] = state["epochs"]
        trainer = stage_trainer(args, run, folder, max_epochs, identity,
                                parameters_sit_out=isinstance(module, ActorCriticModule) and module.critic is not None)
        if is_launcher():
            print(f"[acis] stage {stage}: {max_epochs} epochs -> {run.last_checkpoint(folder)}", file=sys.stderr)
        # the datamodule's validation split is for `eval`, not for the fit
        with expected_warnings(FROZEN_MODULES, "You passed in a `val_dataloader` but have no `validation_step`"):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        return True

    for stage in stages:
        start = time.perf_counter()
        trained = True
        if stage == "preproc":
            pretrained = config.preproc_backbone != "fcn"
            trained = fit(PreprocessingModule(config.to_dict(), lr=schedule.preproc_lr, pretrained_backbone=pretrained), stage,
                          epochs(schedule.preproc_epochs))
        elif stage == "cvae":
            module = CVAEModule(config.to_dict(), lr=schedule.cvae_lr, lambda_kl=schedule.cvae_lambda_kl,
                                epoch_schedule=epoch_schedule(schedule.cvae_epoch_schedule))
            module.preproc.load_state_dict(load(PreprocessingModule, source("preproc")).net.state_dict())
            trained = fit(module, stage, epochs(schedule.cvae_epochs))
            if trained and schedule.min_reconstruction_dice > 0:
                check_reconstruction(load(CVAEModule, source("cvae")), datamodule, run_dir, args.seed,
                                     schedule.min_reconstruction_dice)
        elif stage == "init":
            module = ActorCriticModule(config.to_dict(), mode="BL-Trunc", score=benchmark.score, lr=schedule.lr,
                                       beta_kl=schedule.beta_kl, curriculum=schedule.init_curriculum,
                                       sampled_states=True, rollout=schedule.init_rollout,
                                       rollout_fraction=schedule.init_rollout_fraction,
                                       target_order="dice", epoch_schedule=epoch_schedule(schedule.init_epoch_schedule),
                                       init_dice_weight=schedule.init_dice_weight,
                                       init_train_decoder=schedule.init_train_decoder,
                                       # None, not False: init checkpoints from before the option keep their identity
                                       init_sample_actions=schedule.init_sample_actions or None)
            cvae = load(CVAEModule, source("cvae"))
            module.load_pretrained(cvae.preproc, cvae.decoder)
            trained = fit(module, stage, epochs(schedule.init_epochs))
        elif stage == "train":
            actor_critic = args.ablation.startswith("AC")
            module = ActorCriticModule(
                config.to_dict(), mode=args.ablation, score=benchmark.score,
                # every Table 1 row gets the same actor learning rate and beta: no row is tuned more than another
                lr=schedule.ac_lr or schedule.lr,
                critic_lr_factor=schedule.critic_lr_factor,
                beta_kl=schedule.ac_beta_kl if schedule.ac_beta_kl is not None else schedule.beta_kl,
                critic_warmup=schedule.critic_warmup, critic_iter=schedule.critic_iter,
                # None, not False: checkpoints from before the option keep their identity
                critic_repeats=(schedule.critic_repeats and actor_critic) or None,
                curriculum=schedule.curriculum if actor_critic else schedule.bl_curriculum,
                # the authors' lr and beta decay for the AC rows, lengths only for BL-Trunc (`paper_schedule`);
                # --train-epochs cuts the schedule short or runs on with its last values
                epoch_schedule=epoch_schedule(
                    schedule.ac_epoch_schedule if actor_critic else schedule.bl_epoch_schedule),
            )
            init = load(ActorCriticModule, source("init"))
            module.load_pretrained(init.preproc, init.decoder, init.actor)
            trained = fit(module, stage, args.train_epochs or epochs(schedule.train_epochs))
        elif stage == "eval":
            # after a DDP fit: the launching process evaluates alone (one writer), and its metrics must not wait to
            # gather the other processes' states
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            if not is_launcher():
                break
            timings = recorded_timings(run_dir, timings, spans)
            return evaluate(benchmark, args, command, run_dir, data_dir, datamodule, synthetic, timings)
        if not trained:
            continue  # keep the time the stage took when it ran
        timings[stage] = round(time.perf_counter() - start, 1)
        if not is_launcher():
            continue
        (run_dir / "timings.json").write_text(json.dumps(recorded_timings(run_dir, timings, spans), indent=2))
    return {"timings_s": timings}


def recorded_timings(run_dir: Path, timings: dict, spans: dict) -> dict:
    """RUN_DIR/timings.json updated with this invocation's stages: seconds per stage, and under "epochs" the epochs
    they covered (a stage resumed from a checkpoint records only the epochs it trained now)."""
    timings_file = run_dir / "timings.json"
    previous = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    epochs = {**previous.get("epochs", {}), **{stage: span for stage, span in spans.items() if stage in timings}}
    return {**previous, **timings, **({"epochs": epochs} if epochs else {})}


def check_reconstruction(cvae: CVAEModule, datamodule, run_dir: Path, seed: int, minimum: float) -> float:
    """Mean Dice of the cVAE's reconstructions (posterior mean, binarised at 0.5) of one instance per training image.

    A collapsed posterior (KL near 0, the decoder ignoring the latent and emitting empty masks) makes every later
    stage useless, and it happened on real plants for some seeds; stop here and say so instead of training on."""
    datamodule.setup("fit")
    dices = []
    generator = torch.Generator().manual_seed(0)
    cvae.eval()
    with torch.no_grad():
        for index in range(0, len(datamodule.train_set), max(1, len(datamodule.train_set) // 16)):
            item = datamodule.train_set[index]
            image, gts = prepare_batch({"image": item["image"][None], "labels": item["labels"][None]}, cvae.config)
            if not len(gts[0]):
                continue
            target = gts[0][int(torch.randint(len(gts[0]), (), generator=generator))][None, None].float()
            aux = cvae.preproc.channels(image)
            decoded = torch.sigmoid(cvae.decoder(cvae.encoder(image, target, aux).mean,
                                                 state_pyramid(image, aux, cvae.config.levels))) > 0.5
            dices.append(float(2 * (decoded * target).sum() / (decoded.sum() + target.sum()).clamp(min=1)))
    dice = float(np.mean(dices)) if dices else 0.0
    if dice < minimum:
        raise SystemExit(
            f"the cVAE of {run_dir} reconstructs training instances at Dice {dice:.3f} (< {minimum}): its "
            "posterior collapsed and later stages would learn nothing. Start it again with another seed: "
            f"--seed {seed + 1} --stage cvae --restart (then run the command without --stage)"
        )
    if is_launcher():
        print(f"[acis] cVAE reconstruction Dice on training instances: {dice:.3f}", file=sys.stderr)
        checks = run_dir / "checks.json"
        recorded = json.loads(checks.read_text()) if checks.is_file() else {}
        checks.write_text(json.dumps({**recorded, "cvae_reconstruction_dice_train": round(dice, 4)}, indent=2))
    return dice


def profile_name(args) -> str:
    if args.paper_config:
        return "paper"
    return args.profile or ("embedded" if args.data_dir is None else "paper")


def profile_settings(benchmark: Benchmark, args) -> tuple[ACISConfig, Schedule]:
    config, schedule = _profile(benchmark, args)
    overrides = {"init_dice_weight": args.init_dice_weight, "init_train_decoder": args.init_train_decoder,
                 "init_sample_actions": args.init_sample_actions, "critic_repeats": args.critic_repeats,
                 "cvae_epochs": args.cvae_epochs, "init_epochs": args.init_epochs, "init_rollout": args.init_rollout,
                 "critic_warmup": args.critic_warmup}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if overrides.get("init_dice_weight", 0.0) < 0:
        raise SystemExit(f"--init-dice-weight must be >= 0, got {args.init_dice_weight}")
    for name, least in (("cvae_epochs", 1), ("init_epochs", 1), ("init_rollout", 1), ("critic_warmup", 0)):
        if overrides.get(name, least) < least:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= {least}, got {overrides[name]}")
    return config, dataclasses.replace(schedule, **overrides)


def _profile(benchmark: Benchmark, args) -> tuple[ACISConfig, Schedule]:
    profile = profile_name(args)
    if profile == "cpu":
        if benchmark.cpu_config is None:
            raise SystemExit(f"{benchmark.name} has no 'cpu' profile: use --profile embedded or paper")
        return benchmark.cpu_config, benchmark.cpu_schedule
    if profile == "paper":
        return benchmark.paper_config, benchmark.paper_schedule
    return benchmark.embedded_config, benchmark.embedded_schedule


def shared_stages(args) -> tuple[str, ...]:
    """The stages taken from --pretrained-run (none without it), checked to be a leading part of SHAREABLE: a later
    stage is trained on an earlier one's outputs, so a run cannot train its own cVAE under a shared init actor."""
    if args.pretrained_run is None:
        return ()
    shared = tuple(stage for stage in SHAREABLE if stage in args.share_stages)
    if not shared or shared != SHAREABLE[: len(shared)]:
        raise SystemExit(f"--share-stages {' '.join(args.share_stages)}: want a leading part of "
                         f"{' '.join(SHAREABLE)}, e.g. `preproc cvae` (this run then trains its own init stage)")
    return shared


def source_of(args, run_dir: Path, stage: str) -> Path:
    """A stage's checkpoint: this run's, or --pretrained-run's for the shared stages (`train`: the --ablation row's)."""
    base = args.pretrained_run if stage in shared_stages(args) else run_dir
    return base / "checkpoints" / stage_folder(stage, args.ablation) / "last.ckpt"


def stage_folder(stage: str, ablation: str) -> str:
    """The folder under `checkpoints/` of a stage: one per Table 1 row for `train` (`train-AC-NoKL`), so that a row
    never resumes, evaluates or reports another row's weights (BL and BL-Trunc, AC and AC-NoKL share every shape)."""
    return f"{stage}-{ablation}" if stage == "train" else stage


def checkpoint_mode(path: Path) -> str | None:
    """The `mode` an ActorCriticModule checkpoint was trained as (None for another module's)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise SystemExit(f"{path} cannot be read ({type(error).__name__}: {error}); move it away") from error
    return checkpoint.get("hyper_parameters", {}).get("mode")


def check_mode(path: Path, expected: str) -> None:
    found = checkpoint_mode(path)
    if found != expected:
        raise SystemExit(
            f"{path} holds a model trained as '{found}', not '{expected}': using it as '{expected}' would report "
            f"another Table 1 row. Pass --ablation {found} to use it, or train '{expected}' with `--stage train "
            f"--ablation {expected}` (it writes checkpoints/{stage_folder('train', expected)}/last.ckpt)")


def adopt_legacy_train_checkpoint(run_dir: Path) -> None:
    """Run dirs from before the per-row folders hold the `train` stage in `checkpoints/train`: move it to the folder
    of the row its hparams name, unless that folder exists (then it stays where it is, unused)."""
    legacy = run_dir / "checkpoints" / "train"
    if not (legacy / "last.ckpt").is_file():
        return
    mode = checkpoint_mode(legacy / "last.ckpt")
    target = legacy.with_name(stage_folder("train", mode)) if mode else None
    if target is not None and not target.exists():
        legacy.rename(target)
        print(f"[acis] {legacy} holds a '{mode}' model: moved it to {target}", file=sys.stderr)


def load(module_class, path: Path, mode: str | None = None):
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run the stage that writes it first (--stage {path.parent.name}) or point "
            "--pretrained-run at a run dir that has it"
        )
    state = checkpoint_state(path)
    if not state["complete"]:
        raise SystemExit(f"{path} is the checkpoint of an unfinished '{path.parent.name}' stage ({state['epochs']} "
                         f"epochs so far): finish it first by re-running the command that was interrupted")
    if mode is not None:
        check_mode(path, mode)
    return module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)


# DDP strategies that Lightning also offers with find_unused_parameters=True
_DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def stage_trainer(args, run: RunDirectory, stage: str, max_epochs: int, identity: dict,
                  parameters_sit_out: bool = False) -> pl.Trainer:
    """The stage's Trainer. `parameters_sit_out`: some backward passes leave trainable parameters without gradients
    (AC back-propagates the actor's loss with the critic toggled off and the critic's with the actor off), which DDP
    must be told of: a plain DDP strategy name becomes its find_unused_parameters_true variant."""
    strategy = args.strategy
    if parameters_sit_out and strategy in _DDP_STRATEGIES:
        strategy = f"{strategy}_find_unused_parameters_true"
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator=args.accelerator,
        devices=int(args.devices) if args.devices.isdigit() else args.devices,
        num_nodes=args.num_nodes,
        strategy=strategy,
        logger=CSVLogger(args.run_dir / "logs", name=stage),
        callbacks=[run.checkpoint_callback(stage, identity=identity, every_n_epochs=args.checkpoint_every,
                                           every_minutes=args.checkpoint_minutes),
                   TrainingProgress(f"ACIS {stage}", "batch")],
        plugins=[run.checkpoint_io()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        log_every_n_steps=5,
    )
    return trainer


def evaluate(benchmark, args, command, run_dir, data_dir, datamodule, synthetic, timings) -> dict:
    path = source_of(args, run_dir, "train")
    if not path.is_file():
        trained = sorted(p.parent.name.removeprefix("train-") for p in (run_dir / "checkpoints").glob("train-*/last.ckpt"))
        raise SystemExit(f"{path} is missing: no '{args.ablation}' model was trained in {run_dir} (trained there: "
                         f"{', '.join(trained) or 'none'}). Train it first with `--stage train --ablation "
                         f"{args.ablation}`, or evaluate a trained row with its own --ablation")
    module = load(ActorCriticModule, path, mode=args.ablation)
    # the card measures the weights as published: written to the Hub folder first (float16 where the profile stores
    # them so) and read back from it
    _, schedule = profile_settings(benchmark, args)
    module.to_segmenter(storage_dtype=schedule.storage_dtype).save_pretrained(run_dir / "model")
    segmenter = load_folder(run_dir / "model", expected_type="acis")
    if benchmark.eval_dataset is not None:
        dataset = benchmark.eval_dataset(data_dir)
    else:
        datamodule.setup("validate")
        dataset = datamodule.val_set
    start = time.perf_counter()
    summary, rows, examples = benchmark.evaluate(segmenter, dataset)
    eval_seconds = time.perf_counter() - start
    # the same evaluation of the actor before the last stage: what the `train` stage added
    before = load(ActorCriticModule, source_of(args, run_dir, "init")).to_segmenter()
    summary_before, rows_before, _ = benchmark.evaluate(before, dataset, examples=0)
    # the trivial baseline on the same foreground: its connected components as instances
    summary_baseline, rows_baseline, _ = benchmark.evaluate(ForegroundComponents(segmenter), dataset, examples=0)
    rows = [{**row, **{f"init_{key}": value for key, value in init.items() if key not in ("name",)},
             **{f"fg_components_{key}": value for key, value in base.items() if key not in ("name",)}}
            for row, init, base in zip(rows, rows_before, rows_baseline)]
    write_per_image(run_dir / "per_image.csv", rows)
    draw_prediction_order(run_dir / "prediction_order.png", examples, f"{benchmark.name} ({args.ablation})")
    metrics = {"ablation": module.hparams.mode, "split": benchmark.val_split_name, "images": len(rows), **summary,
               "before_train_stage": summary_before, "foreground_components": summary_baseline}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    data = (f"{benchmark.synthetic_description} written by the recipe (seed 0) to {data_dir}"
            if synthetic else str(data_dir))
    hardware = (f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads "
                f"({platform.processor() or 'unknown processor'}), shared with other jobs")
    training_time, pretrained_command = training_record(args, timings)
    results = {
        "model": benchmark.name,
        "method": "acis",
        "paper": PAPER,
        "paper_url": PAPER_URL,
        "benchmark": benchmark.title,
        "command": command,
        "hardware": hardware,
        "training_time": training_time,
        "pretrained_command": pretrained_command,
        "trained_on": f"{data}, {benchmark.val_split_name.replace('val', 'train')} split",
        "results": [{
            "task_type": "image-segmentation",
            "task_name": "Instance segmentation",
            "dataset_name": ("Synthetic " if synthetic else "") + benchmark.title,
            "dataset_type": benchmark.dataset_type,
            "dataset_split": benchmark.val_split_name,
            "data": f"{data}, {benchmark.val_split_name} split ({len(rows)} images)",
            "metrics": [
                {"type": kind, "name": name, "value": round(float(summary[key]), 4)}
                for key, (kind, name) in benchmark.metric_names.items()
            ],
        }],
        "paper_results": benchmark.paper_results,
        "notes": notes(benchmark, args, synthetic, module) + [
            f"Measured in the same evaluation before the '{args.ablation}' stage (the actor of the init stage, "
            "trained on its own rollouts from sampled states): " + ", ".join(
                f"{name} {summary_before[key]:.4g}" for key, (_, name) in benchmark.metric_names.items()) + "."
        ],
        "timings_s": {**timings, "eval": round(eval_seconds, 1)},
        "ablation": module.hparams.mode,  # what the weights were trained as (`load` checked it is the --ablation)
        "config": module.config.to_dict(),
        "synthetic": synthetic,
        "profile": profile_name(args),
        "comparison_table": comparison_table(benchmark, {
            f"this model ({args.ablation})": summary, "its init actor (before the last stage)": summary_before,
            "connected components of its foreground (trivial baseline)": summary_baseline}),
        "per_image_table": per_image_table(benchmark, rows),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(metrics))
    return results


def training_record(args, timings: dict) -> tuple[str, str | None]:
    """The card's training time per stage, with the stages taken from --pretrained-run at the times that run recorded,
    and that run's command (None without one): reproducing these weights needs both commands. A stage whose
    checkpoint records `train_seconds` is reported at that time, which covers all its epochs even when they were
    trained in several runs or directories; older checkpoints fall back to `timings.json`, which holds only what
    each invocation in this directory (or --pretrained-run) trained."""
    shared = shared_stages(args)
    base_timings, base_command = {}, None
    if shared:
        base = Path(args.pretrained_run)
        if (base / "timings.json").is_file():
            base_timings = json.loads((base / "timings.json").read_text())
        if (base / "results.json").is_file():
            base_command = json.loads((base / "results.json").read_text()).get("command")
        else:  # a run of some stages only: the last command that entered it
            base_command = (recorded_commands(base) or [None])[-1]
    parts, total, complete = [], 0.0, True
    for stage in STAGES[:4]:
        record = base_timings if stage in shared else timings
        seconds = record.get(stage)
        where = f" in {args.pretrained_run}" if stage in shared else ""
        weights = source_of(args, Path(args.run_dir), stage)
        state = checkpoint_state(weights) if weights.is_file() else {}
        if state.get("train_seconds") is not None:  # summed over every run these weights were trained in
            total += state["train_seconds"]
            parts.append(f"{stage} {state['train_seconds'] / 60:.1f} min (all {state['epochs']} epochs){where}")
            continue
        if seconds is None:
            complete = False
            parts.append(f"{stage} not recorded{where}")
            continue
        total += seconds
        first, last = record.get("epochs", {}).get(stage, (0, None))
        if first:  # continued from a checkpoint: the earlier epochs' time is not in this record
            complete = False
            where = f" (epochs {first}-{last} only){where}"
        parts.append(f"{stage} {seconds / 60:.1f} min{where}")
    summed = f"{total / 60:.0f} min in all" if complete else f"{total / 60:.0f} min for what was recorded"
    return f"{', '.join(parts)}; {summed}", base_command


def comparison_table(benchmark, summaries: dict[str, dict]) -> str:
    names = benchmark.metric_names
    lines = [markdown_row(["model", *(name for _, name in names.values())]), "|---" * (len(names) + 1) + "|"]
    for label, summary in summaries.items():
        lines.append(markdown_row([label, *(f"{summary[key]:.3f}" for key in names)]))
    return "\n".join(lines)


def per_image_table(benchmark, rows: list[dict]) -> str:
    """One line per image: counts, then each metric for the model, its init actor and the trivial baseline."""
    names = benchmark.metric_names
    header = ["image", "instances", "predicted"]
    for key, (_, name) in names.items():
        header += [name, f"{name} (init)", f"{name} (fg components)"]
    lines = [markdown_row(header), "|---" * len(header) + "|"]
    for row in rows:
        cells = [row["name"], str(row["ground_truth"]), str(row["predicted"])]
        for key in names:
            cells += [f"{row[key]:.3f}", f"{row[f'init_{key}']:.3f}", f"{row[f'fg_components_{key}']:.3f}"]
        lines.append(markdown_row(cells))
    return "\n".join(lines)


def notes(benchmark, args, synthetic, module) -> list[str]:
    """What the card says about how this run departs from the paper. Measured figures never appear here: they come
    from the run's own records (metrics.json, per_image.csv, table1.json)."""
    profile = profile_name(args)
    config, paper = module.config, benchmark.paper_config
    _, schedule = profile_settings(benchmark, args)
    items = [
        f"Ablation row trained in the last stage: {args.ablation}; profile '{profile}'.",
        "The critic target uses the paper's discount gamma^(i-t) with gamma = 0.9; the authors' train.lua squares "
        "gamma at every step.",
        "The actor back-propagates one step (the authors' -markov keeps two); critic and actor both update on actor "
        "iterations (the authors skip the critic there).",
        "The termination unit is one 'continue' logit trained with BCE as in the paper (the authors' code: 2-way CE); "
        "inference stops when P(stop) > 0.7 and binarises masks at 0.3 (authors' defaults); a pixel covered by "
        "several masks goes to the first one (the accumulated-mask semantics); the reward binarises at 0.5.",
        "Augmentation (rotations, flips) is done on the fly instead of the authors' 80 GB of pre-generated data.",
    ]
    if config.preproc_backbone == "fcn":
        items.append("The pre-processing FCN keeps the FCN-8s score fusion but uses one conv per block, a 3x3 fc6 and "
                     "bilinear upsampling, trained from scratch (the paper's FCN starts from ImageNet VGG-16).")
    else:
        items.append(f"The pre-processing FCN-8s fuses scores from the stride-8/16/32 features of an ImageNet "
                     f"{config.preproc_backbone} (weights: {config.backbone_weights}; frozen BatchNorm, stem and first "
                     "two stages frozen) in place of VGG-16, with bilinear upsampling.")
    if schedule.framing == "whole":
        items.append(f"Training items are whole plants resized to {config.height}x{config.width} (the paper: x2 "
                     "downscale and a 224x224 centre crop), exactly what segment() does with a full image, so no border "
                     "leaf is cut; evaluation segments each full-resolution image and scores it against the full "
                     "label image.")
    if synthetic:
        items.insert(0, (
            f"Trained and measured on synthetic data ({benchmark.synthetic_description}), not on the real benchmark: "
            "the numbers are not comparable with the paper's."
        ))
    if profile == "paper":
        items.append(
            "Schedules as the authors' scripts (seeds.md Sec. 4), in each stage's own epochs: cVAE lr 2e-4, 2e-5 from "
            "epoch 400, 2e-6 from 600 (lambda_KL 1); init lr 5e-4 with lambda_KL 0.1, 0 from epoch 400, the actor on "
            "latent means throughout; AC length 5 / lr 5e-4 / beta 1e-4, then the authors' steps at their epochs "
            "5000, 7000, 8000, 9000 counted from their AC start (601); BL rows lengths 5 -> 10 -> 21. The paper gives "
            "no KITTI schedule: KITTI uses CVPPP's."
        )
    if profile != "paper":
        items.append(
            f"CPU-sized network: input {config.height}x{config.width} (paper {paper.height}x{paper.width}), encoder "
            f"widths {config.encoder_widths} (paper {paper.encoder_widths}), LSTM {config.rnn_layers}x{config.rnn_size} "
            f"(paper 2x512), decoder {config.decoder_widths}, critic {config.critic_widths}, bottleneck grid "
            f"{config.bottom[0]}x{config.bottom[1]} (paper 7x7); epochs per stage preproc {schedule.preproc_epochs}, "
            f"cVAE {schedule.cvae_epochs}, init {schedule.init_epochs}, last stage "
            f"{args.train_epochs or schedule.train_epochs} (paper 300 / 800 / 600 / 9400) and a shorter critic "
            "warm-up and sequence curriculum. BatchNorm after every conv (not in the paper) and the mask logit's "
            f"bias initialised to -4 let the small cVAE learn within minutes; cVAE lr {schedule.cvae_lr} and "
            f"lambda_KL {schedule.cvae_lambda_kl} (paper 2e-4 and 1, which collapsed the posterior in this budget)."
        )
        items.append((
            "Init stage (deviation): instead of the authors' length-1 BCE stage, which only ever shows the actor "
            "M_t = 0 and the 'continue' target (on synthetic rosettes it never learnt to move on from covered leaves "
            "or to stop), each update starts from a state sampled from the ground truth (k instances covered, all of "
            f"them with probability 0.2; M_1 = 0 on a {schedule.init_rollout_fraction:g} share of the updates) and "
            f"trains {schedule.init_rollout} steps of the actor's own rollout, M_{{t+1}} = max(M_t, D(mu_t)) as at "
            "inference, with one-step truncated gradients. Each step's BCE target is the instance neither half "
            "covered nor already a target earlier in the episode with the best soft Dice (the largest while none "
            "reaches 0.2), its termination target 'continue' iff such an instance is left."
        ))
        items.append((
            f"Last stage: actor lr {schedule.ac_lr or schedule.lr} for every row, critic lr "
            f"{schedule.critic_lr_factor}x the actor's (paper 2x), beta {schedule.ac_beta_kl} (paper 1e-4), critic "
            f"warm-up {schedule.critic_warmup} updates, actor every {schedule.critic_iter} updates: with the paper's "
            "ratios the actor exploited a critic that had seen ~100 updates and drifted to one image-independent blob "
            "on synthetic rosettes."
        ))
    if schedule.init_dice_weight:
        items.append(f"Init stage loss (deviation): BCE plus {schedule.init_dice_weight:g} x the soft-Dice loss per "
                     "matched instance (the paper: BCE), so that masks of small instances do not stay faint below the "
                     "0.3 binarisation.")
    if schedule.init_train_decoder:
        items.append("Init stage (deviation): the cVAE decoder is fine-tuned with the actor (BatchNorm statistics "
                     "frozen); the last stage keeps that decoder frozen, as the paper keeps the pre-trained one.")
    if schedule.critic_repeats and args.ablation.startswith("AC"):
        items.append("Critic (deviation): beside the actor's own actions it regresses, at every step t >= 1, the re-take "
                     "of a uniformly drawn earlier mask of the episode. That mask lies inside M_t, so Eq. 3 leaves the "
                     "state unchanged and its target is exact up to the state's value: the potential change it makes "
                     "plus gamma times the return the episode collected from that state.")
    if schedule.init_sample_actions:
        items.append(f"Init stage: every step decodes a reparameterised sample of the policy, so the mask loss trains "
                     f"its sigma, the last stage's exploration, as the authors' init stage samples (they use lambda_KL "
                     f"0.1 while sampling, then decode the mean with lambda_KL 0; here beta {schedule.beta_kl:g} "
                     "throughout and no mean-decoding phase, in which a nonzero beta would pull sigma back to 1).")
    return items


def write_per_image(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def draw_prediction_order(path: Path, examples: list[tuple], title: str) -> None:
    """Fig. 4 style: image, ground truth, prediction with the colour giving the step it was predicted at."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(examples))
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), squeeze=False)
    for row, (name, image, gt, labels) in enumerate(examples):
        order_map = np.ma.masked_where(labels == 0, labels)
        gt_map = np.ma.masked_where(gt == 0, gt)
        axes[row, 0].imshow(image)
        axes[row, 1].imshow(gt_map, cmap="tab20", interpolation="nearest")
        shown = axes[row, 2].imshow(order_map, cmap="viridis", interpolation="nearest", vmin=1, vmax=max(2, labels.max()))
        axes[row, 0].set_ylabel(name, fontsize=8)
        figure.colorbar(shown, ax=axes[row, 2], fraction=0.046, label="step")
    for axis, heading in zip(axes[0], ("image", "ground truth", "prediction order")):
        axis.set_title(heading, fontsize=9)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
