"""What the FTMU recipes share: Table 2's rows, running a row over sequences, scoring it with the official J&F, and
the picture of the agent's actions."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from datamodules.vos_io import write_label_png
from zoo.ftmu.env import KEEP, REPLACE, Episode, Tracker, fixed_policy
from zoo.metrics.davis import evaluate_semi_supervised, summarize


@dataclass(frozen=True)
class Row:
    """One row of Table 2: who decides (a fixed action or a trained agent) and the tracker settings it runs with."""

    slug: str
    title: str
    decider: str  # "keep" | "replace" | "rl" | "supervised"
    overrides: dict = field(default_factory=dict)


ROWS = {
    row.slug: row
    for row in (
        Row("no-update", "no update", "keep", {"redetection": False}),
        Row("iou-update", "simple update (IoU)", "replace", {"redetection": False}),
        Row("appearance-update", "simple update (appearance)", "replace", {"redetection": False, "matching": "appearance"}),
        Row("rl-no-redetection", "RL update w/o re-detection", "rl", {"redetection": False}),
        Row("full", "Ours (RL update + re-detection)", "rl", {}),
        Row("supervised", "Ours (supervised)", "supervised", {}),
    )
}


def greedy(actor: torch.nn.Module):
    """Deterministic evaluation: the arg-max action (the authors' code samples at validation too)."""

    def policy(states: torch.Tensor, jaccards: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return actor(states).argmax(dim=-1)

    return policy


def policy_for(row: Row, actors: dict[str, torch.nn.Module]):
    if row.decider == "keep":
        return fixed_policy(KEEP)
    if row.decider == "replace":
        return fixed_policy(REPLACE)
    return greedy(actors[row.decider])


def run_sequence(tracker: Tracker, sequence, policy) -> tuple[np.ndarray, Episode, float]:
    """Box-initialised run over a whole sequence (boxes of the first frame's objects); labels, episode, seconds."""
    frame = sequence.frame(0)
    episode = tracker.start(sequence.name, 0, frame, sequence.first_frame_boxes())
    started = time.perf_counter()
    for index in range(1, len(sequence)):
        tracker.step(episode, index, sequence.frame(index), policy)
    return np.stack(episode.labels), episode, time.perf_counter() - started


def score_rows(results_dir: Path, rows: list[Row], sequences, make_tracker, actors, progress_bar=None) -> dict:
    """Run every row on every sequence; write DAVIS-layout PNGs under ``results_dir/<row>/<seq>/`` and return
    {row slug: {"summary": official global keys + per_object, "per_sequence": {...}, "seconds_per_frame": ...,
    "breakdown": {...}, "episodes": {seq: Episode}}}."""
    measured = {}
    for row in rows:
        tracker = make_tracker(row)
        policy = policy_for(row, actors)
        names, statistics, per_sequence, frames, seconds = [], [], {}, 0, 0.0
        breakdown = {"segmentation": 0.0, "matching": 0.0, "agent": 0.0, "redetection": 0.0}
        episodes = {}
        for sequence in sequences:
            labels, episode, elapsed = run_sequence(tracker, sequence, policy)
            episodes[sequence.name] = episode
            for index, label in enumerate(labels):
                write_label_png(results_dir / row.slug / sequence.name / f"{sequence.frame_names[index]}.png", label)
            object_names, rows_of, scores = sequence_scores(sequence, labels)
            names += object_names
            statistics.append(rows_of)
            per_sequence[sequence.name] = {
                **scores,
                "frames": len(sequence),
                "replace_rate": _replace_rate(episode),
                "redetections": sum(len(log.redetected) for log in episode.logs),
            }
            frames += len(sequence) - 1
            seconds += elapsed
            for log in episode.logs:
                for key, value in log.seconds.items():
                    breakdown[key] += value
            if progress_bar is not None:
                progress_bar.update(1)
        summary = summarize(names, np.concatenate(statistics))
        measured[row.slug] = {
            "title": row.title,
            "summary": summary,
            "per_sequence": per_sequence,
            "seconds_per_frame": seconds / max(frames, 1),
            "breakdown_seconds_per_frame": {key: value / max(frames, 1) for key, value in breakdown.items()},
            "episodes": episodes,
        }
    return measured


def sequence_scores(sequence, labels: np.ndarray) -> tuple[list[str], np.ndarray, dict]:
    """Official semi-supervised scores of the first len(labels) frames of ``sequence``: object names, the per-object
    statistics rows (for `summarize`) and the sequence's J&F / J / F means and object count."""
    truth = np.stack([sequence.require_mask(index) for index in range(len(labels))])
    result = evaluate_semi_supervised(truth, labels, sequence.name)
    rows = result.statistics()
    return list(result.object_names), rows, {
        "J&F-Mean": float(np.mean((rows[:, 0] + rows[:, 3]) / 2)),
        "J-Mean": float(rows[:, 0].mean()),
        "F-Mean": float(rows[:, 3].mean()),
        "objects": len(result.object_names),
    }


def _replace_rate(episode: Episode) -> float | None:
    decisions = [d.action for d in episode.decisions]
    return float(np.mean([a == REPLACE for a in decisions])) if decisions else None


def table_markdown(measured: dict, paper: dict | None = None) -> str:
    # s/frame here reads candidates from the run's cache where an earlier row (or training) segmented the same
    # frame and region: `python -m recipes.benchmark ftmu` measures the uncached speed
    lines = ["| row | J&F | J-Mean | F-Mean | s/frame (cached candidates) | template replaced | re-detections |"
             + (" paper Jm |" if paper else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if paper else "")]
    for slug, row in measured.items():
        rates = [s["replace_rate"] for s in row["per_sequence"].values() if s["replace_rate"] is not None]
        redetections = sum(s["redetections"] for s in row["per_sequence"].values())
        cells = [row["title"], f"{row['summary']['J&F-Mean']:.3f}", f"{row['summary']['J-Mean']:.3f}",
                 f"{row['summary']['F-Mean']:.3f}", f"{row['seconds_per_frame']:.3f}",
                 f"{np.mean(rates):.2f}" if rates else "–", str(redetections)]
        if paper:
            cells.append(f"{paper[slug]:.1f}" if slug in paper else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_actions(sequence, episode: Episode, path: Path, count: int = 6) -> None:
    """A few frames of one sequence: the final masks (colour), each target's template box (white, with the frame it
    was taken from) and the agent's action(s) on the frame (a0 replace / a1 keep / R re-detection)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodules.vos_io import davis_palette

    palette = davis_palette()
    picks = np.unique(np.linspace(1, len(episode.labels) - 1, count).round().astype(int))
    figure, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.0), squeeze=False)
    for axis, position in zip(axes[0], picks):
        log, labels = episode.logs[position], episode.labels[position]
        frame = sequence.frame(log.frame_index).copy()
        colour = palette[labels]
        frame = np.where(labels[..., None] > 0, (0.5 * frame + 0.5 * colour).astype(np.uint8), frame)
        words = []
        for target, (box, taken) in log.templates.items():
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(frame, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
            actions = "".join("a0" if a == REPLACE else "a1" for a in log.actions.get(target, []))
            words.append(f"{target}:{actions}{'R' if target in log.redetected else ''}(T@{taken})")
        axis.imshow(frame)
        axis.set_title(f"frame {log.frame_index}\n" + " ".join(words), fontsize=7)
        axis.axis("off")
    figure.suptitle(f"{sequence.name}: template boxes (white) and actions (a0 replace, a1 keep, R re-detected)",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
