"""Synthetic street scenes in the layout of Ren & Zemel's KITTI car instances (see `datamodules/kitti_instances.py`).

`write_synthetic_kitti(root)` writes `images/`, colour-coded instance PNGs in `gt/` (train) and `gt_man/`
(val, test), and `train.txt`, `valid_man.txt`, `test_man.txt`. A scene is sky, a band of trees and buildings at the
horizon and a road with lane marks converging to a vanishing point; 0–8 cars (body, cabin with dark windows,
wheels) stand on it, smaller the closer they are to the horizon and drawn far to near so that near cars occlude
far ones. Cars hidden below a few dozen pixels are not annotated. Everything follows from `seed`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from datamodules.image_io import write_rgb
from datamodules.instance_io import relabel_consecutive, write_colour_coded_png

MIN_VISIBLE_PIXELS = 80
CAR_COLOURS = np.array([[180, 30, 30], [30, 60, 170], [225, 225, 225], [35, 35, 40], [150, 155, 160],
                        [200, 160, 40], [40, 120, 60]], dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int, horizon: int, vanishing_x: float) -> np.ndarray:
    rows = np.arange(height, dtype=np.float32)[:, None, None]
    sky = np.array([150, 185, 230], np.float32) + (rows / max(horizon, 1)) * np.array([60, 45, 15], np.float32)
    road = np.array([95, 95, 100], np.float32) * rng.uniform(0.85, 1.15) + (rows - horizon) * 0.08
    image = np.where(rows < horizon, sky, road).repeat(width, axis=1)
    for _ in range(int(rng.integers(6, 14))):  # trees and buildings along the horizon
        left = int(rng.uniform(-50, width))
        block_width, block_height = int(rng.uniform(40, 220)), int(rng.uniform(15, 0.6 * horizon))
        colour = rng.choice([[50, 95, 45], [70, 110, 55], [120, 110, 100], [150, 140, 130]]) * rng.uniform(0.8, 1.1)
        cv2.rectangle(image, (left, horizon - block_height), (left + block_width, horizon + 4), colour.tolist(), -1)
    for offset in (-0.9, -0.3, 0.3, 0.9):  # lane marks
        bottom_x = int(vanishing_x + offset * width)
        cv2.line(image, (int(vanishing_x), horizon), (bottom_x, height), (215, 215, 205), 3)
    return image + rng.normal(0, 5, image.shape).astype(np.float32)


def _draw_car(image, labels, rng, car_id, bottom, centre_x, car_width):
    car_height = car_width * rng.uniform(0.45, 0.7)
    body_top = bottom - 0.6 * car_height
    left, right = centre_x - car_width / 2, centre_x + car_width / 2
    colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))] * rng.uniform(0.85, 1.1)
    inset = car_width * rng.uniform(0.12, 0.25)
    cabin = np.array([[left + inset, body_top], [left + inset * 1.6, bottom - car_height],
                      [right - inset * 1.6, bottom - car_height], [right - inset, body_top]]).round().astype(np.int32)
    window = cabin.astype(np.float32)
    window[:, 0] = centre_x + (window[:, 0] - centre_x) * 0.85
    window[1:3, 1] += 0.15 * (body_top - window[1, 1])
    body = (int(left), int(body_top)), (int(right), int(bottom - 0.08 * car_height))
    wheel_radius = max(2, int(0.13 * car_width))
    wheels = [(int(left + 0.2 * car_width), int(bottom - wheel_radius)),
              (int(right - 0.2 * car_width), int(bottom - wheel_radius))]
    for canvas, fill in ((labels, car_id), (image, None)):
        cv2.fillPoly(canvas, [cabin], fill if fill is not None else (colour * 0.92).tolist())
        cv2.rectangle(canvas, *body, fill if fill is not None else colour.tolist(), -1)
        for wheel in wheels:
            cv2.circle(canvas, wheel, wheel_radius, fill if fill is not None else (20, 20, 20), -1)
    cv2.fillPoly(image, [window.round().astype(np.int32)], (40, 50, 65))
    cv2.rectangle(image, body[0], (body[1][0], int(body_top + 0.25 * (body[1][1] - body_top))),
                  np.minimum(colour * 1.15, 255).tolist(), -1)  # light catching the top of the body
    cv2.rectangle(image, *body, (colour * 0.5).tolist(), 1)


def render_street(rng: np.random.Generator, height: int = 375, width: int = 1242) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 RGB image and (H, W) int64 car ids 1..K (0 = background)."""
    horizon = int(height * rng.uniform(0.35, 0.5))
    vanishing_x = width * rng.uniform(0.35, 0.65)
    image = _background(rng, height, width, horizon, vanishing_x)
    labels = np.zeros((height, width), np.int32)
    num_cars = int(rng.choice(9, p=[0.04, 0.14, 0.18, 0.18, 0.16, 0.12, 0.08, 0.06, 0.04]))
    bottoms = np.sort(rng.uniform(horizon + 0.08 * height, height + 0.05 * height, num_cars))
    for car_id, bottom in enumerate(bottoms, start=1):  # far (near the horizon) first, near cars occlude them
        depth = (bottom - horizon) / (height - horizon)
        car_width = (0.04 + 0.26 * depth) * width * rng.uniform(0.8, 1.2)
        _draw_car(image, labels, rng, car_id, bottom, rng.uniform(0.05, 0.95) * width, car_width)
    image = cv2.GaussianBlur(image, (3, 3), 0)
    ids, counts = np.unique(labels, return_counts=True)
    for car_id, count in zip(ids, counts):
        if car_id != 0 and count < MIN_VISIBLE_PIXELS:
            labels[labels == car_id] = 0
    return np.clip(image, 0, 255).astype(np.uint8), relabel_consecutive(labels)


def write_synthetic_kitti(root, num_images: int = 48, seed: int = 0, size: tuple[int, int] = (375, 1242)) -> Path:
    """Write `num_images` scenes of `size` (height, width) under `root`, split 2/3 train, 1/6 val, 1/6 test
    (at least one each). Returns `root`."""
    if num_images < 3:
        raise ValueError("write_synthetic_kitti needs at least 3 images (one per split)")
    root = Path(root)
    rng = np.random.default_rng(seed)
    num_val = num_test = max(1, num_images // 6)
    num_train = num_images - num_val - num_test
    splits = {"train.txt": range(num_train), "valid_man.txt": range(num_train, num_train + num_val),
              "test_man.txt": range(num_train + num_val, num_images)}
    root.mkdir(parents=True, exist_ok=True)
    for number in range(num_images):
        image, labels = render_street(rng, *size)
        name = f"{number:06d}.png"
        write_rgb(root / "images" / name, image)
        write_colour_coded_png(root / ("gt" if number < num_train else "gt_man") / name, labels)
    for list_name, numbers in splits.items():
        (root / list_name).write_text("".join(f"{n}\n" for n in numbers))
    return root
