"""Vision substrate shared by the VOS methods: instance proposals (`zoo.vision.proposals`), optical flow
(`zoo.vision.flow`) and their on-disk cache (`zoo.vision.cache`).

This module holds the two helpers both need: checking a frame is RGB (read them with `datamodules.image_io.read_rgb`),
and building a torchvision model with its pretrained weights when they can be had, else a seeded random init with a
one-line warning saying how to get them.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

DEFAULT_WEIGHTS = "DEFAULT"


def check_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be an (H, W, 3) uint8 RGB array, got shape {image.shape} dtype {image.dtype} "
            "(read frames with datamodules.image_io.read_rgb)"
        )
    return image


def build_with_weights(
    build: Callable[[Any], "torch.nn.Module"], default_weights: Any, weights: str | os.PathLike | None, seed: int = 0
) -> tuple["torch.nn.Module", str]:
    """Build a torchvision model and say which weights it carries.

    ``build(w)`` must build the model with torchvision weights enum ``w`` or, for ``w=None``, with no pretrained
    parameters at all (backbone included). ``weights`` is ``"DEFAULT"`` (``default_weights``, falling back to random
    init with a warning when they cannot be loaded, e.g. offline), ``None`` (random init, no warning) or the path of
    a local state-dict file (loaded strictly; a failure is an error, not a fallback).

    Returns the model in eval mode and a tag for cache keys: the weights enum name, ``file:<name>:<size>:<mtime>``
    or ``random-init-seed<seed>`` (random init is seeded so that cached outputs stay reproducible).
    """
    import torch

    def random_init() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(None)

    if weights is None:
        return random_init().eval(), f"random-init-seed{seed}"
    if isinstance(weights, str) and weights == DEFAULT_WEIGHTS:
        try:
            return build(default_weights).eval(), str(default_weights).split(".")[-1]
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
            target = Path(torch.hub.get_dir()) / "checkpoints" / Path(default_weights.url).name
            reason = " ".join(str(error).split())[:120]
            warnings.warn(
                f"{default_weights} unavailable ({type(error).__name__}: {reason}); using random init. "
                f"Get them with: curl -L {default_weights.url} -o {target} (or pass weights=<path to .pth>)",
                stacklevel=3,
            )
            return random_init().eval(), f"random-init-seed{seed}"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass weights='DEFAULT' or None instead")
    model = random_init()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    stat = path.stat()
    return model.eval(), f"file:{path.name}:{stat.st_size}:{int(stat.st_mtime)}"
