"""FTMU's networks: the frozen image encoder behind the state (Eq. 4-6) and the appearance embedding (Eq. 3), and the
actor and critic heads.

- Actor and critic as the authors' code (`seeds.md` §1): Linear(D, 2048)-ReLU-Linear(2048, 512)-ReLU-Linear(512, 2)
  (softmax over a0 / a1) and the same trunk with one output. The paper's D is 2 x 2048 (ResNet-50 pooled); here the
  encoder is the zoo's ImageNet EfficientNet-Lite0 (`zoo.backbones`; torchvision's ResNet-50 weights cannot be
  downloaded here), pooled to 1280 per image, so D = 2560.
- Both encoders share one frozen backbone: states see whole frames resized to 224 x 224 (S_T and S_P are whole,
  blacked-out frames, Eq. 4-5), embeddings see the T_box' / P_box' patches resized to 128 x 128; an embedding is the
  L2-normalised pooled feature. The paper trains a Siamese network for Eq. 3 without saying on what; this port uses
  the ImageNet features as they are (not trained further), which is what its Table 2 "simple update (appearance)"
  and re-detection rows measure here.
"""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import torch
from torch import nn

STATE_SIZE, PATCH_SIZE = 224, 128


def head(in_features: int, hidden: tuple[int, ...], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """π(a | s): logits over (a0 = replace the template, a1 = keep it)."""

    def __init__(self, state_dim: int, hidden: tuple[int, ...] = (2048, 512)):
        super().__init__()
        self.net = head(state_dim, hidden, 2)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


class Critic(nn.Module):
    """V(s): the expected discounted reward from state s.

    ``value_scale`` multiplies the last layer's output. Eq. 7's rewards reach 110 a step, so returns reach several
    hundred; Adam moves each weight by about the learning rate per step, and an unscaled critic needs thousands of
    updates just to reach that range while its TD errors swamp the actor's advantages. Scaling the output changes
    the parameterisation only (the same functions are representable)."""

    def __init__(self, state_dim: int, hidden: tuple[int, ...] = (2048, 512), value_scale: float = 1.0):
        super().__init__()
        self.net = head(state_dim, hidden, 1)
        self.value_scale = float(value_scale)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states).squeeze(-1) * self.value_scale


class ImageEncoder(nn.Module):
    """Frozen timm backbone, globally pooled: (N, H, W, 3) uint8 images of one size -> (N, C) float features."""

    def __init__(self, backbone: str = "tf_efficientnet_lite0", pretrained: bool = True, seed: int = 0):
        super().__init__()
        from zoo.backbones import create_backbone

        self.body, self.weights_source = create_backbone(backbone, pretrained=pretrained, seed=seed, num_classes=0)
        self.body.eval().requires_grad_(False)
        config = self.body.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.get("std", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)

    @property
    def out_features(self) -> int:
        return self.body.num_features

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()  # frozen, BatchNorm statistics included
        return self

    @torch.inference_mode()
    def forward(self, images: list[np.ndarray], size: int) -> torch.Tensor:
        batch = np.stack([cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) for image in images])
        device = self.mean.device
        tensor = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div_(255)
        return self.body((tensor - self.mean) / self.std).float().cpu()


STATE_VIEWS = ("frame", "box")


def box_view(image: np.ndarray, box: np.ndarray, context: float = 0.5) -> np.ndarray:
    """The part of ``image`` inside ``box`` grown by ``context`` of its size on each side (clipped to the image)."""
    height, width = image.shape[:2]
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = int(max(0, np.floor(box[0] - context * w))), int(max(0, np.floor(box[1] - context * h)))
    x1, y1 = int(min(width, np.ceil(box[2] + context * w))), int(min(height, np.ceil(box[3] + context * h)))
    return image[y0 : max(y1, y0 + 2), x0 : max(x1, x0 + 2)]


class FeatureStates:
    """The `zoo.ftmu.env.StateEncoder` on an `ImageEncoder`: s_t = feature(S_T) ⊕ feature(S_P), each feature cached
    under the key the tracker gives its template / prediction (the encoder is frozen, so a key fixes the feature).

    ``view="frame"`` (the paper, Eq. 4-6): the whole blacked-out frames. ``view="box"`` (not the paper's; close to the
    authors' code, which feeds ROI crops): each blacked-out image cropped around its own box (T_box for S_T, P_box
    for S_P) with half a box of context, so the object fills the encoder's input."""

    def __init__(self, encoder: ImageEncoder, max_cached: int = 200_000, view: str = "frame"):
        if view not in STATE_VIEWS:
            raise ValueError(f"view must be one of {STATE_VIEWS}, got {view!r}")
        self.encoder, self.view = encoder, view
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.max_cached = max_cached
        self.encoded = 0  # images run through the backbone (cache misses)

    @property
    def state_dim(self) -> int:
        return 2 * self.encoder.out_features

    def _feature(self, key: str, image) -> torch.Tensor:
        feature = self.cache.get(key)
        if feature is None:
            feature = self.encoder([image()], STATE_SIZE)[0].to(torch.float16)
            self.encoded += 1
            self.cache[key] = feature
            if len(self.cache) > self.max_cached:
                self.cache.popitem(last=False)
        return feature.float()

    def state(self, template, frame, prediction, prediction_key: str) -> torch.Tensor:
        from zoo.ftmu.env import state_images

        images: dict[str, np.ndarray] = {}

        def image(which: int):
            if not images:
                images["t"], images["p"] = state_images(template, frame, prediction)
                if self.view == "box":
                    from zoo.ftmu.env import mask_box

                    predicted_box = mask_box(prediction)
                    images["t"] = box_view(images["t"], template.box)
                    images["p"] = box_view(images["p"], predicted_box if predicted_box is not None else template.box)
            return images["t" if which == 0 else "p"]

        return torch.cat([
            self._feature(f"T|{template.key}", lambda: image(0)),
            self._feature(f"P|{prediction_key}", lambda: image(1)),
        ])

    def embed(self, patches: list[np.ndarray], keys: list[str] | None = None) -> torch.Tensor:
        """L2-normalised embeddings; with ``keys`` (one per patch) each is computed once."""
        if keys is None:
            return nn.functional.normalize(self.encoder(patches, PATCH_SIZE), dim=1)
        missing = [i for i, key in enumerate(keys) if f"E|{key}" not in self.cache]
        if missing:
            computed = nn.functional.normalize(self.encoder([patches[i] for i in missing], PATCH_SIZE), dim=1)
            self.encoded += len(missing)
            for i, embedding in zip(missing, computed):
                self.cache[f"E|{keys[i]}"] = embedding.to(torch.float16)
        return torch.stack([self.cache[f"E|{key}"].float() for key in keys])
