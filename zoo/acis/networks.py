"""ACIS networks: pre-processing FCN, actor (encoder + LSTM + Gaussian latent + termination), decoder
with the State Pyramid, critic. Shapes follow the authors' `models/*.lua` (seeds.md Sec. 4); every width
is a config field so that a CPU run can use narrower nets. `ACISConfig.paper_cvppp()` and
`ACISConfig.paper_kitti()` hold the paper's values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

ANGLE_BINS = 8
PYRAMID_CHANNELS = 3 + ANGLE_BINS + 1  # image, angle softmax, foreground
PREPROC_BLOCKS = 5  # FCN-8s: five pooling blocks, scores fused from pool5, pool4 and pool3


@dataclass
class ACISConfig:
    height: int = 224
    width: int = 224
    latent_size: int = 16  # 64 on KITTI
    preproc_widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 512])
    preproc_fc: int = 4096
    encoder_widths: list[int] = field(default_factory=lambda: [32, 48, 64, 96, 128])
    bottleneck: int = 512
    rnn_size: int = 512
    rnn_layers: int = 2
    feature_size: int = 256  # 512 on KITTI
    latent_channels: int = 16  # the latent is re-expanded to latent_channels x (H/32) x (W/32)
    decoder_widths: list[int] = field(default_factory=lambda: [96, 64, 48, 32, 16])
    critic_widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    critic_fc: list[int] = field(default_factory=lambda: [1024, 1024, 512])
    control_size: int = 256
    state_pyramid: bool = True  # False = the NoSP ablation
    batch_norm: bool = False  # not in the paper; lets the CPU-sized nets learn in minutes
    # "fcn": the FCN-8s trunk of `preproc_widths`, trained from scratch; a timm name (e.g. "tf_efficientnet_lite0"):
    # that ImageNet body as the FCN-8s encoder (the paper's FCN [25] starts from ImageNet VGG-16 too)
    preproc_backbone: str = "fcn"
    backbone_weights: str = "random"  # where the pre-processing body's weights came from before training

    def __post_init__(self):
        step = 2 ** max(self.levels, PREPROC_BLOCKS)
        if self.height % step or self.width % step:
            raise ValueError(f"height and width must be multiples of {step}, got {self.height}x{self.width}")
        if len(self.preproc_widths) != PREPROC_BLOCKS:
            raise ValueError(f"preproc_widths needs {PREPROC_BLOCKS} entries, got {self.preproc_widths}")
        for name in ("decoder_widths", "critic_widths"):
            if len(getattr(self, name)) != self.levels:
                raise ValueError(f"{name} needs as many entries as encoder_widths ({self.levels}), got {getattr(self, name)}")

    @property
    def levels(self) -> int:
        """Halvings between the input and the bottleneck grid (paper: 5, 224 -> 7 x 7)."""
        return len(self.encoder_widths)

    @property
    def bottom(self) -> tuple[int, int]:
        return self.height // 2**self.levels, self.width // 2**self.levels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ACISConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def paper_cvppp(cls) -> "ACISConfig":
        return cls()

    @classmethod
    def paper_kitti(cls) -> "ACISConfig":
        return cls(height=256, width=768, latent_size=64, feature_size=512)


def conv_trunk(in_channels: int, widths: list[int], batch_norm: bool = False) -> nn.Sequential:
    """conv3x3 (+ BatchNorm) + ReLU + maxpool per width: H x W -> H / 2^len(widths)."""
    layers, channels = [], in_channels
    for width in widths:
        norm = [nn.BatchNorm2d(width)] if batch_norm else []
        layers += [nn.Conv2d(channels, width, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers)


def PreprocessingNet(config: ACISConfig, pretrained: bool = False) -> nn.Module:
    """The pre-processing network of `config.preproc_backbone`. `pretrained` loads ImageNet weights into a timm
    body (for training it); a trained network is rebuilt with `pretrained=False` and its own state dict."""
    if config.preproc_backbone == "fcn":
        return ScratchFCN(config)
    return PretrainedFCN(config, pretrained)


class ScratchFCN(nn.Module):
    """FCN-8s (Long et al.) predicting 8 angle-bin logits and a foreground logit, trained standalone.

    The authors use VGG-16 widths (conv 3->64 with pad 100, fc6 7x7 -> 4096, learned 16x16 deconv). Here
    each block is one conv, fc6 is a 3x3 conv and the x2/x8 upsampling is bilinear, so that the same
    topology (score fusion of pool5, pool4 and pool3) runs at CPU widths.
    """

    def __init__(self, config: ACISConfig):
        super().__init__()
        w = config.preproc_widths
        self.blocks = nn.ModuleList()
        channels = 3
        for width in w:
            norm = [nn.BatchNorm2d(width)] if config.batch_norm else []
            self.blocks.append(nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)))
            channels = width
        self.fc = nn.Sequential(
            nn.Conv2d(w[4], config.preproc_fc, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.5),
            nn.Conv2d(config.preproc_fc, config.preproc_fc, 1), nn.ReLU(), nn.Dropout2d(0.5),
        )
        outputs = ANGLE_BINS + 1
        self.score = nn.Conv2d(config.preproc_fc, outputs, 1)
        self.score_pool4 = nn.Conv2d(w[3], outputs, 1)
        self.score_pool3 = nn.Conv2d(w[2], outputs, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B,3,H,W) in [0,1] -> (angle logits (B,8,H,W), foreground logit (B,1,H,W))."""
        x, pools = image, []
        for block in self.blocks:
            x = block(x)
            pools.append(x)
        score = self.score(self.fc(x))
        score = _up_to(score, pools[3]) + self.score_pool4(pools[3])
        score = _up_to(score, pools[2]) + self.score_pool3(pools[2])
        score = F.interpolate(score, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return score[:, :ANGLE_BINS], score[:, ANGLE_BINS:]

    @torch.no_grad()
    def channels(self, image: torch.Tensor) -> torch.Tensor:
        """The auxiliary input channels: per-pixel softmax over angle bins (8) and foreground probability (1)."""
        angles, foreground = self(image)
        return torch.cat([angles.softmax(dim=1), foreground.sigmoid()], dim=1)


class PretrainedFCN(nn.Module):
    """FCN-8s score fusion on an ImageNet timm body (strides 8, 16, 32 in place of VGG's pool3, pool4, fc7).

    The body's BatchNorm statistics stay frozen (plant batches of 8 would overwrite ImageNet's) and its stem and
    first two stages take no gradient; the rest is fine-tuned with the score layers, as FCN fine-tunes VGG-16.
    `weights_source` says where the body's weights came from (`zoo.backbones`).
    """

    def __init__(self, config: ACISConfig, pretrained: bool = False):
        super().__init__()
        from zoo.backbones import create_backbone, freeze_for_fine_tuning

        self.body, source = create_backbone(config.preproc_backbone, pretrained=pretrained, features_only=True,
                                            out_indices=(2, 3, 4))
        self.weights_source = source if pretrained else config.backbone_weights
        config_mean = self.body.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        config_std = self.body.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(config_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config_std).view(1, 3, 1, 1), persistent=False)
        freeze_for_fine_tuning(self.body, frozen_stages=2)
        outputs = ANGLE_BINS + 1
        pool3, pool4, top = self.body.feature_info.channels()
        self.fc = nn.Sequential(nn.Conv2d(top, config.preproc_fc, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.5))
        self.score = nn.Conv2d(config.preproc_fc, outputs, 1)
        self.score_pool4 = nn.Conv2d(pool4, outputs, 1)
        self.score_pool3 = nn.Conv2d(pool3, outputs, 1)

    def train(self, mode: bool = True):
        from zoo.backbones import batch_norm_to_eval

        super().train(mode)
        batch_norm_to_eval(self.body)
        return self

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool3, pool4, top = self.body((image - self.mean) / self.std)
        score = self.score(self.fc(top))
        score = _up_to(score, pool4) + self.score_pool4(pool4)
        score = _up_to(score, pool3) + self.score_pool3(pool3)
        score = F.interpolate(score, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return score[:, :ANGLE_BINS], score[:, ANGLE_BINS:]

    channels = ScratchFCN.channels


def _up_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def state_pyramid(image: torch.Tensor, aux: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[image, angles, fg] at full resolution and halved `levels` times (finest first).

    The authors downsample with a 4x4 stride-2 filter; a 2x2 average keeps the same sizes.
    """
    level = torch.cat([image, aux], dim=1)
    pyramid = [level]
    for _ in range(levels):
        level = F.avg_pool2d(level, 2)
        pyramid.append(level)
    return pyramid


class GaussianHead(nn.Module):
    """features -> FC -> LeakyReLU -> FC to (mu, log sigma^2), as a Normal over the latent action."""

    def __init__(self, in_features: int, feature_size: int, latent_size: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, feature_size, bias=False), nn.LeakyReLU(0.2), nn.Linear(feature_size, 2 * latent_size)
        )

    def forward(self, x: torch.Tensor) -> Normal:
        mu, log_var = self.net(x).chunk(2, dim=-1)
        return Normal(mu, torch.exp(0.5 * log_var.clamp(-10.0, 10.0)))


class MaskEncoder(nn.Module):
    """cVAE pre-training encoder: [image 3, target mask 1, angles 8, fg 1] -> q(a | mask, image)."""

    def __init__(self, config: ACISConfig):
        super().__init__()
        h, w = config.bottom
        self.trunk = conv_trunk(3 + 1 + PYRAMID_CHANNELS - 3, config.encoder_widths, config.batch_norm)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(config.encoder_widths[-1] * h * w, config.bottleneck), nn.LeakyReLU(0.2))
        self.head = GaussianHead(config.bottleneck, config.feature_size, config.latent_size)

    def forward(self, image, mask, aux) -> Normal:
        return self.head(self.fc(self.trunk(torch.cat([image, mask, aux], dim=1))))


class ActorEncoder(nn.Module):
    """Actor: [image, M_t, angles, fg] -> conv trunk -> FC -> 2-layer LSTM -> concat[h, x] -> Normal, and
    the termination unit on the same concat[h, x] (the paper's skip connection from the layer before h).

    The termination is one logit for "continue" trained with BCE, as the paper; the authors' last
    commit uses a 2-way softmax with CE instead.
    """

    def __init__(self, config: ACISConfig):
        super().__init__()
        h, w = config.bottom
        self.trunk = conv_trunk(3 + 1 + PYRAMID_CHANNELS - 3, config.encoder_widths, config.batch_norm)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(config.encoder_widths[-1] * h * w, config.bottleneck), nn.LeakyReLU(0.2))
        self.rnn = nn.LSTM(config.bottleneck, config.rnn_size, num_layers=config.rnn_layers, batch_first=True)
        for name, parameter in self.rnn.named_parameters():  # the authors' init: U(-1e-3, 1e-3), bias 1e-4
            nn.init.uniform_(parameter, -1e-3, 1e-3) if "weight" in name else nn.init.constant_(parameter, 1e-4)
        self.head = GaussianHead(config.rnn_size + config.bottleneck, config.feature_size, config.latent_size)
        self.control = nn.Sequential(
            nn.Linear(config.rnn_size + config.bottleneck, config.control_size), nn.LeakyReLU(0.2), nn.Linear(config.control_size, 1)
        )

    def forward(self, image, accumulated, aux, hidden=None) -> tuple[Normal, torch.Tensor, tuple]:
        """One step: (policy over a_t, continue logit (B,), new LSTM state)."""
        x = self.fc(self.trunk(torch.cat([image, accumulated, aux], dim=1)))
        out, hidden = self.rnn(x.unsqueeze(1), hidden)
        joint = torch.cat([out.squeeze(1), x], dim=1)
        return self.head(joint), self.control(joint).squeeze(1), hidden


class Decoder(nn.Module):
    """Latent a -> FC -> FC -> latent_channels x H/32 x W/32, then 5 stages of [concat the pyramid level,
    nearest x2 upsampling, replication pad, conv3x3, LeakyReLU]; finally concat the full-resolution
    [image, angles, fg] and a 1x1 conv to the mask logit. Without the State Pyramid (NoSP) the
    concatenations are left out.
    """

    def __init__(self, config: ACISConfig):
        super().__init__()
        self.bottom = config.bottom
        self.latent_channels = config.latent_channels
        self.use_pyramid = config.state_pyramid
        extra = PYRAMID_CHANNELS if self.use_pyramid else 0
        h, w = self.bottom
        self.expand = nn.Sequential(
            nn.Linear(config.latent_size, config.feature_size), nn.LeakyReLU(0.2),
            nn.Linear(config.feature_size, config.latent_channels * h * w), nn.LeakyReLU(0.2),
        )
        self.stages = nn.ModuleList()
        channels = config.latent_channels
        for width in config.decoder_widths:
            norm = [nn.BatchNorm2d(width)] if config.batch_norm else []
            self.stages.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), nn.ReplicationPad2d(1),
                nn.Conv2d(channels + extra, width, 3), *norm, nn.LeakyReLU(0.2),
            ))
            channels = width
        self.out = nn.Conv2d(channels + extra, 1, 1)
        # start from "mostly background" (an instance covers a few % of the image), not from p = 0.5
        # everywhere: the first hundreds of updates otherwise only learn that prior
        nn.init.constant_(self.out.bias, -4.0)

    def forward(self, action: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """action (B, latent) + pyramid (finest first) -> mask logit (B,1,H,W)."""
        h, w = self.bottom
        x = self.expand(action).view(-1, self.latent_channels, h, w)
        for stage, level in zip(self.stages, reversed(pyramid[1:])):
            x = stage(torch.cat([x, level], dim=1) if self.use_pyramid else x)
        return self.out(torch.cat([x, pyramid[0]], dim=1) if self.use_pyramid else x)


class Critic(nn.Module):
    """Q(s_t, a_t) on [image 3, M_t 1, decoded mask m_t 1, angles 8, fg 1]: it sees the decoded mask, not
    the latent, so the actor's gradient reaches the encoder through the frozen decoder.
    """

    def __init__(self, config: ACISConfig):
        super().__init__()
        h, w = config.bottom
        self.trunk = conv_trunk(3 + 1 + 1 + PYRAMID_CHANNELS - 3, config.critic_widths, config.batch_norm)
        layers, features = [nn.Flatten()], config.critic_widths[-1] * h * w
        for i, width in enumerate(config.critic_fc):
            layers += [nn.Linear(features, width, bias=i == 0), nn.LeakyReLU(0.2)]
            features = width
        layers.append(nn.Linear(features, 1, bias=False))
        self.head = nn.Sequential(*layers)

    def forward(self, image, accumulated, mask, aux) -> torch.Tensor:
        return self.head(self.trunk(torch.cat([image, accumulated, mask, aux], dim=1))).squeeze(1)
