"""Pixel I/O shared by every reader, writer and method: RGB images, and the mode handling of label PNGs.

RGB images are decoded with OpenCV (its JPEG decoder is what the VOS and vision code was validated with) and returned
as RGB, not OpenCV's BGR. Label PNGs are opened with PIL, which keeps the palette index of mode ``P`` images (OpenCV
would expand it to colours); what an id *means* differs per benchmark, so `datamodules.vos_io` and
`datamodules.instance_io` each turn the pixels returned by `open_label_image` into ids their own way.

It imports no torch, so metrics load it cheaply.
"""

from __future__ import annotations

import io
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
    data = np.fromfile(path, dtype=np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg") and _jpeg_is_truncated(data):
        raise ValueError(
            f"{path}: the JPEG file is truncated (it has no end-of-image marker, and its last rows would decode as "
            "grey); re-download or re-extract it"
        )
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"{path}: cannot read image: the file is truncated or not an image format OpenCV decodes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _jpeg_is_truncated(data: np.ndarray) -> bool:
    # libjpeg pads a cut-off scan with grey and only prints a warning, so OpenCV's decode succeeds. A complete file
    # ends with the end-of-image marker FFD9 (two bytes to compare, nothing to decode again); the few files that
    # carry bytes after it are decoded once more by PIL, which raises on a truncated scan.
    if data.size >= 2 and data[-2] == 0xFF and data[-1] == 0xD9:
        return False
    from PIL import ImageFile

    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return data.size > 0 and data[0] == 0xFF  # a JPEG cut short; anything else is left to OpenCV's message
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return False


def _warn_if_translucent(path: Path) -> None:
    # PIL reads only the header here; the alpha plane is decoded just for the (rare) images that have one.
    # JPEG has no alpha channel, so video frames skip even the header read.
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return
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


def open_label_image(path: str | os.PathLike, error: type[ValueError] = ValueError) -> tuple[str, np.ndarray]:
    """The pixels of a label image and how to read them: ``("index", ids)`` for palette (``P``) and 1-bit images,
    ``("grey", values)`` for ``L`` / ``LA`` / ``I`` / ``I;16`` / ``F`` images and for RGB(A) ones whose three channels
    are equal, ``("colour", (H, W, 3) uint8)`` for other RGB(A) ones. Alpha channels are ignored.

    A missing file is a FileNotFoundError, an undecodable file or an unsupported mode an `error` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label image {path} does not exist")
    try:
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.array(image)
    except (OSError, ValueError) as decode_error:
        raise error(f"{path}: cannot decode as an image ({decode_error})") from decode_error
    if mode in ("P", "1"):
        return "index", pixels
    if mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return "grey", pixels
    if mode == "LA":
        return "grey", pixels[..., 0]
    if mode in ("RGB", "RGBA"):
        rgb = pixels[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return "grey", rgb[..., 0]
        return "colour", rgb
    raise error(f"{path}: unsupported image mode {mode!r} for a label image; use a palette, greyscale or RGB PNG")


def check_label_map(path: str | os.PathLike, labels, max_id: int) -> np.ndarray:
    """`labels` as an array, checked to be an (H, W) map of ids in 0..max_id before it is written to `path`."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be a 2-D (H, W) array, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > max_id):
        raise ValueError(f"{path}: labels must lie in 0..{max_id}, got {labels.min()}..{labels.max()}")
    return labels
