"""Reading and writing the PNGs of instance segmentation benchmarks (CVPPP leaves, KITTI cars).

Label images come in three encodings, all read to an (H, W) int64 map with 0 = background:
- palette ("P") PNGs, the CVPPP release: the palette index is the instance id;
- 8- or 16-bit grayscale PNGs (an alpha channel is ignored): the value is the id;
- colour-coded RGB PNGs (Ren & Zemel's KITTI `gt/`): every distinct non-black colour is one instance, numbered
  1..K in the order of the packed colour value (R·2^16 + G·2^8 + B), the order of their `sep_labels.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from datamodules.image_io import check_label_map, open_label_image

MAX_INSTANCES = 255


class InstanceDataError(ValueError):
    """An image or label file that cannot be used as instance segmentation data; the message names the file."""


def _colour_coded_to_ids(rgb: np.ndarray) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, ids = np.unique(packed, return_inverse=True)
    ids = ids.reshape(packed.shape)
    if colours[0] != 0:  # no black pixel: every colour is an instance
        ids = ids + 1
    return ids.astype(np.int64)


def read_label_png(path, max_instances: int = MAX_INSTANCES) -> np.ndarray:
    """(H, W) int64 instance ids, 0 = background; see the module docstring for the accepted encodings.

    A 16-bit label image is accepted when its ids look like instance ids (at most `max_instances` distinct
    non-zero values) and refused otherwise, since a 16-bit intensity or depth image saved by mistake would
    otherwise become thousands of one-pixel "instances"."""
    path = Path(path)
    kind, pixels = open_label_image(path, error=InstanceDataError)
    # Unlike VOS labels, a colour is an instance code (not a palette entry) and ids may exceed 8 bits.
    if kind == "colour":
        labels = _colour_coded_to_ids(pixels)
        if labels.max() > max_instances:
            raise InstanceDataError(
                f"{path}: colour-coded label image with {labels.max()} distinct colours does not look like an "
                f"instance label map (at most {max_instances} instances expected); is this the RGB photograph?"
            )
        return labels
    labels = pixels.astype(np.int64)
    if kind == "grey" and pixels.dtype != np.uint8:
        if labels.min() < 0:
            raise InstanceDataError(f"{path}: negative values in a label image; ids must be 0 (background) or positive")
        num_instances = int((np.unique(labels) != 0).sum())
        if num_instances > max_instances:
            raise InstanceDataError(
                f"{path}: 16-bit label image with {num_instances} distinct non-zero values does not look like an "
                f"instance label map (at most {max_instances} instances expected); save the labels with one id per "
                "instance (0 = background), e.g. as an 8-bit palette or grayscale PNG"
            )
    return labels


def write_label_png(path, labels, palette: bool = False) -> Path:
    """Write an (H, W) map of ids ≥ 0 as an 8-bit PNG (a palette PNG when `palette`, like the CVPPP release),
    or as a 16-bit grayscale PNG when an id exceeds 255."""
    path = Path(path)
    labels = check_label_map(path, labels, max_id=65535)
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels.size and labels.max() > 255:
        Image.fromarray(labels.astype(np.uint16)).save(path)
        return path
    image = Image.fromarray(labels.astype(np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette(label_palette().reshape(-1).tolist())
    image.save(path)
    return path


def label_palette(num_colours: int = 256, seed: int = 7) -> np.ndarray:
    """(num_colours, 3) uint8 colours, black first, the rest random but well separated in brightness."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, size=(num_colours, 3), dtype=np.int64)
    colours[0] = 0
    return colours.astype(np.uint8)


def write_colour_coded_png(path, labels) -> Path:
    """Write an (H, W) id map as an RGB PNG, one distinct colour per id (black = background); ids ≤ 255."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.size and labels.max() > 255:
        raise ValueError(f"{path}: colour-coded labels support ids up to 255")
    colours = label_palette()
    # the red channel carries the id, so colours are distinct and their packed order is the id order
    colours[1:, 0] = np.arange(1, 256, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(colours[labels.astype(np.int64)]).save(path)
    return path


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Renumber the ids of an (H, W) map to 1..K keeping their order (0 stays background)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.astype(np.int64)


def paired_label_files(gt_dir, pred_dir, missing_as_empty: bool = False) -> list[tuple[str, Path, Path | None]]:
    """(name, ground-truth file, prediction file or None) for every label PNG of `gt_dir`, in name order.

    In a CVPPP A1 folder only the `*_label.png` files are ground truth (name = `plantNNN`). A prediction is
    `pred_dir/<file name>`, `pred_dir/<name>.png` or `pred_dir/<name>_label.png`; a missing one is an error
    unless `missing_as_empty` (then None: an image with nothing predicted)."""
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: {what} folder not found")
    gt_files = sorted(gt_dir.glob("*_label.png")) or sorted(gt_dir.glob("*.png"))
    if not gt_files:
        raise FileNotFoundError(f"{gt_dir}: no label PNG in it")
    pairs, missing = [], []
    for gt_file in gt_files:
        name = gt_file.stem.removesuffix("_label")
        candidates = [pred_dir / gt_file.name, pred_dir / f"{name}.png", pred_dir / f"{name}_label.png"]
        found = next((path for path in candidates if path.exists()), None)
        if found is None:
            missing.append(gt_file.name)
        pairs.append((name, gt_file, found))
    if missing and not missing_as_empty:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{pred_dir}: no prediction for {shown}; write one label PNG per ground-truth image under the same "
            "name (or pass --missing-as-empty to score them as empty predictions)"
        )
    return pairs


def paired_label_maps(gt_dir, pred_dir, missing_as_empty: bool = False) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, predicted ids, ground-truth ids) for the files of `paired_label_files`, a missing prediction being all
    background; a prediction of another size than its ground truth is an error naming both files."""
    for name, gt_file, pred_file in paired_label_files(gt_dir, pred_dir, missing_as_empty):
        gt = read_label_png(gt_file)
        pred = np.zeros_like(gt) if pred_file is None else read_label_png(pred_file)
        if pred.shape != gt.shape:
            raise InstanceDataError(f"{pred_file}: {pred.shape[1]}×{pred.shape[0]} but its ground truth {gt_file} is "
                                    f"{gt.shape[1]}×{gt.shape[0]}; predict at the ground truth's size")
        yield name, pred, gt
