"""`python -m recipes.acis_kitti`: ACIS (actor-critic instance segmentation) on KITTI car instances.

With no arguments: writes synthetic street scenes in Ren & Zemel's KITTI layout, trains all stages on the
CPU-sized network with the IoU potential, evaluates MWCov / MUCov / AvgFP / AvgFN (+ SBD, |DiC|) on the
synthetic val split, and writes `runs/acis-kitti` for `python -m zoo.publish runs/acis-kitti --name acis-kitti`.
`--data-dir KITTI_DIR` (images/, gt/, gt_man/, train.txt, valid_man.txt, test_man.txt) trains on the real data
with the paper's network (256 x 768 crops, latent 64) and the authors' CVPPP schedules: the paper gives no KITTI
schedule, so `--profile paper` trains KITTI with `recipes._acis_common.paper_schedule()` as CVPPP does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from recipes._acis_common import (
    Benchmark, embedded_config, embedded_schedule, evaluate_segmenter, paper_schedule,
    main as run_recipe,
)
from zoo.acis.networks import ACISConfig

SYNTHETIC_IMAGES = 48

EMBEDDED_CONFIG = embedded_config(height=64, width=192, latent_size=64, feature_size=128)

# the paper gives no KITTI schedule (the authors' run scripts in research/seeds.md are CVPPP's): their CVPPP one
PAPER_SCHEDULE = paper_schedule()

EMBEDDED_SCHEDULE = embedded_schedule(init_epochs=100, curriculum_switch=120)


def write_synthetic(root) -> Path:
    from datamodules.synthetic_kitti import write_synthetic_kitti

    root = Path(root)
    if not (root / "train.txt").is_file():
        write_synthetic_kitti(root, num_images=SYNTHETIC_IMAGES, seed=0)
    return root


def datamodule(data_dir, batch_size: int, framing: str = "crop", size: int | None = None):
    """KITTI items keep the reader's own framing (`framing` and `size` are CVPPP's)."""
    from datamodules.kitti_instances import KITTIInstancesDataModule

    return KITTIInstancesDataModule(data_dir, batch_size=batch_size, num_workers=1, augment=True)


def evaluate(segmenter, dataset, examples: int = 4):
    """MWCov, MUCov, AvgFP, AvgFN (Ren & Zemel's definitions), SBD and |DiC| over the dataset."""
    from zoo.metrics.kitti import KITTIInstanceMetrics

    return evaluate_segmenter(segmenter, dataset, KITTIInstanceMetrics(), examples)


KITTI = Benchmark(
    name="acis-kitti",
    title="KITTI car instances",
    dataset_type="kitti",
    score="iou",
    embedded_config=EMBEDDED_CONFIG,
    paper_config=ACISConfig.paper_kitti(),
    embedded_schedule=EMBEDDED_SCHEDULE,
    paper_schedule=PAPER_SCHEDULE,
    write_synthetic=write_synthetic,
    datamodule=datamodule,
    evaluate=evaluate,
    metric_names={
        "MWCov": ("mwcov", "Mean Weighted Coverage"), "MUCov": ("mucov", "Mean Unweighted Coverage"),
        "AvgFP": ("avg_fp", "Average False Positives"), "AvgFN": ("avg_fn", "Average False Negatives"),
        "SBD": ("sbd", "Symmetric Best Dice"), "AvgAbsDiC": ("abs_dic", "|DiC|"),
    },
    paper_results=[{"dataset_name": "KITTI car instances test", "metrics": [
        {"type": "mwcov", "value": 75.6}, {"type": "mucov", "value": 57.3},
        {"type": "avg_fp", "value": 0.338}, {"type": "avg_fn", "value": 0.309}]}],
    synthetic_description=f"{SYNTHETIC_IMAGES} synthetic KITTI-format street scenes (datamodules.synthetic_kitti)",
    val_split_name="val",
)


def main(argv: list[str] | None = None) -> dict:
    return run_recipe(KITTI, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
