"""Pixel I/O shared by every reader, writer and method: RGB images, and the mode handling of label PNGs.

RGB images are decoded with OpenCV (its JPEG decoder is what the VOS and vision code was validated with) and returned
as RGB, not OpenCV's BGR. Label PNGs are opened with PIL, which keeps the palette index of mode ``P`` images (OpenCV
would expand it to colours); what an id *means* differs per benchmark, so `datamodules.vos_io` and
`datamodules.instance_io` each turn the pixels returned by `open_label_image` into ids their own way.

It imports no torch, so metrics load it cheaply.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array.

    Grey images are repeated over the channels and 16-bit ones keep their 8 most significant bits. An alpha channel
    is dropped (the CVPPP release stores RGBA with an opaque alpha), with a warning when it is not fully opaque,
    because its content would otherwise be lost silently.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    _warn_if_translucent(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: cannot read image: the file is truncated or not an image format OpenCV decodes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _warn_if_translucent(path: Path) -> None:
    # PIL reads only the header here; the alpha plane is decoded just for the (rare) images that have one
    try:
        with Image.open(path) as image:
            if image.mode not in _ALPHA_MODES and not (image.mode == "P" and "transparency" in image.info):
                return
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
    except (OSError, ValueError):
        return  # undecodable: OpenCV's read reports it
    if alpha.min() < 255:
        warnings.warn(f"{path}: the alpha channel is not opaque; it is ignored and the RGB values are used")


def write_rgb(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an (H, W, 3) uint8 RGB image (JPEG with `quality`, PNG, PGM, ... by suffix); parent folders are created."""
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise ValueError(f"{path}: OpenCV could not write this file (unsupported suffix?)")
    return path
