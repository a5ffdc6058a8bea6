"""Synthetic rosettes in the CVPPP LSC A1 layout: the embedded default data of the ACIS recipes.

`write_synthetic_cvppp(root)` writes `root/A1/plantNNN_{rgb,label,fg}.png` (and, with `num_test`, images only under
`root/testing/A1/`), exactly what `datamodules.cvppp.CVPPPLeaves` reads from the real release. A plant is 3–25
elliptical leaves radiating from a centre in phyllotactic order (137.5° apart), older leaves larger and underneath,
each with its own shade of green, a darker rim and a midrib, on a noisy soil texture. The darker rims keep touching
leaves separable at 224², so a small network can learn the task. Everything follows from `seed`.
`write_cvppp_hdf5` converts such a folder to the CVPPP 2017 HDF5 layout.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datamodules.image_io import read_rgb, write_rgb
from datamodules.instance_io import read_label_png, relabel_consecutive, write_label_png

GOLDEN_ANGLE_DEG = 137.5
MIN_VISIBLE_PIXELS = 60


def _soil(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = np.array([112, 86, 62], dtype=np.float32) * rng.uniform(0.8, 1.15)
    coarse = cv2.resize(rng.normal(0, 1, (height // 24 + 2, width // 24 + 2)).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 1, (height, width)).astype(np.float32)
    texture = 18 * coarse + 10 * grain
    return base[None, None, :] + texture[..., None] * np.array([1.0, 0.85, 0.7], dtype=np.float32)


def render_rosette(rng: np.random.Generator, height: int = 530, width: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """One plant: (H, W, 3) uint8 RGB image and (H, W) int64 leaf ids 1..K (0 = soil)."""
    image = _soil(rng, height, width)
    labels = np.zeros((height, width), dtype=np.int32)
    scale = min(height, width) / 500
    centre = np.array([width / 2, height / 2]) + rng.uniform(-15, 15, 2) * scale
    radius = rng.uniform(130, 200) * scale
    num_leaves = int(rng.integers(3, 26))
    first_angle = rng.uniform(0, 360)
    for index in range(num_leaves):
        age = index / max(num_leaves - 1, 1)  # 0 = oldest (largest, drawn first, underneath)
        angle = np.deg2rad(first_angle + index * GOLDEN_ANGLE_DEG + rng.uniform(-12, 12))
        length = radius * (1.0 - 0.6 * age) * rng.uniform(0.85, 1.1)
        half_length = length * rng.uniform(0.36, 0.44)
        half_width = half_length * rng.uniform(0.55, 0.85)
        direction = np.array([np.cos(angle), np.sin(angle)])
        blade_centre = centre + direction * (length - half_length)
        petiole_end = centre + direction * (length - 2 * half_length + 2)
        shade = np.array([rng.uniform(50, 110), rng.uniform(115, 200), rng.uniform(25, 75)], dtype=np.float32)
        ellipse = (tuple(np.round(blade_centre).astype(int)), (int(half_length), int(half_width)),
                   float(np.rad2deg(angle)), 0, 360)
        petiole = (tuple(np.round(centre).astype(int)), tuple(np.round(petiole_end).astype(int)))
        stalk = max(2, int(4 * scale))
        leaf_id = index + 1
        cv2.ellipse(labels, *ellipse, color=leaf_id, thickness=-1)
        cv2.line(labels, *petiole, color=leaf_id, thickness=stalk)
        cv2.line(image, *petiole, color=(shade * 0.8).tolist(), thickness=stalk)
        cv2.ellipse(image, *ellipse, color=(shade * 0.55).tolist(), thickness=-1)  # the rim that stays visible
        inner = (ellipse[0], (max(1, int(half_length) - 4), max(1, int(half_width) - 4)), *ellipse[2:])
        cv2.ellipse(image, *inner, color=shade.tolist(), thickness=-1)
        highlight = (ellipse[0], (max(1, int(half_length * 0.6)), max(1, int(half_width * 0.5))), *ellipse[2:])
        cv2.ellipse(image, *highlight, color=np.minimum(shade * 1.12, 255).tolist(), thickness=-1)
        midrib_end = blade_centre + direction * half_length * 0.8
        cv2.line(image, petiole[1], tuple(np.round(midrib_end).astype(int)), color=(shade * 0.75).tolist(),
                 thickness=max(1, stalk // 2))
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    image = cv2.GaussianBlur(image, (3, 3), 0)
    ids, counts = np.unique(labels, return_counts=True)
    for leaf_id, count in zip(ids, counts):
        if leaf_id != 0 and count < MIN_VISIBLE_PIXELS:  # almost hidden under younger leaves: not annotated
            labels[labels == leaf_id] = 0
    return np.clip(image, 0, 255).astype(np.uint8), relabel_consecutive(labels)


def write_synthetic_cvppp(root, num_images: int = 32, seed: int = 0, size: tuple[int, int] = (530, 500),
                          num_test: int = 0) -> Path:
    """Write `num_images` annotated plants to `root/A1/` (and `num_test` unannotated ones to `root/testing/A1/`)
    in the LSC file naming; `size` is (height, width), the A1 default. Returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for number in range(1, num_images + num_test + 1):
        image, labels = render_rosette(rng, height, width)
        if number <= num_images:
            folder, name = root / "A1", f"plant{number:03d}"
            write_label_png(folder / f"{name}_label.png", labels, palette=True)
        else:
            folder, name = root / "testing" / "A1", f"plant{number - num_images:03d}"
        write_rgb(folder / f"{name}_rgb.png", image)
        write_label_png(folder / f"{name}_fg.png", (labels > 0).astype(np.uint8) * 255)
    return root


def write_cvppp_hdf5(a1_dir, out_dir, testing: bool = False) -> list[Path]:
    """Convert an A1 folder to the CVPPP 2017 HDF5 release: `CVPPP2017_training_images.h5` (`A1/<plant>/rgb`
    as RGBA like the release, `A1/<plant>/fg`) and `CVPPP2017_training_truth.h5` (`A1/<plant>/label`,
    `A1/<plant>/count`); with `testing`, `CVPPP2017_testing_images.h5` only. Returns the files written."""
    import h5py

    a1_dir, out_dir = Path(a1_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = "testing" if testing else "training"
    images_path = out_dir / f"CVPPP2017_{kind}_images.h5"
    truth_path = out_dir / "CVPPP2017_training_truth.h5"
    written = [images_path] if testing else [images_path, truth_path]
    with h5py.File(images_path, "w") as images_file:
        truth_file = None if testing else h5py.File(truth_path, "w")
        try:
            for rgb_path in sorted(a1_dir.glob("plant*_rgb.png")):
                plant = rgb_path.name[: -len("_rgb.png")]
                rgb = read_rgb(rgb_path)
                rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
                group = images_file.create_group(f"A1/{plant}")
                group.create_dataset("rgb", data=rgba)
                fg_path = a1_dir / f"{plant}_fg.png"
                if fg_path.exists():
                    group.create_dataset("fg", data=(read_label_png(fg_path) > 0).astype(np.uint8))
                if truth_file is not None:
                    labels = read_label_png(a1_dir / f"{plant}_label.png")
                    truth = truth_file.create_group(f"A1/{plant}")
                    truth.create_dataset("label", data=labels.astype(np.uint8))
                    truth.create_dataset("count", data=np.int64((np.unique(labels) != 0).sum()))
        finally:
            if truth_file is not None:
                truth_file.close()
    return written
