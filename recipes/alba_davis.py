"""ALBA on DAVIS, unsupervised (zero-shot) multi-object VOS: cache proposals and flow, supervised warm-up from the greedy
oracle, REINFORCE on the J&F video reward, then Table 1 of the paper on held-out videos.

    python -m recipes.alba_davis                               # embedded synthetic DAVIS 2017 videos, CPU minutes
    python -m recipes.alba_davis --data-dir DAVIS2017          # real DAVIS 2017: train on train, evaluate on val
    python -m recipes.alba_davis --data-dir ../shared/realdata/DAVIS2016 --year 2016 \\
        --extra-first-frames ../shared/realdata/DAVIS --synthetic-train 8 --run-dir runs/alba-davis

Stages (each resumable; the run directory keeps checkpoints per stage and the input cache):
1. inputs: proposals (`zoo.vision.proposals`, score >= 0.05, the first `--max-proposals` by confidence) and DIS flow
   for every frame used, cached in `--cache-dir` (a second run does no detector call);
2. warm-up: both networks on the greedy oracle's targets (`zoo.alba.module`, mode "warmup");
3. RL: REINFORCE from the warm-up weights (mode "rl", `--rl-policies`, the paper's "assignment" by default);
4. Table 1 rows on the evaluation videos (`--rows`): vanilla proposals, + selection, + selection and overlap
   assignment (weight-free, not in the paper), + the simple pairwise assignment network A (its own warm-up),
   + relational assignment (supervised), + RL, and the greedy oracle (upper bound). Unsupervised J&F with the official Hungarian matching.

Writes to RUN_DIR: results/<row>/<seq>/%05d.png (indexed, DAVIS layout) and official CSVs per row, table1.md,
per_sequence.csv, metrics.json, results.json, grouping.png (a few frames of one video coloured by the RL grouping
beside the ground truth), model/ (the RL model, loadable with `zoo.hub.load`).
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
from datamodules.vos_io import write_label_png
from recipes._progress import TrainingProgress, expected_warnings, progress, quiet_lightning
from recipes._run_dir import EpochSeededSampler, RunDirectory, hardware, is_launcher
from zoo.alba.env import greedy_oracle
from zoo.alba.inputs import EpisodeBuilder
from zoo.alba.model import ALBASegmenter
from zoo.alba.module import CREDITS, RL_POLICIES, ALBAModule, Episode
from zoo.alba.networks import ALBANetConfig
from zoo.evaluation.davis import write_official_csvs
from zoo.metrics.davis import evaluate_unsupervised, summarize

PAPER = "ALBA: Reinforcement Learning for Video Object Segmentation (Gowda, Eustratiadis et al., BMVC 2020)"
PAPER_URL = "https://arxiv.org/abs/2005.13039"
# seeds.md §3 marks these DAVIS 2017 val figures UNVERIFIED (quoted from memory, Table 2 of arXiv 2005.13039).
PAPER_UNVERIFIED = {"J&F-Mean": 58.4, "J-Mean": 56.6, "F-Mean": 60.2}
# row slug: (title, which networks, select rule, assign rule)
BENCHMARKS = ("davis", "fbms", "youtube-vos")
ROWS = {
    "vanilla": ("Vanilla proposals (every proposal a new id)", "warmup", "all", "rank"),
    "selection": ("+ selection network S (new id per accepted proposal)", "warmup", "network", "rank"),
    "overlap": ("+ S + overlap assignment (weight-free: previous-frame mask IoU)", "warmup", "network", "overlap"),
    "pairwise": ("+ S + simple pairwise assignment network A (supervised)", "pairwise", "network", "pairwise"),
    "supervised": ("+ S + relational assignment, supervised warm-up only", "warmup", "network", "network"),
    "rl": ("+ S + relational assignment + RL (ALBA)", "rl", "network", "network"),
    "oracle": ("Greedy oracle (upper bound, uses the ground truth)", None, None, None),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recipes.alba_davis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--benchmark", default="davis", choices=BENCHMARKS,
                      help="davis (unsupervised); fbms (FBMS-59: Trainingset / Testset, sparse ground truth); "
                           "youtube-vos (zero-shot: the first-frame mask unused, the RVOS split of YouTube-VOS train "
                           "given by --train-videos / --eval-videos)")
    data.add_argument("--data-dir", type=Path, default=None,
                      help="benchmark root (default: embedded synthetic videos in the benchmark's layout)")
    data.add_argument("--train-videos", type=Path, default=None,
                      help="youtube-vos: RVOS train-train-meta.json (or a text list of video ids)")
    data.add_argument("--eval-videos", type=Path, default=None,
                      help="youtube-vos: RVOS train-val-meta.json (or a text list of video ids)")
    data.add_argument("--year", type=int, default=2017, choices=(2016, 2017))
    data.add_argument("--train-split", default="train")
    data.add_argument("--eval-split", default="val")
    data.add_argument("--extra-first-frames", type=Path, default=None,
                      help="a DAVIS 2017 root whose annotated first frames join the warm-up as one-frame episodes "
                           "(sequences named like an evaluation video are left out)")
    data.add_argument("--synthetic-train", type=int, default=None,
                      help="synthetic training videos (default: 8 without --data-dir, 0 with it)")
    data.add_argument("--synthetic-val", type=int, default=3, help="synthetic evaluation videos (no --data-dir)")
    data.add_argument("--synthetic-frames", type=int, default=16)
    data.add_argument("--synthetic-size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    data.add_argument("--clip-length", type=int, default=6, help="frames per training episode")
    data.add_argument("--max-proposals", type=int, default=10, help="proposals per frame, by confidence")
    data.add_argument("--proposal-model", default="auto", help="auto | maskrcnn_resnet50_fpn[_v2] | segmenter-vos")
    net = parser.add_argument_group("networks")
    net.add_argument("--width", type=float, default=0.25, help="channel / FC width multiplier (1.0 = the paper)")
    net.add_argument("--size", type=int, default=96, help="crop side (256 = the paper)")
    net.add_argument("--no-rgb", action="store_true", help="the authors' code's inputs: no RGB channels")
    train = parser.add_argument_group("training")
    train.add_argument("--warmup-epochs", type=int, default=6)
    train.add_argument("--warmup-lr", type=float, default=1e-4)
    train.add_argument("--rl-updates", type=int, default=30)
    train.add_argument("--rl-lr", type=float, default=1e-4,
                       help="the authors' code: 1e-5, which moved no arg-max decision in 30 CPU updates here")
    train.add_argument("--rl-policies", default="assignment", choices=RL_POLICIES)
    train.add_argument("--credit", default="group", choices=CREDITS,
                       help="group: each decision against the other rollouts of its video (this port's default); "
                            "episode: returns normalised per episode (the paper)")
    train.add_argument("--rollouts", type=int, default=4, help="rollouts per video and update (the paper: 1)")
    train.add_argument("--episodes-per-batch", type=int, default=4, help="warm-up videos per update (paper: 16)")
    train.add_argument("--rl-episodes-per-batch", type=int, default=2, help="RL videos per update (paper: 16)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--accelerator", default="cpu")
    train.add_argument("--devices", default="1")
    train.add_argument("--strategy", default="auto")
    run = parser.add_argument_group("run")
    run.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    run.add_argument("--run-dir", type=Path, default=Path("runs/alba-davis-default"))
    run.add_argument("--cache-dir", type=Path, default=None, help="proposal / flow cache (default RUN_DIR/cache)")
    run.add_argument("--restart", action="store_true", help="discard the run directory's checkpoints")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


# -- data ------------------------------------------------------------------------------------------------------------


def video_list(path: Path) -> list[str]:
    """Video ids from an RVOS meta file ({"videos": {id: ...}}) or a text file with one id per line."""
    text = Path(path).read_text()
    if path.suffix == ".json":
        return sorted(json.loads(text)["videos"])
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_benchmark(args, root: Path, split: str) -> list:
    """The sequences of one split, in the benchmark's own layout, with the unsupervised ground truth."""
    if args.benchmark == "davis":
        return list(DAVIS(root, args.year, split, task="unsupervised"))
    if args.benchmark == "fbms":
        from datamodules.fbms import FBMS

        return list(FBMS(root, {"train": "Trainingset", "val": "Testset"}.get(split, split)))
    from datamodules.youtube_vos import YouTubeVOS

    lists = {"train": args.train_videos, "val": args.eval_videos}
    if lists.get(split) is None:
        raise ValueError("youtube-vos needs --train-videos and --eval-videos (RVOS train-train-meta.json and "
                         "train-val-meta.json: both splits come from YouTube-VOS train)")
    return list(YouTubeVOS(root, "train", videos=video_list(lists[split])))


def synthetic_benchmark_root(args, num_train: int) -> tuple[Path, str, str]:
    """A synthetic tree in the benchmark's layout and the names of its training and evaluation splits."""
    from datamodules.synthetic_vos import synthetic_tree, write_fbms, write_youtube_vos

    height, width = args.synthetic_size
    sizes = {"num_frames": args.synthetic_frames, "height": height, "width": width, "seed": args.seed}
    if args.benchmark == "davis":
        return synthetic_root("davis2017", num_train=num_train, num_val=args.synthetic_val, **sizes), "train", "val"
    if args.benchmark == "fbms":
        def write(root, **options):
            write_fbms(root, "Trainingset", num_sequences=max(num_train, 1), label_step=4, **options)
            write_fbms(root, "Testset", num_sequences=args.synthetic_val, label_step=4, prefix="synthtest",
                       **{**options, "seed": options["seed"] + 99})
        return synthetic_tree("fbms-train-test", write, **sizes), "Trainingset", "Testset"

    def write_train(root, **options):
        write_youtube_vos(root, "train", num_videos=num_train + args.synthetic_val, **options)
        videos = sorted(json.loads((root / "train" / "meta.json").read_text())["videos"])
        (root / "train-train.txt").write_text("".join(f"{v}\n" for v in videos[:num_train]))
        (root / "train-val.txt").write_text("".join(f"{v}\n" for v in videos[num_train:]))
    root = synthetic_tree("youtube-vos-train-split", write_train, **sizes)
    args.train_videos, args.eval_videos = root / "train-train.txt", root / "train-val.txt"
    return root, "train", "val"


def load_data(args) -> tuple[list, list, list, str, str]:
    """Training sequences, evaluation sequences, one-frame extras [(sequence, frame)], and two descriptions."""
    synthetic_train = args.synthetic_train if args.synthetic_train is not None else (0 if args.data_dir else 8)
    train, evaluation, trained_on, described = [], [], [], ""
    name = {"davis": f"DAVIS {args.year}", "fbms": "FBMS-59", "youtube-vos": "YouTube-VOS (RVOS split)"}[args.benchmark]
    if args.data_dir is not None:
        train += read_benchmark(args, args.data_dir, args.train_split)
        evaluation = read_benchmark(args, args.data_dir, args.eval_split)
        described = f"{name} {args.eval_split} ({args.data_dir})"
        trained_on.append(f"{name} {args.train_split} ({len(train)} videos, "
                          f"{sum(len(s) for s in train)} frames: {', '.join(s.name for s in train)})")
    if synthetic_train or args.data_dir is None:
        height, width = args.synthetic_size
        root, train_split, eval_split = synthetic_benchmark_root(args, synthetic_train)
        saved = args.year
        args.year = 2017 if args.benchmark == "davis" else args.year
        train += read_benchmark(args, root, train_split) if synthetic_train else []
        synthetic_name = "DAVIS 2017" if args.benchmark == "davis" else name  # the synthetic DAVIS tree is 2017's
        trained_on.append(f"{synthetic_train} synthetic {synthetic_name}-layout videos ({args.synthetic_frames} "
                          f"frames, {height}x{width})")
        if args.data_dir is None:
            evaluation = read_benchmark(args, root, eval_split)
            described = f"synthetic {synthetic_name}-layout {eval_split} ({len(evaluation)} videos, {height}x{width})"
        args.year = saved
    extras = []
    if args.extra_first_frames is not None:
        held_out = {s.name for s in evaluation}
        for sequence in DAVIS(args.extra_first_frames, 2017, None):
            if sequence.name not in held_out and sequence.has_mask(0) and sequence.require_mask(0).max() > 0:
                extras.append(sequence)
        trained_on.append(f"the annotated first frames of {len(extras)} DAVIS 2017 sequences "
                          f"({args.extra_first_frames}, semi-supervised annotations, warm-up only)")
    overlap = {s.name for s in train} & {s.name for s in evaluation}
    if overlap:
        raise ValueError(f"sequences {sorted(overlap)} are in both the training and the evaluation split")
    return train, evaluation, extras, described, "; ".join(trained_on)


def training_clips(sequences, length: int) -> list[tuple]:
    """(sequence, frame indices) of consecutive annotated frames whose first frame holds an object (the reward's
    matching needs one), non-overlapping, the last clip of a video ending at its last annotated frame. With sparse
    ground truth (FBMS: about every 20th frame) a clip is consecutive *annotated* frames."""
    clips = []
    for sequence in sequences:
        annotated = sequence.annotated_frames
        count = len(annotated)
        starts = list(range(0, max(count - length, 0) + 1, length))
        if starts and starts[-1] + length < count:
            starts.append(count - length)
        for start in starts:
            indices = annotated[start:start + length]
            if indices and sequence.require_mask(indices[0]).max() > 0:
                clips.append((sequence, indices))
    return clips


def materialise(builder: EpisodeBuilder, clips, bar, prefix: str = "") -> list[Episode]:
    """Episodes held in memory; `prefix` keeps the cache entries of another dataset's same-named videos apart."""
    episodes = []
    for sequence, indices in clips:
        lazy = builder.episode(prefix + sequence.name, sequence=sequence, indices=indices)
        frames = []
        for position in range(len(lazy.frames)):
            frames.append(lazy.frames[position])
            bar.update(1)
        episodes.append(Episode(frames, name=f"{sequence.name}@{indices[0]}"))
    return episodes


# -- training --------------------------------------------------------------------------------------------------------


def fit(module: ALBAModule, episodes: list[Episode], args, run: RunDirectory, stage: str, identity: dict,
        batch_size: int, **limits) -> ALBAModule:
    loader = torch.utils.data.DataLoader(episodes, batch_size=batch_size, collate_fn=list,
                                         sampler=EpochSeededSampler(len(episodes), args.seed))
    trainer = pl.Trainer(
        accelerator=args.accelerator, devices=int(args.devices) if args.devices.isdigit() else args.devices,
        strategy=args.strategy, logger=CSVLogger(args.run_dir, name="logs", version=stage),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        num_sanity_val_steps=0,
        callbacks=[run.checkpoint_callback(stage, identity=identity, every_n_epochs=1, every_minutes=5),
                   TrainingProgress(f"ALBA {stage}", "update")],
        plugins=[run.checkpoint_io()], **limits,
    )
    with expected_warnings("The number of training batches", "does not have many workers"):
        trainer.fit(module, loader, ckpt_path=run.resume_checkpoint(stage, identity=identity))
    return module.cpu().eval()


# -- evaluation ------------------------------------------------------------------------------------------------------


def sequence_scores(name: str, truth: np.ndarray, labels: np.ndarray) -> tuple[list[str], np.ndarray, dict]:
    result = evaluate_unsupervised(truth, labels, name)
    rows = result.statistics()
    return list(result.object_names), rows, {
        "J&F-Mean": float(np.mean((rows[:, 0] + rows[:, 3]) / 2)), "J-Mean": float(rows[:, 0].mean()),
        "F-Mean": float(rows[:, 3].mean()), "objects": len(result.object_names),
        "predicted_ids": int(len(np.setdiff1d(np.unique(labels), [0]))),
    }


def score_rows(args, rows: list[str], sequences, builder: EpisodeBuilder, policies: dict, bar) -> tuple[dict, dict]:
    measured, grouped = {slug: {"names": [], "stats": [], "per_sequence": {}, "seconds": 0.0, "frames": 0}
                         for slug in rows}, {}
    for sequence in sequences:
        annotated = sequence.annotated_frames
        # read from the cache once for every row (the frames also keep their selection crops between rows)
        episode = Episode(builder.episode(sequence.name, sequence=sequence).frames.materialise(), sequence.name)
        truth = np.stack([sequence.require_mask(i) for i in annotated])
        for slug in rows:
            _, networks, select, assign = ROWS[slug]
            started = time.perf_counter()
            if networks is None:  # the oracle needs the ground truth: it groups the annotated frames only
                labels = greedy_oracle([episode.frames[i].masks for i in annotated], truth,
                                       policies["warmup"].config.max_objects).labels
                written = annotated
            else:  # every frame, scored where the ground truth is (all frames on DAVIS)
                labels = policies[networks].rollout(episode, select=select, assign=assign).labels
                written = list(range(len(sequence)))
            elapsed = time.perf_counter() - started
            for index, label in zip(written, labels):
                write_label_png(args.run_dir / "results" / slug / sequence.name / f"{sequence.frame_names[index]}.png",
                                label)
            scored = labels if networks is None else labels[annotated]
            names, statistics, scores = sequence_scores(sequence.name, truth, scored)
            row = measured[slug]
            row["names"] += names
            row["stats"].append(statistics)
            row["per_sequence"][sequence.name] = {**scores, "frames": len(labels), "scored_frames": len(annotated)}
            row["seconds"] += elapsed
            row["frames"] += len(labels)
            if slug == "rl":
                grouped[sequence.name] = labels
        bar.update(1)
    results = {}
    for slug, row in measured.items():
        summary = summarize(row["names"], np.concatenate(row["stats"]))
        write_official_csvs(summary, args.run_dir / "results" / slug, args.eval_split)
        results[slug] = {"title": ROWS[slug][0], "summary": summary, "per_sequence": row["per_sequence"],
                         "grouping_seconds_per_frame": row["seconds"] / max(row["frames"], 1)}
    return results, grouped


def plot_grouping(sequence, labels: np.ndarray, path: Path, count: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodules.vos_io import davis_palette

    palette = davis_palette()
    picks = np.unique(np.linspace(0, len(labels) - 1, count).round().astype(int))
    figure, axes = plt.subplots(2, len(picks), figsize=(3.0 * len(picks), 4.6), squeeze=False)
    for column, t in enumerate(picks):
        frame = sequence.frame(int(t))
        truth = sequence.mask(int(t))
        truth = np.zeros_like(labels[t]) if truth is None else truth  # sparse ground truth (FBMS)
        for row, (ids, title) in enumerate(((labels[t], "ALBA (RL)"), (truth, "truth"))):
            ids = np.where(ids == 255, 0, ids)
            shown = np.where(ids[..., None] > 0, (0.45 * frame + 0.55 * palette[ids]).astype(np.uint8), frame)
            axes[row, column].imshow(shown)
            axes[row, column].set_title(f"{title}, frame {t}", fontsize=8)
            axes[row, column].axis("off")
    figure.suptitle(f"{sequence.name}: one colour per predicted id (top), per ground-truth object (bottom)",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- outputs ---------------------------------------------------------------------------------------------------------


def table_markdown(measured: dict) -> str:
    lines = ["| row | J&F-Mean | J-Mean | F-Mean |", "|---|---|---|---|"]
    for row in measured.values():
        s = row["summary"]
        lines.append(f"| {row['title']} | {s['J&F-Mean']:.3f} | {s['J-Mean']:.3f} | {s['F-Mean']:.3f} |")
    return "\n".join(lines)


def finding(measured: dict) -> str:
    score = {slug: row["summary"]["J&F-Mean"] for slug, row in measured.items()}
    if "rl" not in score or "supervised" not in score:
        return ""
    delta = score["rl"] - score["supervised"]
    parts = [f"RL {'raised' if delta > 0 else 'did not raise'} the unsupervised J&F over the supervised warm-up "
             f"({score['supervised']:.3f} -> {score['rl']:.3f}, {100 * delta:+.1f} points; the paper reports about "
             f"+6 on DAVIS 2017)"]
    if "vanilla" in score:
        parts.append(f"vanilla proposals score {score['vanilla']:.3f}")
    if "oracle" in score:
        parts.append(f"the greedy oracle {score['oracle']:.3f}")
    return "; ".join(parts) + "."


def write_outputs(args, argv, measured: dict, described: str, trained_on: str, sequences, builder: EpisodeBuilder,
                  seconds: dict, counts: dict) -> dict:
    run_dir = args.run_dir
    (run_dir / "table1.md").write_text(table_markdown(measured) + "\n")
    metrics = {slug: {"title": row["title"], "summary": row["summary"], "per_sequence": row["per_sequence"],
                      "grouping_seconds_per_frame": row["grouping_seconds_per_frame"]}
               for slug, row in measured.items()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(run_dir / "per_sequence.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["sequence", "frames", "objects", *(f"{slug} J&F" for slug in measured)])
        for s in sequences:
            first = next(iter(measured.values()))["per_sequence"][s.name]
            writer.writerow([s.name, first["frames"], first["objects"],
                             *(f"{row['per_sequence'][s.name]['J&F-Mean']:.4f}" for row in measured.values())])
    titles = {slug: row["title"] for slug, row in measured.items()}
    per_sequence_table = "\n".join(
        ["| sequence (objects, frames) | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
        + [f"| {s.name} ({measured[next(iter(measured))]['per_sequence'][s.name]['objects']}, {len(s)}) | "
           + " | ".join(f"{measured[slug]['per_sequence'][s.name]['J&F-Mean']:.3f}" for slug in titles) + " |"
           for s in sequences])
    own = "rl" if "rl" in measured else next(iter(measured))
    results = [{
        "task_type": "video-object-segmentation",
        "task_name": f"Unsupervised multi-object VOS, Table 1 row: {measured[own]['title']}",
        "dataset_name": described, "dataset_type": "davis",
        "dataset_split": f"{args.eval_split}, never trained on or used for model selection",
        "data": ", ".join(f"{s.name} ({len(s)} frames)" for s in sequences),
        "metrics": [{"type": key.lower().replace("&", "_and_").replace("-", "_"), "name": key,
                     "value": measured[own]["summary"][key]} for key in ("J&F-Mean", "J-Mean", "F-Mean")],
    }]
    summary = {
        "finding": finding(measured),
        "model": "alba-davis", "method": "alba", "paper": PAPER, "paper_url": PAPER_URL,
        "benchmark": {"davis": f"DAVIS {args.year if args.data_dir else '2017 (synthetic)'} unsupervised",
                      "fbms": "FBMS-59" + ("" if args.data_dir else " (synthetic)"),
                      "youtube-vos": "YouTube-VOS zero-shot" + ("" if args.data_dir else " (synthetic)")}[args.benchmark],
        "command": "python -m recipes.alba_davis " + shlex.join(argv), "hardware": hardware(args.accelerator),
        "synthetic": args.data_dir is None, "trained_on": trained_on, "seconds": seconds, "counts": counts,
        "inputs": builder.describe(), "table1": table_markdown(measured), "per_sequence_table": per_sequence_table,
        "results": results,
        "paper_results": [{"dataset_name": "DAVIS 2017 val (paper, Table 2; UNVERIFIED, seeds.md §3)",
                           "metrics": [{"type": key, "value": value} for key, value in PAPER_UNVERIFIED.items()]}],
        "notes": notes(args),
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def notes(args) -> list[str]:
    return [
        f"Networks at width {args.width} and {args.size} x {args.size} crops (the paper: 1.0 and 256), "
        f"{'no RGB channel (the authors code)' if args.no_rgb else 'RGB + flow + masks (the paper)'}.",
        f"Proposals: the first {args.max_proposals} per frame by confidence at score >= 0.05 (the paper: all above "
        "0.05); DIS flow instead of PWC-Net.",
        f"Warm-up {args.warmup_epochs} epochs of {args.episodes_per_batch} videos per update at lr {args.warmup_lr}; "
        f"RL {args.rl_updates} updates of {args.rl_episodes_per_batch} videos ({args.clip_length}-frame clips) x "
        f"{args.rollouts} rollouts at lr {args.rl_lr}, policy '{args.rl_policies}' (the paper: batch 16, the "
        "assignment policy).",
        {"group": "RL credit: each decision's frame return against the mean and std of the other rollouts of the "
                   "same video from that frame (not the paper's per-episode normalisation, which favours early frames "
                   "whatever was done there and, in one of this port's test settings, saturated the policy).",
         "episode": "RL credit: frame returns normalised per episode (the paper)."}[args.credit],
        "Row A: the assignment network's per-slot scores trained as independent same-object probabilities (binary "
        "cross-entropy, no softmax over slots), with its own selection network, warmed up like the others; the "
        "overlap row is a weight-free reference (previous-frame mask IoU > 0.2), not in the paper.",
        "Evaluation: arg-max actions on whole videos; the last RL weights (no selection on evaluation videos).",
    ]


# -- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    try:
        train, evaluation, extras, described, trained_on = load_data(args)
    except (FileNotFoundError, ValueError) as error:
        layout = {"davis": "a DAVIS root: JPEGImages/480p/, Annotations[_unsupervised]/480p/, ImageSets/",
                  "fbms": "an FBMS-59 root: Trainingset/, Testset/",
                  "youtube-vos": "a YouTube-VOS root holding train/JPEGImages, train/Annotations"}[args.benchmark]
        parser.error(f"{error} (--data-dir takes {layout}; leave it out for the embedded synthetic videos)")
    print(f"{len(train)} training videos (+{len(extras)} first frames); evaluating on {described}")
    cache_dir = args.cache_dir or args.run_dir / "cache"
    from zoo.vision.flow import FlowEstimator
    from zoo.vision.proposals import ProposalGenerator

    builder = EpisodeBuilder(ProposalGenerator(args.proposal_model, cache_dir=cache_dir),
                             FlowEstimator("dis", cache_dir=cache_dir), max_proposals=args.max_proposals)
    config = ALBANetConfig(width=args.width, size=args.size, rgb=not args.no_rgb)
    seconds, counts = {}, {}
    with RunDirectory(args.run_dir, restart=args.restart, command=["python", "-m", "recipes.alba_davis", *argv]) as run:
        clips = training_clips(train, args.clip_length)
        singles = [(sequence, [0]) for sequence in extras]
        started = time.perf_counter()
        total = sum(len(i) for _, i in clips + singles) + sum(len(s) for s in evaluation)
        with progress(total=total, desc="proposals + flow (cached)", unit="frame") as bar:
            rl_episodes = materialise(builder, clips, bar)
            single_episodes = materialise(builder, singles, bar, prefix="davis2017-first-frame-")
            for sequence in evaluation:  # fill the cache now, so evaluation times only the grouping
                lazy = builder.episode(sequence.name, sequence=sequence)
                for position in range(len(lazy.frames)):
                    lazy.frames[position]
                    bar.update(1)
        seconds["inputs"] = time.perf_counter() - started
        counts.update(detector_calls=builder.detector_calls, flow_calls=builder.flow_calls,
                      training_clips=len(rl_episodes), first_frame_episodes=len(single_episodes),
                      training_frames=sum(len(e) for e in rl_episodes + single_episodes))
        print(f"inputs: {builder.detector_calls} detector calls, {builder.flow_calls} flow calls "
              f"({seconds['inputs']:.0f} s)")
        identity = {"net": config.to_dict(), "train": sorted({s.name for s in train}),
                    "extras": sorted(s.name for s in extras), "clip_length": args.clip_length,
                    "episodes_per_batch": args.episodes_per_batch, "inputs": builder.describe()}
        started = time.perf_counter()
        warmup = ALBAModule(net=config, mode="warmup", lr=args.warmup_lr, seed=args.seed)
        warmup = fit(warmup, rl_episodes + single_episodes, args, run, "warmup",
                     {**identity, "hparams": dict(warmup.hparams)}, args.episodes_per_batch,
                     max_epochs=args.warmup_epochs)
        seconds["warmup"] = time.perf_counter() - started
        pairwise = None
        if "pairwise" in args.rows:
            started = time.perf_counter()
            pairwise = ALBAModule(net=config, mode="warmup", lr=args.warmup_lr, seed=args.seed,
                                  assignment_loss="pairwise")
            pairwise = fit(pairwise, rl_episodes + single_episodes, args, run, "warmup-pairwise",
                           {**identity, "hparams": dict(pairwise.hparams)}, args.episodes_per_batch,
                           max_epochs=args.warmup_epochs)
            seconds["warmup_pairwise"] = time.perf_counter() - started
        started = time.perf_counter()
        rl = ALBAModule(net=config, mode="rl", rl_policies=args.rl_policies, lr=args.rl_lr, seed=args.seed,
                        credit=args.credit, rollouts=args.rollouts)
        rl.load_networks({"state_dict": warmup.state_dict()})
        multi_frame = [e for e in rl_episodes if len(e) > 1]
        rl = fit(rl, multi_frame, args, run, "rl", {**identity, "hparams": dict(rl.hparams)},
                 args.rl_episodes_per_batch, max_steps=args.rl_updates, max_epochs=-1)
        seconds["rl"] = time.perf_counter() - started
        counts.update(rl_updates=int(rl.updates), rl_decisions=int(rl.decisions))
    if not is_launcher():  # other DDP processes only help training
        sys.exit(0)
    model = ALBASegmenter(net=config.to_dict(), proposal_model=builder.proposals.model_name,
                          max_proposals=args.max_proposals)
    model.selection.load_state_dict(rl.selection.state_dict())
    model.assignment.load_state_dict(rl.assignment.state_dict())
    model.save_pretrained(args.run_dir / "model")
    started = time.perf_counter()
    with torch.inference_mode(), progress(total=len(evaluation), desc="Table 1 rows per video", unit="video") as bar:
        measured, grouped = score_rows(args, args.rows, evaluation, builder, {"warmup": warmup, "rl": rl, "pairwise": pairwise}, bar)
    seconds["evaluate"] = time.perf_counter() - started
    if grouped:
        shown = max(evaluation, key=lambda s: len(s.object_ids))
        plot_grouping(shown, grouped[shown.name], args.run_dir / "grouping.png")
    summary = write_outputs(args, argv, measured, described, trained_on, evaluation, builder, seconds, counts)
    print(summary["table1"])
    print(summary["finding"])
    print(f"detector calls {builder.detector_calls}; run directory {args.run_dir}")
    return summary


if __name__ == "__main__":
    main()
