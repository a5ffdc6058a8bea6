"""Image I/O shared by the video-object-segmentation readers, writers, metrics and methods.

Label PNGs hold one object id per pixel: 0 background, 1..K objects, 255 void (DAVIS 2017 convention). They come in
several encodings across benchmark releases, and `read_label_png` accepts all of them:

* mode ``P`` (DAVIS 2017, YouTube-VOS): the palette index is the id; the palette colours are ignored.
* mode ``L`` / ``LA`` / ``I`` (DAVIS 2016, e.g. ``bear/00077.png`` is ``LA``; SegTrack; re-saved masks): the grey value
  is the id, except that a mask whose only values are 0 and 255 is a *binary* mask (DAVIS 2016 convention) and is
  returned as 0/1. The alpha channel of ``LA`` is ignored.
* mode ``RGB`` / ``RGBA``: grey images (R == G == B) are read as above; coloured images are mapped back through the
  DAVIS palette, and a colour outside it is an error.

Frames are read with OpenCV and returned as RGB.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

VOID_LABEL = 255


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    # The PASCAL VOC colour map, which DAVIS annotations use (id 1 = (128, 0, 0), id 255 = (224, 224, 192)):
    # the bits of the id are spread over the high bits of R, G and B, three at a time.
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        red = green = blue = 0
        bits = label
        for shift in range(7, -1, -1):
            red |= ((bits >> 0) & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette[label] = (red, green, blue)
    palette.setflags(write=False)
    return palette


def davis_palette() -> np.ndarray:
    """The 256×3 uint8 colour palette of DAVIS annotation PNGs (read-only)."""
    return _palette()


def _grey_to_labels(grey: np.ndarray, path: Path) -> np.ndarray:
    low, high = int(grey.min(initial=0)), int(grey.max(initial=0))
    if low < 0 or high > 255:
        raise ValueError(f"{path}: grey values {low}..{high} do not fit 8-bit object ids")
    values = set(np.unique(grey).tolist())
    if values == {0, 255} or values == {255}:
        return (grey == 255).astype(np.uint8)
    return grey.astype(np.uint8)


def _colours_to_labels(rgb: np.ndarray, path: Path) -> np.ndarray:
    palette = davis_palette().astype(np.int64)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    label_of_code = {int(code): label for label, code in enumerate(palette_codes)}
    unknown = [int(code) for code in unique_codes if int(code) not in label_of_code]
    if unknown:
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:3]]
        raise ValueError(
            f"{path}: RGB label image has colours {colours} that are not in the DAVIS palette; "
            "save labels as a palette (mode P) or greyscale PNG"
        )
    labels = np.array([label_of_code[int(code)] for code in unique_codes], dtype=np.uint8)
    return labels[inverse.reshape(codes.shape)]


def read_label_png(path: str | Path) -> np.ndarray:
    """Object ids of a label image as an (H, W) uint8 array (0 background, 255 void); see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label image {path} does not exist")
    try:
        with Image.open(path) as image:
            mode = image.mode
            pixels = np.array(image)
    except OSError as error:
        raise ValueError(f"{path}: cannot decode as an image ({error})") from error
    if mode in ("P", "1"):
        return pixels.astype(np.uint8)
    if mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return _grey_to_labels(pixels, path)
    if mode == "LA":
        return _grey_to_labels(pixels[..., 0], path)
    if mode in ("RGB", "RGBA"):
        rgb = pixels[..., :3]
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return _grey_to_labels(rgb[..., 0], path)
        return _colours_to_labels(rgb, path)
    raise ValueError(f"{path}: unsupported image mode {mode!r} for a label image; use a palette or greyscale PNG")


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write (H, W) integer object ids in 0..255 as a DAVIS-palette (mode P) PNG; parent folders are created."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: labels must be a 2-D (H, W) array, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: labels must lie in 0..255, got {labels.min()}..{labels.max()}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def read_frame(path: str | Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame decoded with OpenCV."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: OpenCV cannot decode this file as an image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_frame(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write an (H, W, 3) uint8 RGB frame (JPEG/PNG/PGM by suffix); parent folders are created."""
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise ValueError(f"{path}: OpenCV could not write this file (unsupported suffix?)")
