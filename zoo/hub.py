"""Checkpoints as Hugging Face Hub folders: `model.safetensors` + `config.json`, loaded strictly.

Every inference network of the zoo derives from `ZooModel`, which carries huggingface_hub's
`PyTorchModelHubMixin`. Its `config.json` records the init arguments (primitives only: the mixin
silently drops what JSON cannot encode) plus `model_type`, so that a folder written for one model is
refused, by name, when loaded as another.
"""

from __future__ import annotations

import contextlib
import importlib
import io
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
    "segmenter": "zoo.vision.segmenter:InstanceSegmenter",
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
    with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints "Loading weights from local directory"
        model = cls.from_pretrained(str(folder), strict=True, map_location=device)
    return model.to(device).eval()


# Files a zoo checkpoint needs; the card, plots and tables of a Hub repo are not downloaded to load it.
CHECKPOINT_FILES = ("config.json", "model.safetensors")


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """A quick TCP probe, so that a machine without network falls back at once instead of after
    huggingface_hub's ~25 s of retries. Offline mode (`HF_HUB_OFFLINE=1`) counts as reachable: the
    client then serves its cache itself."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    url = urlparse(endpoint or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def download_checkpoint(
    repo_id: str, *, revision: str | None = None, cache_dir=None, local_files_only: bool = False
) -> Path:
    """Fetch `config.json` + `model.safetensors` of a Hub repo into the standard cache; returns the snapshot folder."""
    from huggingface_hub import hf_hub_download

    paths = [
        hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            library_name="rl-vision-zoo",
        )
        for filename in CHECKPOINT_FILES
    ]
    return Path(paths[0]).parent


def _notice(message: str) -> None:
    import sys

    print(f"[zoo] {message}", file=sys.stderr)


def load(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    device: str = "cpu",
) -> ZooModel:
    """Load a zoo model in eval mode: a registered name (`zoo.list_models()`), a local checkpoint folder,
    or a Hub repo id `org/name` holding a zoo checkpoint.

    A registered name is downloaded from its Hub repo at its pinned revision (or `revision`) through
    huggingface_hub (standard cache; `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` honoured). When the Hub
    cannot be reached or does not hold the checkpoint, the copy bundled with the zoo is loaded instead,
    with a one-line notice.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from zoo import registry

    if Path(name_or_path).is_dir():
        return load_folder(name_or_path, device=device)
    name = str(name_or_path)
    if name in registry.list_models():
        entry = registry.get_entry(name)
        wanted_revision = revision or entry.revision
        if not local_files_only and not hub_reachable():
            _notice(f"the Hub cannot be reached; loading '{name}' from the copy bundled with the zoo")
            return load_folder(entry.local_dir, expected_type=entry.model_type, device=device)
        try:
            folder = download_checkpoint(
                entry.hub_repo, revision=wanted_revision, cache_dir=cache_dir, local_files_only=local_files_only
            )
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
            reason = type(error).__name__
            _notice(f"{entry.hub_repo} unavailable ({reason}); loading '{name}' from the copy bundled with the zoo")
            return load_folder(entry.local_dir, expected_type=entry.model_type, device=device)
        return load_folder(folder, expected_type=entry.model_type, device=device)
    looks_like_repo_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_repo_id:
        folder = download_checkpoint(name, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        return load_folder(folder, device=device)
    if "/" in name or Path(name).suffix:
        raise FileNotFoundError(f"{name} is not a checkpoint folder (expected config.json + model.safetensors in it)")
    registry.get_entry(name)  # raises with the closest registered names
    raise AssertionError("unreachable")
