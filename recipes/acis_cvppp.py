"""`python -m recipes.acis_cvppp`: ACIS (actor-critic instance segmentation) on CVPPP LSC A1 leaves.

With no arguments: writes synthetic rosettes in the A1 layout, trains all stages on the CPU-sized network
(minutes), evaluates SBD / FBD / DiC / |DiC| on the ablation-val split, and writes the run dir
`runs/acis-cvppp` that `python -m zoo.publish runs/acis-cvppp --name acis-cvppp` consumes.
`--data-dir A1_PARENT` trains on the real release with the paper's network and schedule;
`--ablation BL|BL-Trunc|AC|AC-NoKL|AC-NoSP` picks the Table 1 row.
"""

from __future__ import annotations

import sys
from pathlib import Path

from recipes._acis_common import (
    Benchmark, Schedule, embedded_config, embedded_schedule, evaluate_segmenter,
    main as run_recipe,
)
from zoo.acis.networks import ACISConfig

SYNTHETIC_IMAGES = 64

EMBEDDED_CONFIG = embedded_config(height=96, width=96, latent_size=16, feature_size=64)

# the authors' scripts: preproc 300 epochs; cVAE 800 (+ 600 "init" epochs at length 1); AC to 10000 epochs
PAPER_SCHEDULE = Schedule(preproc_epochs=300, cvae_epochs=800, init_epochs=600, train_epochs=9400, batch_size=8)

EMBEDDED_SCHEDULE = embedded_schedule(init_epochs=160, curriculum_switch=160)


def write_synthetic(root: Path) -> Path:
    root = Path(root)
    from datamodules.synthetic_cvppp import write_synthetic_cvppp

    if not (root / "A1").is_dir():
        write_synthetic_cvppp(root, num_images=SYNTHETIC_IMAGES, seed=0)
    return root


def datamodule(data_dir: Path, batch_size: int):
    from datamodules.cvppp import CVPPPDataModule

    return CVPPPDataModule(data_dir, train_split="ablation-train", val_split="ablation-val",
                           batch_size=batch_size, num_workers=1, augment=True)


def evaluate(segmenter, dataset, examples: int = 4):
    """SBD, FBD, DiC, |DiC| (CVPPP conventions) over the dataset, per-image rows, a few examples to draw."""
    from zoo.metrics.cvppp import CVPPPMetrics

    return evaluate_segmenter(segmenter, dataset, CVPPPMetrics(), examples)


CVPPP = Benchmark(
    name="acis-cvppp",
    title="CVPPP LSC A1",
    dataset_type="cvppp",
    score="dice",
    embedded_config=EMBEDDED_CONFIG,
    paper_config=ACISConfig.paper_cvppp(),
    embedded_schedule=EMBEDDED_SCHEDULE,
    paper_schedule=PAPER_SCHEDULE,
    write_synthetic=write_synthetic,
    datamodule=datamodule,
    evaluate=evaluate,
    metric_names={"SBD": ("sbd", "Symmetric Best Dice"), "absDiC": ("abs_dic", "|DiC|"),
                  "DiC": ("dic", "Difference in Count"), "FBD": ("fbd", "Foreground-Background Dice")},
    paper_results=[{"dataset_name": "CVPPP LSC A1 test", "metrics": [{"type": "sbd", "value": 79.1}, {"type": "abs_dic", "value": 1.12}]}],
    synthetic_description=f"{SYNTHETIC_IMAGES} synthetic CVPPP-format rosettes (datamodules.synthetic_cvppp, 3-25 leaves)",
    val_split_name="ablation-val",
)


def main(argv: list[str] | None = None) -> dict:
    return run_recipe(CVPPP, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
