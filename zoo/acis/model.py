"""ACIS inference network: `ACISSegmenter.segment(image) -> (labels, order)`.

At inference the actor runs on the latent mean (the paper discards the deviation, Sec. 5.3), the frozen
decoder expands it, and the loop stops when the termination unit says stop or after `max_steps`. The
critic is not needed and is not part of the published weights.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from zoo.acis.env import transition
from zoo.acis.networks import ACISConfig, ActorEncoder, Decoder, PreprocessingNet, state_pyramid
from zoo.hub import ZooModel

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class ACISSegmenter(ZooModel):
    """Pre-processing net + actor encoder (with termination) + decoder. Init arguments are the fields of
    `ACISConfig` plus the inference thresholds, all JSON primitives, so `config.json` rebuilds it exactly.
    """

    model_type = "acis"

    def __init__(
        self,
        max_steps: int = 21,
        stop_threshold: float = 0.7,
        mask_threshold: float = 0.3,
        storage_dtype: str = "float32",
        **config,
    ):
        super().__init__()
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
        self.storage_dtype = storage_dtype
        self.config = ACISConfig.from_dict(config)
        self.max_steps = max_steps
        self.stop_threshold = stop_threshold  # the authors stop when P(stop) > 0.7
        self.mask_threshold = mask_threshold  # and binarise the masks at 0.3
        self.preproc = PreprocessingNet(self.config)
        self.actor = ActorEncoder(self.config)
        self.decoder = Decoder(self.config)

    @classmethod
    def from_config(cls, config: ACISConfig, **thresholds) -> "ACISSegmenter":
        values = config.to_dict()
        if config.preproc_backbone == "fcn":
            # a trunk trained from scratch is no backbone: config.json recording "random" would read as an ImageNet
            # body that fell back to random weights (`zoo.publish` then says there is none). Training checkpoints
            # keep the field, so their resume identity does not change.
            values.pop("backbone_weights")
        return cls(**thresholds, **values)

    def _save_pretrained(self, save_directory: Path) -> None:
        """`model.safetensors` with floating tensors stored as `storage_dtype`. float16 halves the file (the `cpu`
        profile's fine-tuned Lite0 body puts float32 just over the zoo's 20 MB bundling limit); loading copies the
        values back into float32 parameters, so the card must measure the reloaded weights (the recipes do)."""
        dtype = STORAGE_DTYPES[self.storage_dtype]
        state = {name: (tensor.to(dtype) if tensor.is_floating_point() else tensor).contiguous()
                 for name, tensor in self.state_dict().items()}
        save_file(state, str(Path(save_directory) / "model.safetensors"), metadata={"format": "pt"})

    @torch.no_grad()
    def predict_masks(self, image: torch.Tensor, max_steps: int | None = None) -> torch.Tensor:
        """image (1,3,h,w) at the config size in [0,1] -> mask probabilities (T,h,w), T <= max_steps."""
        aux = self.preproc.channels(image)
        pyramid = state_pyramid(image, aux, self.config.levels)
        accumulated = torch.zeros_like(image[:, :1])
        hidden, masks = None, []
        for _ in range(self.max_steps if max_steps is None else max_steps):
            policy, continue_logit, hidden = self.actor(image, accumulated, aux, hidden)
            if 1.0 - torch.sigmoid(continue_logit).item() > self.stop_threshold:
                break
            mask = torch.sigmoid(self.decoder(policy.mean, pyramid))
            masks.append(mask[0, 0])
            accumulated = transition(accumulated, mask)
        if not masks:
            return image.new_zeros((0,) + tuple(image.shape[-2:]))
        return torch.stack(masks)

    def network_input(self, image: np.ndarray) -> torch.Tensor:
        """A validated H x W x 3 uint8 image -> (1,3,h,w) in [0,1] at the network size, on the model's device."""
        size = (self.config.width, self.config.height)
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if image.shape[1] > size[0] else cv2.INTER_LINEAR)
        device = next(self.parameters()).device
        return torch.from_numpy(resized).permute(2, 0, 1).float().div(255.0).unsqueeze(0).to(device)

    def segment(self, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """H x W x 3 uint8 RGB (any size) -> (H x W int32 instance labels, ids in prediction order).

        The whole image is resized to the network size, squashing its aspect ratio (6 % for a 500 x 530
        plant). The `cpu` profile of `recipes.acis_cvppp` trains on exactly this framing (`CVPPPLeaves`
        geometry "whole"); models trained on the paper's framing (224 x 224 centre crops of images downscaled
        by 2, geometry "crop") see a slightly smaller scale here and the border that their crops cut away.
        The mask probabilities are resized back, binarised at `mask_threshold`, and
        each pixel goes to the first mask that covers it. Masks left empty are dropped and the remaining
        ids are consecutive (CVPPP's DiC assumes consecutive labels).
        """
        image = validate_rgb(image)
        height, width = image.shape[:2]
        tensor = self.network_input(image)
        was_training = self.training
        self.eval()
        probabilities = self.predict_masks(tensor).cpu().numpy()
        self.train(was_training)
        return labels_from_masks(probabilities, (height, width), self.mask_threshold)


class ForegroundComponents:
    """The trivial baseline beside ACIS: every connected component of the pre-processing network's foreground is
    one instance. It has the same foreground as the actor, so the gap to it is what the recurrent instance
    decisions add (leaves that touch merge here)."""

    def __init__(self, segmenter: ACISSegmenter, threshold: float = 0.5):
        self.segmenter, self.threshold = segmenter, threshold

    @torch.no_grad()
    def segment(self, image: np.ndarray) -> tuple[np.ndarray, list[int]]:
        image = validate_rgb(image)
        height, width = image.shape[:2]
        self.segmenter.eval()
        foreground = self.segmenter.preproc.channels(self.segmenter.network_input(image))[0, -1].cpu().numpy()
        foreground = cv2.resize(foreground, (width, height), interpolation=cv2.INTER_LINEAR) > self.threshold
        count, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
        return labels.astype(np.int32), list(range(1, count))


def labels_from_masks(probabilities: np.ndarray, size: tuple[int, int], threshold: float) -> tuple[np.ndarray, list[int]]:
    """(T,h,w) mask probabilities -> (H x W labels, order). Masks are resized to `size` and binarised at
    `threshold`; a pixel belongs to the first mask that covers it, as the accumulated state M_t marks it
    as taken once predicted; masks left with no pixel of their own are dropped; ids are 1..K in
    prediction order."""
    height, width = size
    labels = np.zeros((height, width), dtype=np.int32)
    order: list[int] = []
    for probability in probabilities:
        mask = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR) > threshold
        mask &= labels == 0
        if mask.any():
            order.append(len(order) + 1)
            labels[mask] = order[-1]
    return labels, order


def validate_rgb(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"segment() takes a numpy array (H x W x 3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"segment() takes uint8 RGB, got dtype {image.dtype}: convert with "
            "(image * 255).clip(0, 255).astype(np.uint8) for [0,1] floats, or image >> 8 for 16-bit images"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (RGBA: drop the alpha channel with image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else ""
        raise ValueError(f"segment() takes an H x W x 3 RGB image, got shape {image.shape}{hint}")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"segment() needs an image of at least 2 x 2 pixels, got {image.shape[:2]}")
    return np.ascontiguousarray(image)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
