"""The zoo's class-agnostic instance segmenter: torchvision Mask R-CNN (object / background) on an ImageNet
EfficientNet-Lite0 + FPN, trained by `python -m recipes.segmenter_vos` on the real instance masks under
`../shared/realdata` and synthetic VOS frames.

It stands in for the COCO-trained Mask R-CNN (ALBA), YOLACT (FTMU) and the quality network's backbone needs where
torchvision's COCO weights cannot be downloaded. `zoo.vision.proposals.ProposalGenerator` uses it by default then.

    segmenter = zoo.load("segmenter-vos")
    detections = segmenter.detect(rgb)          # dict of boxes (x0 y0 x1 y1), scores, masks (N, H, W) bool

Sized for 2 CPU cores (the R50 Mask R-CNN runs at 0.04 frames/s there): 128-channel FPN, a 512-d box head, a mask
head of two convolutions (128 then 256 channels) whose 256-channel output is the per-proposal feature ALBA uses
(averaged over its 14 x 14 grid), BatchNorm of the backbone frozen (batches of two images cannot estimate it).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from zoo.hub import ZooModel
from zoo.vision import check_rgb


class FrozenBatchNormBackbone(nn.Module):
    """timm features-only body + FPN, as torchvision's detection models expect (`out_channels`, dict output).

    BatchNorm layers stay in eval mode with frozen affine parameters, and the stem plus the first
    ``frozen_stages`` block stages take no gradient (low-level ImageNet filters need no retraining here).
    """

    def __init__(self, name: str, fpn_channels: int, frozen_stages: int, pretrained: bool, seed: int = 0):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        from zoo.backbones import create_backbone, freeze_for_fine_tuning

        self.body, self.weights_source = create_backbone(
            name, pretrained=pretrained, seed=seed, features_only=True, out_indices=(1, 2, 3, 4)
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), fpn_channels, LastLevelMaxPool())
        self.out_channels = fpn_channels
        freeze_for_fine_tuning(self.body, frozen_stages)

    def train(self, mode: bool = True):
        from zoo.backbones import batch_norm_to_eval

        super().train(mode)
        batch_norm_to_eval(self.body)
        return self

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(images)
        return self.fpn(OrderedDict((str(index), feature) for index, feature in enumerate(features)))


def build_mask_rcnn(
    backbone: nn.Module,
    *,
    min_size: int | tuple[int, ...],
    max_size: int,
    box_score_thresh: float,
    box_nms_thresh: float,
    detections_per_img: int,
    rpn_proposals: int,
    box_head_size: int,
    seed: int = 0,
) -> nn.Module:
    """torchvision MaskRCNN, two classes, on ``backbone`` (EfficientNet-Lite normalisation: mean = std = 0.5)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    channels = backbone.out_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        return MaskRCNN(
            backbone,
            num_classes=None,
            min_size=min_size,
            max_size=max_size,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
            rpn_pre_nms_top_n_test=rpn_proposals,
            rpn_post_nms_top_n_test=rpn_proposals,
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=500,
            box_head=TwoMLPHead(channels * 7 * 7, box_head_size),
            box_predictor=FastRCNNPredictor(box_head_size, 2),
            box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh,
            box_detections_per_img=detections_per_img,
            box_batch_size_per_image=256,
            mask_head=MaskRCNNHeads(channels, (128, 256), 1),
            mask_predictor=MaskRCNNPredictor(256, 128, 2),
        )


class InstanceSegmenter(ZooModel):
    """Class-agnostic Mask R-CNN (object / background). Init arguments are JSON primitives (config.json).

    ``backbone_weights`` records where the backbone's ImageNet weights came from before training (`zoo.backbones`:
    "hub", "package:<name>", "random"); a loaded checkpoint carries every weight itself and never downloads.
    ``pretrained_backbone`` is only used when the network is built for training.
    """

    model_type = "segmenter"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        fpn_channels: int = 128,
        box_head_size: int = 512,
        frozen_stages: int = 2,
        min_size: int = 384,
        max_size: int = 683,
        train_min_sizes: tuple[int, ...] | list[int] = (288, 320, 352, 384, 416),
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        rpn_proposals: int = 300,
        mask_thresh: float = 0.5,
        backbone_weights: str = "random",
        pretrained_backbone: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        body = FrozenBatchNormBackbone(backbone, fpn_channels, frozen_stages, pretrained_backbone, seed)
        if pretrained_backbone:
            backbone_weights = body.weights_source
        self.backbone_weights = backbone_weights
        self.min_size, self.train_min_sizes = int(min_size), tuple(int(size) for size in train_min_sizes)
        self.mask_thresh = mask_thresh
        self.detector = build_mask_rcnn(
            body, min_size=self.min_size, max_size=max_size, box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh, detections_per_img=detections_per_img, rpn_proposals=rpn_proposals,
            box_head_size=box_head_size, seed=seed,
        )
        self.eval()

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        config = dict(config if config is not None else getattr(self, "_hub_mixin_config", {}) or {})
        # The checkpoint carries every weight: loading it must not fetch ImageNet weights again, and it must say
        # where the backbone's came from (the mixin recorded only the init arguments as passed).
        config["pretrained_backbone"] = False
        config["backbone_weights"] = self.backbone_weights
        return super().save_pretrained(save_directory, config=config, **kwargs)

    def train(self, mode: bool = True):
        super().train(mode)
        # torchvision draws one of min_size's values per training image (multi-scale training) and uses the last at
        # inference, so the tuple is swapped in and out with the mode.
        self.detector.transform.min_size = self.train_min_sizes if mode else (self.min_size,)
        return self

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """torchvision's interface: training returns the loss dict, inference a detections dict per image."""
        return self.detector(images, targets)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Detections on one (H, W, 3) uint8 RGB image: boxes (N, 4) x0 y0 x1 y1, scores (N,), masks (N, H, W) bool."""
        rgb = check_rgb(rgb)
        device = next(self.parameters()).device
        tensor = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float().div_(255)
        (detections,) = self.detector([tensor])
        return {
            "boxes": detections["boxes"].cpu().numpy().astype(np.float32),
            "scores": detections["scores"].cpu().numpy().astype(np.float32),
            "masks": (detections["masks"][:, 0] > self.mask_thresh).cpu().numpy(),
        }
