"""IVOS-W's segmentation quality network (Sec. 3.2): predicts one object's J&F in a frame without ground truth.

The Wild setting feeds its predictions to the agent in place of the oracle J&F (Eq. 1). As in the authors' code
(`models/assessment.py: AssessNet`, `quality_assessment.py`; seeds.md §2):
- `quality_crop`: ROI = box of prob > 0.5, each side at least ``min_side`` px, enlarged 1.5× about its centre, then
  resampled by an affine ``grid_sample`` to a ``size``×``size`` square (RGB + probability map, 4 channels).
- `QualityNetwork`: an ImageNet backbone whose stem convolution output is summed with an extra convolution of the
  probability map, global average pool, ``Linear(features, 1)``, no sigmoid.
- `frame_quality`: the mean over the frame's objects (Eq. 7); `QualityModule`: MSE (Eq. 8), SGD lr 5e-6, momentum
  0.9, weight decay 5e-4, ExponentialLR γ 0.95 per epoch; `pearson_and_mse`: Table 3's PCC and MSE.

Deviations from the authors:
- Backbone: the paper's ResNet-50 ImageNet weights cannot be obtained offline, so the default is the zoo's offline
  ImageNet EfficientNet-Lite0 (`zoo.backbones`); ``backbone="resnet50"`` gives the paper's network wherever timm can
  load its weights. Either way the probability convolution copies the stem convolution's geometry (ResNet-50:
  ``Conv2d(1, 64, 7, s2, p3)`` exactly as the authors; Lite0: ``Conv2d(1, 32, 3, s2)`` with TF "same" padding) and is
  added to its output before the stem's BatchNorm. The head is ``Linear(1280, 1)`` for Lite0 (2048 for ResNet-50).
- BatchNorm is frozen by default (ImageNet statistics, no gradient; ``frozen_batch_norm=False`` trains it): the
  seeds notes do not say what the authors did, and here, on batches of 16 small crops, training it made SGD diverge
  (NaN at lr 3e-2) or learn little (held-out PCC 0.33 at lr 1e-3) where the frozen network reached 0.91–0.96.
- The RGB channels are normalised with the backbone's own mean / std; the probability channel enters in [0, 1].
- An empty probability map (no pixel > 0.5) has no box: its crop is the whole frame, not enlarged, so the network
  sees a frame with no object in it and can learn that a lost object is a bad segmentation (the authors' code does
  not say; a recipe may also skip such samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchmetrics import MeanSquaredError, PearsonCorrCoef

from zoo.backbones import batch_norm_to_eval, create_backbone

ROI_SCALE = 1.5
FOREGROUND_THRESHOLD = 0.5


def _image_tensor(image) -> torch.Tensor:
    """H×W×3 uint8 RGB (array or tensor, the engine interface's frames) → (3, H, W) float in [0, 1]."""
    image = torch.as_tensor(np.asarray(image))
    if image.dim() != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be H×W×3 uint8 RGB, got {tuple(image.shape)} {image.dtype}")
    return image.permute(2, 0, 1).float() / 255.0


def quality_roi(probability: torch.Tensor, *, min_side: float = 128.0, scale: float = ROI_SCALE) -> torch.Tensor:
    """(centre x, centre y, width, height) in pixels of one object's ROI, pixel edges as coordinates (pixel j spans
    [j, j + 1)). The box of prob > 0.5, each side raised to ``min_side``, then ``scale``× about its centre; an empty
    map gives the whole frame (not enlarged)."""
    height, width = probability.shape
    rows = torch.nonzero((probability > FOREGROUND_THRESHOLD).any(dim=1)).flatten()
    cols = torch.nonzero((probability > FOREGROUND_THRESHOLD).any(dim=0)).flatten()
    if len(rows) == 0:
        return torch.tensor([width / 2, height / 2, float(width), float(height)])
    x0, x1 = cols[0].item(), cols[-1].item() + 1
    y0, y1 = rows[0].item(), rows[-1].item() + 1
    box_width, box_height = max(x1 - x0, min_side) * scale, max(y1 - y0, min_side) * scale
    return torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, float(box_width), float(box_height)])


def quality_crop(image, probability, *, size: int = 256, min_side: float = 128.0) -> torch.Tensor:
    """The quality network's input for one object: (4, size, size), RGB in [0, 1] then the probability map.

    ``image`` H×W×3 uint8 RGB, ``probability`` H×W in [0, 1] (this object's channel of an engine's output). The ROI
    (`quality_roi`) is stretched to the square (its aspect ratio is not kept, as with the authors' affine grid);
    parts of the ROI outside the frame read zeros. ``min_side`` is the authors' 128 px at DAVIS's 480p; scale it with
    smaller frames. An empty probability map crops the whole frame.
    """
    rgb = _image_tensor(image)
    probability = torch.as_tensor(np.asarray(probability), dtype=torch.float32)
    if probability.shape != rgb.shape[1:]:
        raise ValueError(f"probability map {tuple(probability.shape)} does not match the image {tuple(rgb.shape[1:])}")
    _, height, width = rgb.shape
    centre_x, centre_y, roi_width, roi_height = quality_roi(probability, min_side=min_side).tolist()
    # affine_grid maps the output square's [-1, 1] onto the input's normalised coordinates, where (with
    # align_corners=False) -1 and 1 are the outer edges of the first and last pixel: the ROI's edges.
    theta = torch.tensor([[[roi_width / width, 0.0, 2 * centre_x / width - 1],
                           [0.0, roi_height / height, 2 * centre_y / height - 1]]])
    grid = F.affine_grid(theta, [1, 4, size, size], align_corners=False)
    stacked = torch.cat([rgb, probability[None]], dim=0)[None]
    return F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


class ProbabilityStem(nn.Module):
    """The backbone's stem convolution on the RGB channels plus a same-geometry convolution on the probability map
    (the authors' ``conv1(rgb) + conv_prob(prob)``), taking the 4-channel crop so the timm model runs unchanged."""

    def __init__(self, rgb_conv: nn.Conv2d):
        super().__init__()
        self.rgb = rgb_conv
        # The same class (timm's Conv2dSame pads like TensorFlow) and geometry, so both outputs align pixel for pixel.
        self.probability = type(rgb_conv)(1, rgb_conv.out_channels, rgb_conv.kernel_size, stride=rgb_conv.stride,
                                          padding=rgb_conv.padding, bias=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.rgb(crops[:, :3]) + self.probability(crops[:, 3:])


class QualityNetwork(nn.Module):
    """(B, 4, S, S) crops (`quality_crop`) → (B,) predicted J&F, unbounded (no sigmoid, as the authors).

    ``random_backbone=True`` gives a seeded random backbone and is for tests only; otherwise the ImageNet weights come
    from `zoo.backbones` (which raises, naming what to install, when it has none). ``backbone_source`` records which.
    """

    def __init__(self, backbone: str = "tf_efficientnet_lite0", *, random_backbone: bool = False, seed: int = 0,
                 input_size: int = 256, min_side: float = 128.0, frozen_batch_norm: bool = True):
        super().__init__()
        self.frozen_batch_norm = frozen_batch_norm
        # The crop geometry travels with the network so that inference (`frame_quality`) crops as training did.
        self.input_size, self.min_side = input_size, min_side
        body, self.backbone_source = create_backbone(backbone, pretrained=not random_backbone, seed=seed,
                                                     num_classes=0)  # num_classes=0: global average pool, no head
        stem_name = body.pretrained_cfg["first_conv"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body.set_submodule(stem_name, ProbabilityStem(body.get_submodule(stem_name)))
            self.head = nn.Linear(body.num_features, 1)
        self.body = body
        self.register_buffer("rgb_mean", torch.tensor(body.pretrained_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(body.pretrained_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        if frozen_batch_norm:
            for module in self.body.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.requires_grad_(False)
        self.train()  # a module starts in training mode without train() being called (Lightning's fit does not)

    def train(self, mode: bool = True) -> "QualityNetwork":
        # Frozen BatchNorm keeps ImageNet's statistics: batches of a few crops would overwrite them.
        super().train(mode)
        if self.frozen_batch_norm:
            batch_norm_to_eval(self.body)
        return self

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        rgb = (crops[:, :3] - self.rgb_mean) / self.rgb_std
        return self.head(self.body(torch.cat([rgb, crops[:, 3:]], dim=1))).squeeze(1)


@torch.no_grad()
def frame_quality(network: QualityNetwork, image, probabilities: Sequence) -> float:
    """Eq. 7: the mean of the predicted qualities of the frame's objects; ``probabilities`` holds one H×W map per
    object (e.g. channels 1..K of an engine's output for this frame), cropped with the network's ``input_size`` and
    ``min_side``. Runs the network in eval mode."""
    if len(probabilities) == 0:
        raise ValueError("frame_quality needs at least one object's probability map")
    crops = torch.stack([quality_crop(image, probability, size=network.input_size, min_side=network.min_side)
                         for probability in probabilities])
    was_training = network.training
    network.eval()
    try:
        device = next(network.parameters()).device
        return network(crops.to(device)).mean().item()
    finally:
        network.train(was_training)


@dataclass(frozen=True)
class QualitySample:
    """One training example: a frame (H×W×3 uint8 RGB), one object's probability map in it (H×W), and that object's
    J&F in that frame (the target)."""

    image: np.ndarray
    probability: np.ndarray
    quality: float


class QualityDataset(Dataset):
    """Crops of `QualitySample`s, mirrored left-right with probability ``flip_probability`` (the authors' horizontal
    flips; mirroring the crop equals cropping the mirrored frame, since the box mirrors with it)."""

    def __init__(self, samples: Sequence[QualitySample], *, size: int = 256, min_side: float = 128.0,
                 flip_probability: float = 0.5):
        self.samples, self.size, self.min_side, self.flip_probability = list(samples), size, min_side, flip_probability

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        crop = quality_crop(sample.image, sample.probability, size=self.size, min_side=self.min_side)
        if torch.rand(()) < self.flip_probability:
            crop = crop.flip(-1)
        return crop, torch.tensor(sample.quality, dtype=torch.float32)


def pearson_and_mse(predictions, targets) -> tuple[float, float]:
    """Table 3: Pearson correlation coefficient and mean squared error between predicted and true J&F."""
    predictions = torch.as_tensor(predictions, dtype=torch.float32).flatten()
    targets = torch.as_tensor(targets, dtype=torch.float32).flatten()
    return PearsonCorrCoef()(predictions, targets).item(), MeanSquaredError()(predictions, targets).item()


class QualityModule(L.LightningModule):
    """Trains `QualityNetwork` on (crop, J&F) batches from `QualityDataset` with MSE (Eq. 8); validation logs
    ``val_pcc`` and ``val_mse`` (Table 3). Defaults are the authors' schedule (batch 32, 50 epochs in their code);
    build the datasets with the same ``input_size`` / ``min_side``."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", random_backbone: bool = False, input_size: int = 256,
                 min_side: float = 128.0, frozen_batch_norm: bool = True, lr: float = 5e-6, momentum: float = 0.9,
                 weight_decay: float = 5e-4, lr_gamma: float = 0.95, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.network = QualityNetwork(backbone, random_backbone=random_backbone, seed=seed, input_size=input_size,
                                      min_side=min_side, frozen_batch_norm=frozen_batch_norm)
        self.backbone_weights = self.network.backbone_source
        self.val_pcc, self.val_mse = PearsonCorrCoef(), MeanSquaredError()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.network(crops)

    def training_step(self, batch, batch_index):
        crops, targets = batch
        loss = F.mse_loss(self.network(crops), targets)
        self.log("train_mse", loss, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch, batch_index):
        crops, targets = batch
        predictions = self.network(crops)
        self.val_pcc.update(predictions, targets)
        self.val_mse.update(predictions, targets)
        self.log_dict({"val_pcc": self.val_pcc, "val_mse": self.val_mse}, batch_size=len(targets))

    def configure_optimizers(self):
        trainable = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=self.hparams.lr, momentum=self.hparams.momentum,
                                    weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=self.hparams.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
