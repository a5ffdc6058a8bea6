"""The published ACIS checkpoints: `load(name).segment(image)` works at any image size, and the bundled weights
reproduce the metrics their registry entry reports (on real held-out images, or on the synthetic data the recipe
writes), so the numbers on the card were measured with exactly these weights."""

from __future__ import annotations

import numpy as np
import pytest

import zoo
from recipes.acis_cvppp import CVPPP
from recipes.acis_kitti import KITTI

pytestmark = pytest.mark.usefixtures("hub_offline")  # the bundled copy, never the Hub

PUBLISHED = {"acis-cvppp": CVPPP, "acis-kitti": KITTI}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_segment_returns_labels_at_the_input_size_in_prediction_order(name):
    segmenter = zoo.load(name)
    image = np.random.default_rng(0).integers(0, 256, (137, 211, 3), dtype=np.uint8)
    labels, order = segmenter.segment(image)
    assert labels.shape == (137, 211) and labels.dtype == np.int32
    assert order == list(range(1, len(order) + 1))
    assert set(np.unique(labels)) <= {0, *order}


def registered_on_real_data(entry: dict) -> bool:
    return not entry["results"][0]["dataset_name"].startswith("Synthetic")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bundled_weights_reproduce_the_registered_metrics(name, tmp_path, torch_one_thread, request):
    """Real-data checkpoints are re-measured on the real held-out images they report (skipped without ../shared);
    synthetic ones on the data the recipe writes (same writer, same seed)."""
    entry = zoo.model_info(name)
    benchmark = PUBLISHED[name]
    if registered_on_real_data(entry):
        dataset = benchmark.eval_dataset(request.getfixturevalue("realdata") / "CVPPP")
    else:
        data_dir = benchmark.write_synthetic(tmp_path / "data")
        datamodule = benchmark.datamodule(str(data_dir), 8)
        datamodule.setup("validate")
        dataset = datamodule.val_set
    summary, _, _ = benchmark.evaluate(zoo.load(name), dataset, examples=0)
    reported = {metric["type"]: metric["value"] for metric in entry["results"][0]["metrics"]}
    measured = {kind: summary[key] for key, (kind, _) in benchmark.metric_names.items()}
    assert reported.keys() == measured.keys()
    for kind, value in reported.items():
        assert measured[kind] == pytest.approx(value, abs=1e-3), kind
