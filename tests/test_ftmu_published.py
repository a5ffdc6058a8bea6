"""The published `ftmu-davis`: `load(name).segment(frames, boxes)` on a real held-out DAVIS 2016 sequence reproduces
the per-sequence J&F its card reports (the full method's row of `per_sequence.csv`), so the card's numbers were
measured with exactly these weights and this code."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import zoo
from zoo.metrics.davis import evaluate_semi_supervised
from zoo.registry import get_entry

pytestmark = pytest.mark.usefixtures("hub_offline")  # the bundled copy, never the Hub

SEQUENCE = "car-shadow"  # the shortest held-out sequence (40 frames)


def test_bundled_weights_reproduce_the_card_on_a_held_out_real_sequence(shared, torch_one_thread):
    from datamodules.davis import DAVIS

    entry = get_entry("ftmu-davis")
    rows = list(csv.DictReader(open(entry.local_dir / "per_sequence.csv")))
    reported = {row["sequence"]: float(row["J&F-Mean"]) for row in rows if row["row"] == "full"}
    assert SEQUENCE in reported and SEQUENCE in entry.results[0]["data"]
    sequence = DAVIS(shared / "realdata" / "DAVIS2016", year=2016, split="val", sequences=[SEQUENCE])[0]
    model = zoo.load("ftmu-davis")
    boxes = {k: (b[0], b[1], b[2] - b[0], b[3] - b[1]) for k, b in sequence.first_frame_boxes().items()}
    labels = model.segment([sequence.frame(i) for i in range(len(sequence))], boxes, video=sequence.name)
    truth = np.stack([sequence.require_mask(i) for i in range(len(sequence))])
    statistics = evaluate_semi_supervised(truth, labels, SEQUENCE).statistics()
    measured = float(np.mean((statistics[:, 0] + statistics[:, 3]) / 2))
    assert measured == pytest.approx(reported[SEQUENCE], abs=2e-3)
