"""`python -m zoo.evaluate kitti --gt-dir G --pred-dir P [--json OUT]`: KITTI car instance scores of label PNGs.

G holds ground-truth instance PNGs (`<name>.png`, e.g. Ren & Zemel's `gt_man/`; colour-coded, palette or grayscale),
P one predicted label PNG per image under the same name. Scores follow Ren & Zemel's `analysis.py` (see
`zoo.metrics.kitti`): MWCov, MUCov, AvgFP and AvgFN (mean counts per image), with their SBD and |DiC|; every
image's values are under "per_image".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datamodules.instance_io import paired_label_maps
from zoo.metrics.kitti import DATASET_KEYS, kitti_scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-dir", type=Path, required=True, help="folder of ground-truth instance PNGs")
    parser.add_argument("--pred-dir", type=Path, required=True, help="folder of predicted label PNGs, same names")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a missing prediction as an image with no car instead of stopping")
    parser.add_argument("--iou-matrices", action="store_true",
                        help="also list every image's prediction × ground-truth IoU matrix")


def evaluate_folders(gt_dir, pred_dir, missing_as_empty: bool = False, iou_matrices: bool = False) -> dict:
    per_image = {}
    for name, pred, gt in paired_label_maps(gt_dir, pred_dir, missing_as_empty):
        scores = kitti_scores(pred, gt)
        iou = scores.pop("iou_matrix_pred_x_gt")
        if iou_matrices:
            scores["iou_matrix_pred_x_gt"] = iou.tolist()
        per_image[name] = scores
    results = {name: float(np.mean([scores[key] for scores in per_image.values()]))
               for name, key in DATASET_KEYS.items()}
    results["num_images"] = len(per_image)
    results["per_image"] = per_image
    return results


def run(args: argparse.Namespace) -> dict:
    try:
        results = evaluate_folders(args.gt_dir, args.pred_dir, args.missing_as_empty, args.iou_matrices)
    except (OSError, ValueError) as error:
        raise SystemExit(f"python -m zoo.evaluate kitti: error: {error}") from error
    print(f"KITTI on {results['num_images']} images: MWCov {results['MWCov']:.4f}  MUCov {results['MUCov']:.4f}  "
          f"AvgFP {results['AvgFP']:.3f}  AvgFN {results['AvgFN']:.3f}")
    return results
