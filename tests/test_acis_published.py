"""The published ACIS checkpoints: `load(name).segment(image)` works at any image size, and the bundled weights
reproduce the metrics their registry entry reports on the synthetic data the recipe writes (same writer, same
seed), so the numbers on the card were measured with exactly these weights."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from recipes.acis_cvppp import CVPPP
from recipes.acis_kitti import KITTI

PUBLISHED = {"acis-cvppp": CVPPP, "acis-kitti": KITTI}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_segment_returns_labels_at_the_input_size_in_prediction_order(name):
    segmenter = zoo.load(name)
    image = np.random.default_rng(0).integers(0, 256, (137, 211, 3), dtype=np.uint8)
    labels, order = segmenter.segment(image)
    assert labels.shape == (137, 211) and labels.dtype == np.int32
    assert order == list(range(1, len(order) + 1))
    assert set(np.unique(labels)) <= {0, *order}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bundled_weights_reproduce_the_registered_metrics(name, tmp_path, torch_one_thread):
    entry = zoo.model_info(name)
    benchmark = PUBLISHED[name]
    data_dir = benchmark.write_synthetic(tmp_path / "data")
    datamodule = benchmark.datamodule(str(data_dir), 8)
    datamodule.setup("validate")
    summary, _, _ = benchmark.evaluate(zoo.load(name), datamodule.val_set, examples=0)
    reported = {metric["type"]: metric["value"] for metric in entry["results"][0]["metrics"]}
    measured = {kind: summary[key] for key, (kind, _) in benchmark.metric_names.items()}
    assert reported.keys() == measured.keys()
    for kind, value in reported.items():
        assert measured[kind] == pytest.approx(value, abs=1e-3), kind
