"""What `recipes.ivosw_davis` builds on: the engines it can run, the session videos of a DAVIS tree, the quality
network's samples, and the Table 1 evaluation of one engine × setting (every strategy, per-round curves, IVOS-W AUC,
davisinteractive's time AUC and J&F@60 s).

Engines are named in `ENGINES` (name → factory(cache_dir) → `InteractiveEngine`): "flow", the weight-free
`FlowPropagationEngine`, and "matching", the learned `zoo.interactive.matching_engine.MatchingEngine` (trained by
`recipes.ivosw_engine_davis`); every stage loops over the names it is given.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from recipes._progress import progress
from zoo.interactive.engines import EngineOutput, FlowPropagationEngine, InteractiveEngine
from zoo.interactive.robot import InteractiveScribblesRobot
from zoo.ivosw.quality import QualityNetwork, QualitySample
from zoo.ivosw.session import (
    InteractiveSession, SessionVideo, first_frame_for_robot, make_strategy, run_session, training_window,
)
from zoo.metrics.interactive import ivosw_auc, time_auc

STRATEGIES = ("ours", "random", "linspace", "worst")
RANDOM_RUNS = 5  # Table 1: Random is the mean of 5 runs


def flow_engine(cache_dir: Path | None) -> InteractiveEngine:
    from zoo.vision.flow import FlowEstimator

    return FlowPropagationEngine(FlowEstimator("dis", cache_dir=cache_dir))


# The learned engine's published name, and the recipe that trains it (`zoo.interactive.matching_engine`).
MATCHING_ENGINE = "ivosw-engine-davis"
MATCHING_RECIPE = ("python -m recipes.ivosw_engine_davis --data-dir DAVIS2016 --year 2016 "
                   "--extra-first-frames DAVIS2017 --run-dir runs/ivosw-engine-davis")
_MATCHING_LOADED: dict[str, InteractiveEngine] = {}


def matching_engine(cache_dir: Path | None, *, model: str | Path | None = None,
                    random_weights: bool = False) -> InteractiveEngine:
    """The learned matching engine: `model` (a run's ``model/`` folder, a registered name or a Hub repo id), else
    ``$ZOO_MATCHING_ENGINE``, else the published ``ivosw-engine-davis`` through `zoo.load`; loaded once per process
    and shared by every engine made here (each has its own video and rounds). Raises, naming the recipe that trains
    it, when no trained weights can be had. ``random_weights=True`` (tests only) builds one with a random backbone and
    an untrained head. The engine keeps each video's keys in `cache_dir` too (None: in memory only)."""
    import os

    from zoo.interactive.matching_engine import MatchingEngine

    if random_weights:
        engine = MatchingEngine.create(random_backbone=True)
        engine.cache_dir = cache_dir
        return engine
    source = str(model or os.environ.get("ZOO_MATCHING_ENGINE") or MATCHING_ENGINE)
    if source not in _MATCHING_LOADED:
        from zoo import load
        from zoo.hub import CheckpointError, HubError

        try:
            loaded = load(source)
        except (KeyError, FileNotFoundError, HubError, CheckpointError) as error:
            message = error.args[0] if error.args else error
            raise RuntimeError(
                f"the 'matching' engine needs trained weights and {source!r} cannot be loaded ({message}). Train them "
                f"with `{MATCHING_RECIPE}` and point ZOO_MATCHING_ENGINE at RUN_DIR/model (or publish it as "
                f"'{MATCHING_ENGINE}' with `python -m zoo.publish`)") from None
        if not isinstance(loaded, MatchingEngine):
            raise RuntimeError(f"{source!r} holds a '{loaded.model_type}' model, not a matching engine")
        _MATCHING_LOADED[source] = loaded
    engine = _MATCHING_LOADED[source].spawn()
    engine.cache_dir = cache_dir
    return engine


ENGINES: dict[str, Callable[[Path | None], InteractiveEngine]] = {"flow": flow_engine, "matching": matching_engine}


class RecordingEngine(InteractiveEngine):
    """Any engine, keeping its last output (the quality network's training data needs the probability maps, which
    `InteractiveSession` does not keep)."""

    def __init__(self, engine: InteractiveEngine):
        self.engine = engine
        self.last: EngineOutput | None = None

    def start(self, frames, num_objects):
        self.last = None
        self.engine.start(frames, num_objects)

    def interact(self, frame_index, scribbles):
        self.last = self.engine.interact(frame_index, scribbles)
        return self.last

    def reset(self):
        self.last = None
        self.engine.reset()


class EnginePool:
    """At most ``capacity`` live engines, one per (engine name, video content), least recently used evicted: an engine
    keeps its video's flow in memory (about 160 MB for 25 frames at 480p), so real DAVIS cannot keep one per training
    window. Evicted videos find their flow again in the disk cache under ``cache_dir``. Videos are told apart by
    their pixels, not their names: a training window and its full video share a name but not their frame indices,
    and the flow cache is keyed by (video, frame index)."""

    def __init__(self, cache_dir: Path | None, capacity: int = 8):
        self.cache_dir, self.capacity = cache_dir, max(1, capacity)
        self.engines: OrderedDict[str, InteractiveEngine] = OrderedDict()

    def get(self, name: str, video: SessionVideo) -> InteractiveEngine:
        """An engine for ``video``: a `PooledEngine`, which fetches the live one at every call (sessions run one
        after another, so the one in use is always the most recently used)."""
        digest = hashlib.sha1(np.ascontiguousarray(video.frames).tobytes()).hexdigest()[:12]
        return PooledEngine(self, name, f"{name}-{video.name}-{digest}")

    def live(self, name: str, key: str) -> InteractiveEngine:
        if key in self.engines:
            self.engines.move_to_end(key)
            return self.engines[key]
        engine = ENGINES[name](self.cache_dir)
        if hasattr(engine, "video_name"):
            engine.video_name = key  # names the video's entries in the disk cache
        self.engines[key] = engine
        while len(self.engines) > self.capacity:
            self.engines.popitem(last=False)
        return engine


class PooledEngine(InteractiveEngine):
    def __init__(self, pool: EnginePool, name: str, key: str):
        self.pool, self.name, self.key = pool, name, key

    def start(self, frames, num_objects):
        self.pool.live(self.name, self.key).start(frames, num_objects)

    def interact(self, frame_index, scribbles):
        return self.pool.live(self.name, self.key).interact(frame_index, scribbles)

    def reset(self):
        self.pool.live(self.name, self.key).reset()


def quiet_robot() -> InteractiveScribblesRobot:
    """The robot with a constant clock: its strokes carry no wall-clock stamps, so reruns give identical sessions."""
    return InteractiveScribblesRobot(clock=lambda: 0.0)


# -- videos -----------------------------------------------------------------------------------------------------------


def session_videos(sequences, scribbles: str = "all") -> list[SessionVideo]:
    """One `SessionVideo` per (sequence, scribble file): every file (``scribbles="all"``) or only 001; a sequence
    without any file gives one video whose round 1 is the robot's."""
    videos = []
    for sequence in sequences:
        numbers = sorted(sequence.scribble_files) or [None]
        if scribbles == "first":
            numbers = numbers[:1]
        for number in numbers:
            videos.append(SessionVideo.from_sequence(sequence, scribble=number))
    return videos


def window_of(video: SessionVideo, length: int) -> SessionVideo:
    """The training episode's `training_window` around the user's frame (the scribbled frame, else the robot's)."""
    anchor = video.first_scribbled_frame
    if anchor is None:
        anchor = first_frame_for_robot(video.ground_truth, video.num_objects)
    return video.window(training_window(video.num_frames, anchor, length))


def sample_name(video: SessionVideo) -> str:
    return f"{video.name}#{video.scribble_number:03d}" if video.initial_scribble is not None else f"{video.name}#robot"


# -- the quality network's samples ------------------------------------------------------------------------------------


class Reservoir:
    """A uniform random subset of at most ``capacity`` items of a stream (Algorithm R), seeded: bounded memory on
    real DAVIS, where every round of every video offers T·K full-resolution maps."""

    def __init__(self, capacity: int, seed: int):
        self.capacity, self.items, self.seen = capacity, [], 0
        self.generator = np.random.default_rng(seed)

    def offer(self, make: Callable[[], object]) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(make())
            return
        slot = int(self.generator.integers(self.seen))
        if slot < self.capacity:
            self.items[slot] = make()


def worst_policy_samples(videos: Sequence[SessionVideo], pool: EnginePool, engine: str, rounds: int, capacity: int,
                         seed: int, bar) -> tuple[list[QualitySample], int]:
    """The quality network's data (Sec. 3.2, the authors' ``generate_data.py``): sessions with the Worst strategy
    (Oracle setting); after each round, every (frame, object) whose probability map changed in that round gives a
    sample (frame, map, that object's J&F). Returns a seeded subset of at most ``capacity`` and how many were offered.
    Maps are kept as float16 (the crop reads them as float32) to halve the memory."""
    from zoo.metrics.interactive import per_object_scores

    reservoir = Reservoir(capacity, seed)
    for video in videos:
        recording = RecordingEngine(pool.get(engine, video))
        session = InteractiveSession(video, recording, "oracle", robot=quiet_robot())
        strategy = make_strategy("worst", rounds=rounds)
        seen: dict[int, str] = {}
        played = None
        for _ in range(rounds):
            played = session.reset() if played is None else session.annotate(
                strategy(played.quality.numpy(), list(session.annotated)))
            probabilities, labels = recording.last.probabilities, recording.last.labels
            for t in range(video.num_frames):
                digest = hashlib.sha1(np.ascontiguousarray(probabilities[:, t]).tobytes()).hexdigest()
                if seen.get(t) == digest:
                    continue
                seen[t] = digest
                scores = per_object_scores(labels[t:t + 1], video.ground_truth[t:t + 1], video.num_objects)
                for k in range(1, video.num_objects + 1):
                    reservoir.offer(lambda t=t, k=k: QualitySample(
                        video.frames[t], probabilities[k, t].astype(np.float16),
                        float(scores["J_AND_F"][0, k - 1])))
            bar.update(1)
    return reservoir.items, reservoir.seen


@torch.no_grad()
def predict_quality(network: QualityNetwork, samples: Sequence[QualitySample], batch_size: int = 32) -> np.ndarray:
    from zoo.ivosw.quality import QualityDataset

    dataset = QualityDataset(samples, size=network.input_size, min_side=network.min_side, flip_probability=0.0)
    network.eval()
    predictions = []
    for start in range(0, len(dataset), batch_size):
        crops = torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        predictions.append(network(crops).cpu().numpy())
    return np.concatenate(predictions) if predictions else np.zeros(0)


# -- Table 1: one engine × setting ------------------------------------------------------------------------------------


def weighted_curve(results: Sequence[tuple[SessionVideo, list[float]]]) -> list[float]:
    """The official curve: the mean over every (sequence, scribble, object) of the object's frame-mean J&F; a video's
    session curve is the mean over its objects, so videos weigh by their object counts."""
    weights = np.array([video.num_objects for video, _ in results], dtype=np.float64)
    curves = np.array([curve for _, curve in results], dtype=np.float64)
    return ((weights[:, None] * curves).sum(0) / weights.sum()).tolist()


def summarize_strategy(results, seconds: list[list[float]]) -> dict:
    """IVOS-W AUC of the weighted curve, and davisinteractive's time AUC and J&F@60 s against the cumulative mean
    method time per round (no time budget: the timeout is rounds × the longest round, as davisinteractive does when
    ``max_time`` is None)."""
    curve = weighted_curve(results)
    per_round = np.mean(np.array(seconds, dtype=np.float64), axis=0)
    cumulative = np.concatenate([[0.0], np.cumsum(per_round)])
    timeout = len(curve) * float(np.max(seconds)) if np.max(seconds) > 0 else 1.0
    timed = time_auc([0.0, *curve], cumulative, timeout)
    return {"auc": ivosw_auc([0.0, *curve]), "curve": curve, "time_auc": timed["auc"],
            "jf_at_60s": timed["metric_at_threshold"]["value"], "seconds_per_round": per_round.tolist()}


def evaluate_setting(videos: Sequence[SessionVideo], pool: EnginePool, engine: str, setting: str, rounds: int,
                     agent, quality_network: QualityNetwork | None, strategies: Sequence[str], seed: int,
                     bar) -> dict:
    """Every strategy on every video: {strategy: summary (+ per_sequence; Random: the mean of its runs, their
    spread and each run)}. Random run i uses seed ``seed + i``."""
    plans = [(name, run) for name in strategies for run in (range(RANDOM_RUNS) if name == "random" else [None])]
    played: dict[tuple, list] = {plan: [] for plan in plans}
    seconds: dict[tuple, list] = {plan: [] for plan in plans}
    for video in videos:  # video outermost: its engine computes the flow once
        video_engine = pool.get(engine, video)
        for name, run in plans:
            strategy = make_strategy(name, rounds=rounds, seed=seed + (run or 0), agent=agent)
            session = InteractiveSession(video, video_engine, setting, quality_network, quiet_robot())
            result = run_session(session, None, strategy, rounds=rounds)
            played[name, run].append((video, result))
            seconds[name, run].append([t.method for t in result.timings])
            bar.update(1)
    table = {}
    for name in strategies:
        runs = [(run, played[name, run], seconds[name, run]) for n, run in plans if n == name]
        summaries = [summarize_strategy([(v, r.curve) for v, r in results], secs) for _, results, secs in runs]
        first = runs[0][1]
        row = dict(summaries[0])
        row["per_sequence"] = {sample_name(video): {"objects": video.num_objects, "frames": video.num_frames,
                                                    "auc": result.auc, "curve": result.curve,
                                                    "annotated": result.frames}
                               for video, result in first}
        if name == "random":
            aucs = [s["auc"] for s in summaries]
            row = {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
                   "curve": np.mean([s["curve"] for s in summaries], axis=0).tolist(),
                   "time_auc": float(np.mean([s["time_auc"] for s in summaries])),
                   "jf_at_60s": float(np.mean([s["jf_at_60s"] for s in summaries])),
                   "seconds_per_round": np.mean([s["seconds_per_round"] for s in summaries], axis=0).tolist(),
                   "runs": [{"seed": seed + run, **s} for (run, _, _), s in zip(runs, summaries)],
                   "per_sequence": {sample_name(video): {
                       "objects": video.num_objects, "frames": video.num_frames,
                       "auc": float(np.mean([results[i][1].auc for _, results, _ in runs])),
                       "curve": np.mean([results[i][1].curve for _, results, _ in runs], axis=0).tolist()}
                       for i, (video, _) in enumerate(first)}}
        table[name] = row
    return table


# -- outputs ----------------------------------------------------------------------------------------------------------


def table_markdown(measured: dict) -> str:
    """Table 1's layout: one row per engine × setting × strategy (Random: mean ± sample std of its runs)."""
    lines = ["| engine | setting | strategy | IVOS-W AUC | J&F@60s | time AUC | J&F after each round |",
             "|---|---|---|---|---|---|---|"]
    for engine, settings in measured.items():
        for setting, table in settings.items():
            for name, row in table.items():
                auc = f"{row['auc']:.4f}" + (f" ± {row['auc_std']:.4f} ({len(row['runs'])} runs)"
                                             if "runs" in row else "")
                curve = " ".join(f"{value:.3f}" for value in row["curve"])
                lines.append(f"| {engine} | {setting} | {name} | {auc} | {row['jf_at_60s']:.4f} | "
                             f"{row['time_auc']:.4f} | {curve} |")
    return "\n".join(lines)


def per_sequence_markdown(measured: dict) -> str:
    """Per (sequence, scribble) IVOS-W AUC of every strategy, one table per engine × setting: what a card leads with
    (Random, Linspace and Worst are the trivial baselines Ours must beat)."""
    blocks = []
    for engine, settings in measured.items():
        for setting, table in settings.items():
            names = list(table)
            lines = [f"**{engine} engine, {setting}** (IVOS-W AUC per sequence; Random: mean of its runs)", "",
                     "| sequence (objects, frames) | " + " | ".join(names) + " | best |",
                     "|---|" + "---|" * (len(names) + 1)]
            for sample, first in table[names[0]]["per_sequence"].items():
                aucs = {name: table[name]["per_sequence"][sample]["auc"] for name in names}
                best = max(aucs, key=aucs.get)
                lines.append(f"| {sample} ({first['objects']}, {first['frames']}) | "
                             + " | ".join(f"{aucs[name]:.4f}" for name in names) + f" | {best} |")
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def quality_markdown(quality_figures: dict) -> str:
    """Table 3's layout per engine: PCC and MSE of the quality network on held-out Worst-policy samples."""
    lines = ["| engine | PCC | MSE | held-out samples (target mean ± std) | training samples | backbone weights |",
             "|---|---|---|---|---|---|"]
    for engine, row in quality_figures.items():
        def shown(value):
            return "n/a" if value is None else f"{value:.4f}"
        spread = ("" if row.get("heldout_target_mean") is None
                  else f" ({row['heldout_target_mean']:.3f} ± {row['heldout_target_std']:.3f})")
        lines.append(f"| {engine} | {shown(row['pcc'])} | {shown(row['mse'])} | {row['heldout_samples']}{spread} | "
                     f"{row['train_samples']} | {row['backbone_weights']} |")
    return "\n".join(lines)


def write_per_sequence(measured: dict, path: Path) -> None:
    import csv

    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        first_table = next(iter(next(iter(measured.values())).values()))
        rounds = len(next(iter(first_table.values()))["curve"])
        writer.writerow(["engine", "setting", "strategy", "sample", "objects", "frames", "auc",
                         *(f"round {r} J&F" for r in range(1, rounds + 1))])
        for engine, settings in measured.items():
            for setting, table in settings.items():
                for name, row in table.items():
                    for sample, scores in row["per_sequence"].items():
                        writer.writerow([engine, setting, name, sample, scores["objects"], scores["frames"],
                                         f"{scores['auc']:.4f}", *(f"{v:.4f}" for v in scores["curve"])])


def plot_curves(measured: dict, path: Path) -> None:
    """J&F after each round, one panel per engine × setting, Random with its runs' min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(engine, setting, table) for engine, settings in measured.items() for setting, table in settings.items()]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (engine, setting, table) in zip(axes[0], panels):
        for name, row in table.items():
            rounds = np.arange(1, len(row["curve"]) + 1)
            (line,) = axis.plot(rounds, row["curve"], marker="o", markersize=3,
                                label=f"{name} (AUC {row['auc']:.3f})")
            if "runs" in row:
                runs = np.array([run["curve"] for run in row["runs"]])
                axis.fill_between(rounds, runs.min(0), runs.max(0), alpha=0.2, color=line.get_color())
        axis.set_title(f"{engine} engine, {setting}", fontsize=9)
        axis.set_xlabel("interaction round")
        axis.set_ylabel("J&F")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- Table 1 over engines × settings, and what results.json says --------------------------------------------

# The paper's Table 1 (IVOS-W AUC in percent; seeds.md §2), quoted as the paper's, never as a measurement here.
PAPER_TABLE1 = {
    ("oracle", "worst"): {"DAVIS IPN": 48.02, "DAVIS MANet": 70.85, "DAVIS ATNet": 73.68, "YTB IPN": 44.67,
                          "YTB MANet": 66.03, "YTB ATNet": 74.89},
    ("oracle", "ours"): {"DAVIS IPN": 48.25, "DAVIS MANet": 71.11, "DAVIS ATNet": 74.01, "YTB IPN": 43.86,
                         "YTB MANet": 66.90, "YTB ATNet": 75.37},
    ("wild", "random"): {"DAVIS IPN": 47.52, "DAVIS MANet": 69.81, "DAVIS ATNet": 72.99, "YTB IPN": 43.22,
                         "YTB MANet": 64.97, "YTB ATNet": 74.11},
    ("wild", "linspace"): {"DAVIS IPN": 46.97, "DAVIS MANet": 70.10, "DAVIS ATNet": 72.93, "YTB IPN": 42.75,
                           "YTB MANet": 64.75, "YTB ATNet": 73.47},
    ("wild", "worst"): {"DAVIS IPN": 47.26, "DAVIS MANet": 69.32, "DAVIS ATNet": 73.33, "YTB IPN": 43.29,
                        "YTB MANet": 65.98, "YTB ATNet": 74.69},
    ("wild", "ours"): {"DAVIS IPN": 47.99, "DAVIS MANet": 70.82, "DAVIS ATNet": 74.10, "YTB IPN": 43.69,
                       "YTB MANet": 66.85, "YTB ATNet": 75.33},
}
PAPER_TABLE3 = {"IPN": (0.47, 0.05), "MANet": (0.42, 0.01), "ATNet": (0.51, 0.01)}  # quality network PCC / MSE


def model_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]


def evaluate(args, model, quality_networks: dict, videos, pool, engines, settings,
             digest: str) -> tuple[dict, dict]:
    """({engine: {setting: Table 1 cells}}, {"<engine>-<setting>": seconds it took}), each (engine, setting) kept in
    RUN_DIR/evaluation/ with its seconds and reused when the model, the engine's quality network, the videos, rounds
    and strategies are the same (a reused cell reports the seconds of the run that computed it)."""
    import time

    from zoo.hub import state_digest

    measured = {engine: {} for engine in engines}
    seconds = {}
    plans = len(args.strategies) + (RANDOM_RUNS - 1 if "random" in args.strategies else 0)
    with progress(total=len(engines) * len(settings) * len(videos) * plans, desc="Table 1 sessions",
                  unit="session") as bar:
        for engine in engines:
            for setting in settings:
                network = quality_networks.get(engine)
                identity = {"model": digest, "quality": state_digest(network) if network is not None else None,
                            "videos": [sample_name(v) for v in videos],
                            "rounds": args.rounds, "strategies": args.strategies, "seed": args.seed}
                path = args.run_dir / "evaluation" / f"{engine}-{setting}.json"
                if path.is_file() and json.loads(path.read_text()).get("identity") == identity:
                    stored = json.loads(path.read_text())
                    measured[engine][setting] = stored["table"]
                    seconds[f"{engine}-{setting}"] = stored.get("seconds")
                    bar.update(len(videos) * plans)
                    continue
                started = time.perf_counter()
                table = evaluate_setting(videos, pool, engine, setting, args.rounds, model, network,
                                         args.strategies, args.seed, bar)
                took = seconds[f"{engine}-{setting}"] = round(time.perf_counter() - started, 2)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"identity": identity, "table": table, "seconds": took}, indent=2))
                measured[engine][setting] = table
    return measured, seconds


def evaluation_json(table: dict, engine: str, setting: str, rounds: int) -> dict:
    """The issue's `--stage evaluate` layout: per strategy its auc and curve (Random: the mean and each run)."""
    strategies = {}
    for name, row in table.items():
        strategies[name] = {"auc": row["auc"], "curve": row["curve"], "time_auc": row["time_auc"],
                            "jf_at_60s": row["jf_at_60s"]}
        if "runs" in row:
            strategies[name]["auc_std"] = row["auc_std"]
            strategies[name]["runs"] = [{"seed": r["seed"], "auc": r["auc"], "curve": r["curve"]} for r in row["runs"]]
    return {"strategies": strategies, "engine": engine, "setting": setting, "rounds": rounds}


def finding(measured: dict) -> str:
    parts = []
    for engine, settings in measured.items():
        for setting, table in settings.items():
            if "ours" not in table:
                continue
            others = ", ".join(f"{name} {row['auc']:.4f}" + (f" ± {row['auc_std']:.4f}" if "runs" in row else "")
                               for name, row in table.items() if name != "ours")
            best = max(table, key=lambda name: table[name]["auc"])
            parts.append(f"{engine}/{setting}: Ours {table['ours']['auc']:.4f} vs {others} (best: {best})")
    return "IVOS-W AUC over rounds: " + "; ".join(parts) + "."


def paper_results() -> list[dict]:
    columns = next(iter(PAPER_TABLE1.values()))
    entries = [{"dataset_name": f"{column.replace('YTB', 'YouTube-VOS (50 sequences)')} engine (paper, Table 1, "
                                "IVOS-W AUC in percent; not measured here)",
                "metrics": [{"type": f"ivosw_auc_{setting}_{strategy}", "name": f"{setting} / {strategy} AUC (%)",
                             "value": values[column]} for (setting, strategy), values in PAPER_TABLE1.items()]}
               for column in columns]
    entries.append({"dataset_name": "DAVIS 2017 train -> held-out, quality network (paper, Table 3; not measured "
                                    "here)",
                    "metrics": [{"type": f"{name.lower()}_{kind}", "name": f"{name} {kind.upper()}", "value": value}
                                for name, (pcc, mse) in PAPER_TABLE3.items()
                                for kind, value in (("pcc", pcc), ("mse", mse))]})
    return entries
