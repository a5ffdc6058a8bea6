"""The card's tables for every ACIS benchmark: the per-image table and the comparison table read the same metric
names from the evaluation rows, for KITTI too, whose per-image scores are named differently from its dataset means
(FP / AvgFP). The KITTI recipe stopped at its evaluation with KeyError 'AvgFP' before the rows carried the dataset
names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes._acis_common import comparison_table, per_image_table
from recipes.acis_cvppp import CVPPP
from recipes.acis_kitti import KITTI


class FixedLabels:
    """A segmenter that predicts the same two instances on every image."""

    def segment(self, image: np.ndarray):
        labels = np.zeros(image.shape[:2], dtype=np.int32)
        labels[2:10, 2:10], labels[12:20, 12:30] = 1, 2
        return labels, [1, 2]


def items() -> list[dict]:
    labels = torch.zeros(24, 32, dtype=torch.long)
    labels[2:10, 2:12], labels[14:22, 20:30] = 1, 2
    return [{"name": f"image{index}", "image": torch.rand(3, 24, 32), "labels": labels} for index in range(2)]


@pytest.mark.parametrize("benchmark", [CVPPP, KITTI], ids=["cvppp", "kitti"])
def test_evaluation_rows_carry_every_metric_the_card_tables_name(benchmark):
    summary, rows, _ = benchmark.evaluate(FixedLabels(), items(), examples=0)
    for row in rows:
        assert set(benchmark.metric_names) <= set(row), sorted(row)
    prefixed = [{**row, **{f"{prefix}_{key}": row[key] for key in benchmark.metric_names for prefix in
                           ("init", "fg_components")}} for row in rows]
    table = per_image_table(benchmark, prefixed)
    assert table.count("\n") == 1 + len(rows)
    # the per-image values average to the dataset means the card's first table reports
    for key in benchmark.metric_names:
        assert np.mean([row[key] for row in rows]) == pytest.approx(summary[key])
    assert "image1" in table and comparison_table(benchmark, {"model": summary}).count("\n") == 2


def test_the_kitti_recipe_runs_to_its_card_tables(tmp_path):
    """The KITTI recipe end to end on a few small synthetic scenes, one epoch a stage: it reaches its results."""
    import dataclasses

    from datamodules.synthetic_kitti import write_synthetic_kitti
    from recipes._acis_common import Schedule, main

    def write_small(root):
        return write_synthetic_kitti(root, num_images=6, size=(120, 400))

    small = dataclasses.replace(KITTI, write_synthetic=write_small, embedded_schedule=Schedule(
        preproc_epochs=1, cvae_epochs=1, init_epochs=1, train_epochs=1, batch_size=4))
    results = main(small, ["--run-dir", str(tmp_path / "run"), "--checkpoint-every", "0"])
    assert "Average False Positives (fg components)" in results["per_image_table"]
    assert (tmp_path / "run" / "per_image.csv").read_text().startswith("name,predicted,ground_truth,MWCov")


def test_the_card_names_no_backbone_for_a_trunk_trained_from_scratch_and_the_source_of_an_imagenet_one(tmp_path):
    """The embedded networks' FCN trunk starts from random weights by design; the card must not call that a random
    backbone (the zoo's words for an ImageNet body that fell back), nor drop the source of a real one."""
    import dataclasses

    from recipes.acis_cvppp import CPU_CONFIG
    from zoo.acis.model import ACISSegmenter
    from zoo.publish import NO_BACKBONE, backbone_weights_of

    for config, expected in ((KITTI.embedded_config, NO_BACKBONE),
                             (dataclasses.replace(CPU_CONFIG, backbone_weights="package:x"), "package:x")):
        folder = tmp_path / config.preproc_backbone
        ACISSegmenter.from_config(config).save_pretrained(folder)
        assert backbone_weights_of(folder) == expected
    # the training checkpoints' config keeps the field: dropping it there changed the resume identity of every run
    # directory written before, which then refused to resume
    assert KITTI.embedded_config.to_dict()["backbone_weights"] == "random"
