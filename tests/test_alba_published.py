"""The published `alba-davis`: `load(name).segment(frames)` on a real held-out DAVIS 2016 video (raw frames only: it
computes proposals and flow itself) reproduces the per-video unsupervised J&F its card reports (the RL row of
`per_sequence.csv`), so the card's numbers were measured with exactly these weights and this code."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import zoo
from zoo.metrics.davis import evaluate_unsupervised
from zoo.registry import get_entry

pytestmark = pytest.mark.usefixtures("hub_offline")  # the bundled copy, never the Hub

SEQUENCE = "car-shadow"  # the shortest held-out video (40 frames)


def test_bundled_weights_reproduce_the_card_on_a_held_out_real_video(shared, torch_one_thread, tmp_path):
    from datamodules.davis import DAVIS

    entry = get_entry("alba-davis")
    rows = list(csv.DictReader(open(entry.local_dir / "per_sequence.csv")))
    reported = {row["sequence"]: float(row["rl J&F"]) for row in rows}
    assert SEQUENCE in reported and SEQUENCE in entry.results[0]["data"]
    sequence = DAVIS(shared / "realdata" / "DAVIS2016", year=2016, split="val", task="unsupervised",
                     sequences=[SEQUENCE])[0]
    model = zoo.load("alba-davis")
    labels = model.segment([sequence.frame(i) for i in range(len(sequence))], video=SEQUENCE, cache_dir=tmp_path)
    assert labels.dtype == np.uint8 and labels.shape[0] == len(sequence) and labels.max() <= 20
    truth = np.stack([sequence.require_mask(i) for i in range(len(sequence))])
    statistics = evaluate_unsupervised(truth, labels, SEQUENCE).statistics()
    measured = float(np.mean((statistics[:, 0] + statistics[:, 3]) / 2))
    assert measured == pytest.approx(reported[SEQUENCE], abs=2e-3)
