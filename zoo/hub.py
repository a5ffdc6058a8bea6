"""Checkpoints as Hugging Face Hub folders: `model.safetensors` + `config.json`, loaded strictly.

Every inference network of the zoo derives from `ZooModel`, which carries huggingface_hub's
`PyTorchModelHubMixin`. Its `config.json` records the init arguments (primitives only: the mixin
silently drops what JSON cannot encode) plus `model_type`, so that a folder written for one model is
refused, by name, when loaded as another.

Nothing in a folder is trusted before it is checked: the weights' SHA-256 against the one `zoo.publish`
recorded, and the network `config.json` describes (built on the `meta` device, which allocates nothing)
against the tensor names and shapes in the safetensors header, so a wrong or hostile config fails at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import json
import warnings
from pathlib import Path
from typing import ClassVar

import torch
from huggingface_hub import PyTorchModelHubMixin

from zoo.registry import ENTRY_FILE

# model_type -> "module:Class" of its inference network. Imported lazily, never from a downloaded file.
# Only types whose module exists: a listed type that cannot be imported would fail at load time instead.
MODEL_TYPES: dict[str, str] = {
    "drlt": "zoo.drlt.model:DRLTTracker",
    "acis": "zoo.acis.model:ACISSegmenter",
    "ftmu": "zoo.ftmu.model:FTMUSegmenter",
    "alba": "zoo.alba.model:ALBASegmenter",
    "ivosw": "zoo.ivosw.model:IVOSWRecommender",
    "segmenter": "zoo.vision.segmenter:InstanceSegmenter",
    "matching-engine": "zoo.interactive.matching_engine:MatchingEngine",
}

# Files a zoo checkpoint needs; the card, plots and tables of a Hub repo are not downloaded to load it.
CHECKPOINT_FILES = ("config.json", "model.safetensors")
AUTH_HINT = "set HF_TOKEN or run `hf auth login`"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as it is; the message names the file and the fix."""


class HubError(OSError):
    """What was asked of the Hub (a repo, a revision) cannot be had; the message says why and what to do."""


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

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs):
        # The mixin has turned config.json into init arguments by now; check them against the weights before
        # they size any real tensor.
        if Path(model_id).is_dir():
            init_args = {key: value for key, value in kwargs.items() if key not in _LOADER_ARGS}
            check_config_fits_weights(cls, Path(model_id), init_args)
        return super()._from_pretrained(model_id=model_id, **kwargs)


# What the mixin's loader takes besides the init arguments (revision, map_location, strict, ...).
_LOADER_ARGS = {name for name, parameter in inspect.signature(PyTorchModelHubMixin._from_pretrained).parameters.items()
                if parameter.kind is parameter.KEYWORD_ONLY}


def model_class(model_type: str) -> type[ZooModel]:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; the zoo knows {sorted(MODEL_TYPES)}")
    module_name, class_name = MODEL_TYPES[model_type].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def read_config(folder: str | Path) -> dict:
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path} is missing: a zoo checkpoint folder holds config.json and model.safetensors "
            "(write one with `model.save_pretrained(folder)` or `python -m zoo.publish`)"
        )
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:  # UnicodeDecodeError included
        raise CheckpointError(f"{config_path} is not valid JSON ({error}): restore it, or save the model again "
                              "with `model.save_pretrained(folder)`") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise CheckpointError(f"{config_path} has no 'model_type': it was not written by the zoo's save_pretrained")
    return config


def read_model_type(folder: str | Path) -> str:
    return read_config(folder)["model_type"]


def stored_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors header alone (no tensor data is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file ({error}): it is truncated or "
                              "corrupt; restore it or download it again") from None


def _examples(names: list[str], shown: int = 3) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def check_config_fits_weights(cls: type[ZooModel], folder: Path, init_args: dict) -> None:
    """Refuse a config.json whose network does not have exactly the tensors of model.safetensors."""
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    stored = stored_shapes(weights_path)
    try:
        # Some constructors load backbone weights, which warns once per tensor on the meta device.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = cls(**init_args)
    except Exception as error:  # noqa: BLE001 - any failure means the config does not describe this network
        raise CheckpointError(
            f"{config_path} does not describe a '{cls.model_type}' network ({type(error).__name__}: {error}): "
            "restore it, or save the model again with `model.save_pretrained(folder)`"
        ) from None
    expected = skeleton.state_dict(keep_vars=True)
    # Tied tensors are stored once by safetensors, under any one of their names.
    stored_ids = {id(tensor) for name, tensor in expected.items() if name in stored}
    missing = [name for name, tensor in expected.items() if name not in stored and id(tensor) not in stored_ids]
    unexpected = [name for name in stored if name not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{config_path} and {weights_path} come from different checkpoints (or one was edited): the "
            f"'{cls.model_type}' network the "
            f"config describes lacks {len(unexpected)} of the stored tensors ({_examples(unexpected) or 'none'}) and "
            f"needs {len(missing)} that are not stored ({_examples(missing) or 'none'}); "
            "keep the two files of one `save_pretrained` together"
        )
    wrong = [f"{name} {list(tensor.shape)} vs {list(stored[name])}" for name, tensor in expected.items()
             if name in stored and tuple(tensor.shape) != stored[name]]
    if wrong:
        raise CheckpointError(
            f"{config_path} does not match {weights_path}: the shapes it implies differ from the stored ones "
            f"({_examples(wrong)}; config vs weights): restore config.json, or save the model again"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(weights_path: Path, expected: str, recorded_in: str) -> None:
    actual = file_sha256(weights_path)
    if actual != expected:
        raise CheckpointError(
            f"{weights_path} has SHA-256 {actual} but {recorded_in} records {expected}: the file is corrupt or was "
            "replaced; restore it (a Hub download: delete it from the cache so that it is downloaded again)"
        )


def published_sha256(folder: Path) -> str | None:
    """The SHA-256 a published folder's zoo.json records for its weights (None for a bare save_pretrained folder)."""
    entry_path = folder / ENTRY_FILE
    if not entry_path.is_file():
        return None
    try:
        entry = json.loads(entry_path.read_text())
    except ValueError as error:  # UnicodeDecodeError included
        raise CheckpointError(f"{entry_path} is not valid JSON ({error}): restore it, or publish the run "
                              "again") from None
    return entry.get("sha256") if isinstance(entry, dict) else None


def check_device(device: str | torch.device) -> None:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but torch finds no CUDA GPU here (torch.cuda.is_available() is "
                         "False): load with device='cpu'")
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}, but torch sees {torch.cuda.device_count()} CUDA GPU(s): "
                         "use device='cuda:0' or a smaller index")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}, but the MPS backend is not available here: load with device='cpu'")


def load_folder(
    folder: str | Path, *, expected_type: str | None = None, device: str = "cpu", sha256: str | None = None,
    sha256_source: str = "the zoo's registry",
) -> ZooModel:
    """Load a Hub-ready folder strictly, refusing one written for another model or whose weights are not the
    ones `sha256` names."""
    folder = Path(folder)
    check_device(device)
    found = read_model_type(folder)
    if expected_type is not None and found != expected_type:
        raise ValueError(
            f"{folder} holds a '{found}' checkpoint, but a '{expected_type}' model was asked for: "
            f"load it as '{found}' or point at a '{expected_type}' folder"
        )
    if found not in MODEL_TYPES:
        raise CheckpointError(f"{folder / 'config.json'} has model_type {found!r}, which this zoo does not know (it "
                              f"knows {', '.join(sorted(MODEL_TYPES))}): load it with the zoo version that wrote it")
    cls = model_class(found)
    weights_path = folder / "model.safetensors"
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} is missing (the zoo loads safetensors only)")
    if sha256:
        check_sha256(weights_path, sha256, sha256_source)
    with contextlib.redirect_stdout(io.StringIO()):  # the mixin prints "Loading weights from local directory"
        model = cls.from_pretrained(str(folder), strict=True, map_location=device)
    return model.to(device).eval()


def state_digest(module: torch.nn.Module, extra: str = "") -> str:
    """SHA-256 of a module's tensors (names and bytes) and ``extra``: a cache key that changes with the weights."""
    import hashlib

    digest = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


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


def why_unavailable(error: Exception, repo_id: str, revision: str | None, *, local_files_only: bool,
                    reachable: bool) -> str:
    """Why `repo_id` (at `revision`) could not be downloaded, and what to do about it, in one line."""
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, RevisionNotFoundError):
        return f"{repo_id} has no revision {revision!r} (give a branch, tag or commit of that repo)"
    if isinstance(error, RepositoryNotFoundError):
        return f"the Hub has no repo {repo_id}, or it is private ({AUTH_HINT} if you have access)"
    if isinstance(error, FileNotFoundError) or not reachable:
        if local_files_only:
            where = "local_files_only=True was given"
        elif constants.HF_HUB_OFFLINE:
            where = "offline mode is on (HF_HUB_OFFLINE=1)"
        else:
            where = f"the Hub ({constants.ENDPOINT}) cannot be reached"
        return f"{where} and the local Hugging Face cache does not hold it (download it once with a network)"
    if isinstance(error, EntryNotFoundError):
        return f"{repo_id} holds no zoo checkpoint ({' + '.join(CHECKPOINT_FILES)})"
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _notice(message: str) -> None:
    import sys

    print(f"[zoo] {message}", file=sys.stderr)


def fetch_checkpoint(repo_id: str, revision: str | None, cache_dir, *, local_files_only: bool,
                     reachable: bool) -> Path:
    """`download_checkpoint`, or HubError saying in one line why it cannot be had. When the Hub cannot be
    reached only the cache is asked, so the answer comes at once instead of after the client's retries."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return download_checkpoint(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=not reachable)
    except (HfHubHTTPError, OSError) as error:
        why = why_unavailable(error, repo_id, revision, local_files_only=local_files_only, reachable=reachable)
        at = f" at revision {revision!r}" if revision else ""
        raise HubError(f"cannot load {repo_id}{at}: {why}") from None


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

    A registered name is downloaded from its Hub repo at its pinned revision through huggingface_hub
    (standard cache; `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` honoured). When the Hub cannot be reached
    or does not hold the checkpoint, the copy bundled with the zoo is loaded instead, with a one-line
    notice. A `revision` asked for explicitly is never replaced by the bundled copy: it loads or raises.
    The weights of a registered name (bundled, or downloaded at the pinned revision) and of a published
    folder must have the SHA-256 their `zoo.json` records.
    """
    from zoo import registry

    check_device(device)
    if Path(name_or_path).is_dir():
        folder = Path(name_or_path)
        return load_folder(folder, device=device, sha256=published_sha256(folder),
                           sha256_source=str(folder / ENTRY_FILE))
    name = str(name_or_path)
    if name in registry.list_models():
        return _load_registered(registry.get_entry(name), revision, cache_dir, local_files_only, device)
    looks_like_repo_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if looks_like_repo_id:
        reachable = not local_files_only and hub_reachable()
        folder = fetch_checkpoint(name, revision, cache_dir, local_files_only=local_files_only, reachable=reachable)
        if not reachable and not local_files_only:
            _notice(f"the Hub cannot be reached; loading {name} from the local Hugging Face cache")
        return load_folder(folder, device=device)
    if "/" in name or Path(name).suffix:
        raise FileNotFoundError(f"{name} is not a checkpoint folder (expected config.json + model.safetensors in it)")
    registry.get_entry(name)  # raises with the closest registered names, or why a registered one is unreadable
    raise AssertionError("unreachable")


def _load_registered(entry, revision, cache_dir, local_files_only, device) -> ZooModel:
    # The bundled copy is the registered revision only; another one, asked for by name, must load or fail.
    explicit = revision is not None and revision != entry.revision
    recorded_in = str(entry.local_dir / ENTRY_FILE)

    def bundled(reason: str) -> ZooModel:
        _notice(f"{reason}; loading '{entry.name}' from the copy bundled with the zoo")
        return load_folder(entry.local_dir, expected_type=entry.model_type, device=device,
                           sha256=entry.sha256 or None, sha256_source=recorded_in)

    reachable = not local_files_only and hub_reachable()
    if not reachable and not local_files_only and not explicit:
        return bundled("the Hub cannot be reached")
    try:
        folder = fetch_checkpoint(entry.hub_repo, revision or entry.revision, cache_dir,
                                  local_files_only=local_files_only, reachable=reachable)
    except HubError as error:
        if explicit:
            raise HubError(f"{error}; without revision= '{entry.name}' loads its registered checkpoint") from None
        return bundled(str(error))
    return load_folder(folder, expected_type=entry.model_type, device=device,
                       sha256=None if explicit else entry.sha256 or None, sha256_source=recorded_in)
