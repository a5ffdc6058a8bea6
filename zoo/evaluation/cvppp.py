"""`python -m zoo.evaluate cvppp --gt-dir G --pred-dir P [--json OUT]`: CVPPP leaf segmentation scores of label PNGs.

G holds ground-truth label PNGs (`<name>.png`, or a CVPPP A1 folder whose `plantNNN_label.png` are used); P one
predicted label PNG per image under the same name (`<name>.png` or `<name>_label.png` also match). Scores are the
organisers' (see `zoo.metrics.cvppp`): means over images of SBD, FBD, DiC and |DiC| (plus both BestDice directions),
their population standard deviations under "std", and every image's scores under "per_image".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from datamodules.instance_io import paired_label_maps
from zoo.metrics.cvppp import SCORE_KEYS, cvppp_scores


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt-dir", type=Path, required=True, help="folder of ground-truth label PNGs")
    parser.add_argument("--pred-dir", type=Path, required=True, help="folder of predicted label PNGs, same names")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a missing prediction as an image with no leaf instead of stopping")


def evaluate_folders(gt_dir, pred_dir, missing_as_empty: bool = False) -> dict:
    per_image = {}
    for name, pred, gt in paired_label_maps(gt_dir, pred_dir, missing_as_empty):
        per_image[name] = cvppp_scores(pred, gt)
    columns = {key: np.array([scores[key] for scores in per_image.values()], dtype=np.float64) for key in SCORE_KEYS}
    results = {key: float(values.mean()) for key, values in columns.items()}
    results["std"] = {key: float(values.std()) for key, values in columns.items()}
    results["num_images"] = len(per_image)
    results["per_image"] = per_image
    return results


def run(args: argparse.Namespace) -> dict:
    try:
        results = evaluate_folders(args.gt_dir, args.pred_dir, args.missing_as_empty)
    except (OSError, ValueError) as error:
        raise SystemExit(f"python -m zoo.evaluate cvppp: error: {error}") from error
    print(f"CVPPP on {results['num_images']} images: SBD {results['SBD']:.4f}  FBD {results['FBD']:.4f}  "
          f"DiC {results['DiC']:+.3f}  |DiC| {results['absDiC']:.3f}")
    return results
