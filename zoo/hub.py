"""Checkpoints as Hugging Face Hub folders: `model.safetensors` + `config.json`, loaded strictly.

Every inference network of the zoo derives from `ZooModel`, which carries huggingface_hub's
`PyTorchModelHubMixin`. Its `config.json` records the init arguments (primitives only: the mixin
silently drops what JSON cannot encode) plus `model_type`, so that a folder written for one model is
refused, by name, when loaded as another.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin

# model_type -> "module:Class" of its inference network. Imported lazily, never from a downloaded file.
MODEL_TYPES: dict[str, str] = {
    "drlt": "zoo.drlt.model:DRLTTracker",
    "acis": "zoo.acis.model:ACISSegmenter",
    "ftmu": "zoo.ftmu.model:FTMUSegmenter",
    "ivosw": "zoo.ivosw.model:IVOSWRecommender",
    "alba": "zoo.alba.model:ALBASegmenter",
}


class ZooModel(
    torch.nn.Module,
    PyTorchModelHubMixin,
    library_name="rl-vision-zoo",
    tags=["reinforcement-learning", "computer-vision", "rl-vision-zoo"],
    repo_url="https://github.com/rl-vision-zoo/rl-vision-zoo",
):
    """Base of every inference network: set `model_type` (a key of `MODEL_TYPES`) on the subclass."""

    model_type: ClassVar[str] = ""

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        config = dict(config if config is not None else getattr(self, "_hub_mixin_config", {}) or {})
        config["model_type"] = self.model_type
        return super().save_pretrained(save_directory, config=config, **kwargs)


def model_class(model_type: str) -> type[ZooModel]:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; the zoo knows {sorted(MODEL_TYPES)}")
    module_name, class_name = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def read_model_type(folder: str | Path) -> str:
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} is missing: a zoo checkpoint folder holds config.json and model.safetensors "
            "(write one with `model.save_pretrained(folder)` or `python -m zoo.publish`)"
        )
    config = json.loads(config_path.read_text())
    if "model_type" not in config:
        raise ValueError(f"{config_path} has no 'model_type': it was not written by the zoo's save_pretrained")
    return config["model_type"]


def load_folder(folder: str | Path, *, expected_type: str | None = None, device: str = "cpu") -> ZooModel:
    """Load a Hub-ready folder strictly, refusing one written for another model."""
    folder = Path(folder)
    found = read_model_type(folder)
    if expected_type is not None and found != expected_type:
        raise ValueError(
            f"{folder} holds a '{found}' checkpoint, but a '{expected_type}' model was asked for: "
            f"load it as '{found}' or point at a '{expected_type}' folder"
        )
    cls = model_class(found)
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder / 'model.safetensors'} is missing (the zoo loads safetensors only)")
    model = cls.from_pretrained(str(folder), strict=True, map_location=device)
    return model.to(device).eval()
