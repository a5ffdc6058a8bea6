"""ALBA's networks (Sec. 3.1, Fig. 3): the "PUV" encoder, the selection network and the assignment network, plus the
crop that feeds them.

PUV encoder (Fig. 3 right; Sec. 3.2 "9 convolutional layers and 4 max-pooling layers"; shapes from the authors'
`model.py: Encoder`, seeds.md §3): unpadded 3x3 convolutions with LeakyReLU(0.01), channels
8, 8 | pool | 16, 16, 16 | pool | 32, 32 | pool | 64, 64 | pool (each times `width`), so a 256 x 256 input gives
64 x 12 x 12. Kaiming-uniform initialisation.

Selection network (Sec. 3.1): the encoder on the depth-concatenated [RGB, flow u, v, proposal mask] cropped to the
proposal's box b_i (expanded by a context margin) and resized to 256 x 256, spatially pooled, concatenated with the
256-d proposal feature f_i, then an MLP of five FC layers (4096, 2048, 1024, 512 times `width`, then 2 logits:
index 0 = reject, 1 = accept; the authors' class weights [1, 4] weigh "accept").

Assignment network (Eq. 1): a Siamese relational network. For proposal i and every slot k in use, one shared
encoder sees (I_t, u_t, v_t, p_i,t, M^k_t-1, M^k_<i,t) on the proposal's crop; pooled, fused with f_i and passed
through the MLP it gives the logit l^k. "New object" has a logit of its own: the same encoder on the input with both
slot channels empty (an object with no pixels yet), through a second MLP head of the same shape (`new_head`). A
separate head is needed: an in-use slot that is empty in frames t-1 and t has exactly that input, and must not be
tied with "new". The K + 1 logits (slots, then new) go through a softmax; slots not in use, and "new" when all K
are, are masked out (probability exactly 0), so an unused slot is reachable only through "new".

Where the paper and the authors' code differ, this follows the paper:
- RGB is an input channel (Sec. 3.1: "the depth concatenated RGB image, flow image, and proposal mask"); the code's
  encoder sees only [mask, u, v]. `ALBANetConfig(rgb=False)` gives the code's inputs.
- Crops are cropped and then resized (bilinear with antialiasing for image and flow, nearest for masks); the code
  reshapes the crops with `np.resize`, which tiles or truncates the array instead of interpolating.
- Spatial information is pooled out before f_i is fused ("after processing by the selection encoder and pooling out
  spatial information", Sec. 3.1): `pooling="avg"` (default) or `"max"`; the code flattens the 64 x 12 x 12 map
  into 9216 features (with f_i, 9472 into the MLP): `pooling="flatten"`.
- The code's Siamese assignment net encodes two inputs with one encoder and concatenates them into one 2 x 9472
  vector; the paper's Eq. 1 input puts the slot's masks into the same stack as the proposal, which is done here.

Choices the paper leaves open:
- Crop box (`context_box`): b_i grown by `context` (default 0.25) of its width / height on every side, so the
  crop shows the proposal and a ring of background, whose flow tells an independently moving object from a static
  one; clipped to the frame (no padding: a zero-flow border would look static), at least `min_size` px a side, and
  resized to the square input without keeping the aspect ratio (the paper reshapes to 256 x 256). The assignment
  network uses the same crop for every slot of a proposal, so a slot's masks are seen where they meet the proposal.
- Image and flow normalisation: RGB as (x / 255 - ImageNet mean) / ImageNet std; flow standardised per frame and
  channel over the whole frame before cropping (`standardise_flow`; the code standardises flow), so a crop keeps its
  motion relative to the frame. Flow values are not rescaled by the resize.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SIZE = 256
FEATURE_DIM = 256  # Mask R-CNN mask-head features averaged spatially (`zoo.vision.proposals.Proposals.features`)
CONV_CHANNELS = ((8, 8), (16, 16, 16), (32, 32), (64, 64))  # one group per max-pool: 9 convolutions, 4 pools
MLP_HIDDEN = (4096, 2048, 1024, 512)  # + the output layer: 5 FC layers
SLOPE = 0.01
CONTEXT = 0.25
POOLINGS = ("avg", "max", "flatten")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REJECT_LOGIT, ACCEPT_LOGIT = 0, 1


def encoder_output_size(size: int) -> int:
    """Side of the PUV encoder's output for a size x size input (12 for 256); 0 when too small (below 80)."""
    for group in CONV_CHANNELS:
        size = (size - 2 * len(group)) // 2 if size - 2 * len(group) > 0 else 0
    return max(size, 0)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


@dataclass
class ALBANetConfig:
    width: float = 1.0  # multiplies every convolution and hidden FC width (1.0 = the paper's / authors' sizes)
    size: int = SIZE  # crop side fed to the encoders
    rgb: bool = True  # False = the authors' code: no RGB channels
    feature_dim: int = FEATURE_DIM  # f_i
    pooling: str = "avg"
    max_objects: int = 20  # K_max
    context: float = CONTEXT  # crop margin, a fraction of the box's width / height per side

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if encoder_output_size(self.size) < 1:
            raise ValueError(f"size {self.size} is too small for nine unpadded convolutions and four pools (>= 80)")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")

    @property
    def base_channels(self) -> int:
        """[RGB,] u, v, proposal mask: the selection input, and the assignment input before the slot channels."""
        return (3 if self.rgb else 0) + 2 + 1

    @property
    def assignment_channels(self) -> int:
        return self.base_channels + 2  # + M^k_t-1, M^k_<i,t

    def to_dict(self) -> dict:
        return asdict(self)


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_uniform_(module.weight, a=SLOPE, nonlinearity="leaky_relu")
        nn.init.zeros_(module.bias)


class PUVEncoder(nn.Module):
    """Nine unpadded 3x3 convolutions and four 2x2 max-pools: (B, C_in, S, S) -> (B, 64·width, s, s), s =
    `encoder_output_size(S)`."""

    def __init__(self, in_channels: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for group in CONV_CHANNELS:
            for out in group:
                out = _scaled(out, width)
                layers += [nn.Conv2d(channels, out, 3), nn.LeakyReLU(SLOPE)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, channels
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the encoder takes {self.in_channels} channels, got {x.shape[1]}")
        return self.body(x)


def _pool(maps: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "avg":
        return maps.mean(dim=(2, 3))
    if pooling == "max":
        return maps.amax(dim=(2, 3))
    return maps.flatten(1)


def mlp(in_features: int, width: float, out_features: int) -> nn.Sequential:
    """Five FC layers: the hidden widths of `MLP_HIDDEN` (times `width`) with LeakyReLU, then a plain Linear."""
    layers: list[nn.Module] = []
    for hidden in MLP_HIDDEN:
        hidden = _scaled(hidden, width)
        layers += [nn.Linear(in_features, hidden), nn.LeakyReLU(SLOPE)]
        in_features = hidden
    layers.append(nn.Linear(in_features, out_features))
    net = nn.Sequential(*layers)
    for layer in list(net)[:-1]:
        _init(layer)  # the last layer keeps PyTorch's uniform init, as the authors'
    return net


class _PooledEncoder(nn.Module):
    def __init__(self, config: ALBANetConfig, in_channels: int):
        super().__init__()
        self.config = config
        self.encoder = PUVEncoder(in_channels, config.width)
        side = encoder_output_size(config.size)
        pooled = self.encoder.out_channels * (side * side if config.pooling == "flatten" else 1)
        self.fused_dim = pooled + config.feature_dim

    def fuse(self, inputs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if inputs.shape[-2:] != (self.config.size, self.config.size):
            raise ValueError(f"inputs must be {self.config.size} x {self.config.size}, got {tuple(inputs.shape[-2:])}")
        if features.shape[-1] != self.config.feature_dim:
            raise ValueError(f"proposal features must be {self.config.feature_dim}-d, got {features.shape[-1]}")
        return torch.cat([_pool(self.encoder(inputs), self.config.pooling), features.to(inputs.dtype)], dim=1)


class SelectionNetwork(_PooledEncoder):
    """(B, base_channels, S, S) crops and (B, feature_dim) f_i -> (B, 2) logits (reject, accept)."""

    def __init__(self, config: ALBANetConfig | None = None):
        config = config or ALBANetConfig()
        super().__init__(config, config.base_channels)
        self.head = mlp(self.fused_dim, config.width, 2)

    def forward(self, inputs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.fuse(inputs, features))


class AssignmentNetwork(_PooledEncoder):
    """Eq. 1: logits over the K slots and "new object" (index K) for each proposal.

    forward(base, slots, features, available, new_allowed):
      base: (B, base_channels, S, S) = [RGB,] u, v, p_i,t on the proposal's crop;
      slots: (B, K, 2, S, S) = M^k_t-1, M^k_<i,t on the same crop;
      features: (B, feature_dim) = f_i;
      available: (B, K) bool, slots in use (`GroupingState.in_use`); new_allowed: (B,) bool (a slot is free).
    Returns (B, K + 1) logits; masked entries hold the dtype's lowest value, so their softmax probability is 0. Only
    available slots are encoded.
    """

    def __init__(self, config: ALBANetConfig | None = None):
        config = config or ALBANetConfig()
        super().__init__(config, config.assignment_channels)
        self.head = mlp(self.fused_dim, config.width, 1)
        self.new_head = mlp(self.fused_dim, config.width, 1)

    def forward(self, base: torch.Tensor, slots: torch.Tensor, features: torch.Tensor, available: torch.Tensor,
                new_allowed: torch.Tensor) -> torch.Tensor:
        batch, k = slots.shape[:2]
        if slots.shape[2] != 2 or base.shape[0] != batch:
            raise ValueError(f"slots must be (B, K, 2, S, S) next to base (B, C, S, S), got {tuple(slots.shape)} "
                             f"and {tuple(base.shape)}")
        available = available.to(torch.bool).reshape(batch, k)
        new_allowed = new_allowed.to(torch.bool).reshape(batch)
        lowest = torch.finfo(base.dtype).min
        logits = torch.full((batch, k + 1), lowest, dtype=base.dtype, device=base.device)
        rows, columns = available.nonzero(as_tuple=True)
        if rows.numel():
            stacked = torch.cat([base[rows], slots[rows, columns].to(base.dtype)], dim=1)
            slot_logits = self.head(self.fuse(stacked, features[rows])).squeeze(1)
            logits = logits.index_put((rows, columns), slot_logits)
        empty = base.new_zeros(batch, 2, *base.shape[-2:])
        new_logits = self.new_head(self.fuse(torch.cat([base, empty], dim=1), features)).squeeze(1)
        logits[:, k] = torch.where(new_allowed, new_logits, torch.full_like(new_logits, lowest))
        return logits


# -- inputs ----------------------------------------------------------------------------------------------------------


def standardise_flow(flow: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """(H, W, 2) flow with each channel shifted and scaled to mean 0, std 1 over the frame (float32)."""
    flow = np.asarray(flow, dtype=np.float32)
    mean = flow.mean(axis=(0, 1), keepdims=True)
    std = flow.std(axis=(0, 1), keepdims=True)
    return (flow - mean) / (std + eps)


def context_box(box, context: float, height: int, width: int, min_size: int = 8) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1), x1 / y1 exclusive: `box` grown by `context` times its width / height on each side,
    rounded outwards, grown about its centre to at least `min_size` px a side, and clipped to the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    x0, x1 = x0 - context * w, x1 + context * w
    y0, y1 = y0 - context * h, y1 + context * h
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, min_size) / 2, max(y1 - y0, min_size) / 2
    x0, x1 = int(np.floor(cx - half_w)), int(np.ceil(cx + half_w))
    y0, y1 = int(np.floor(cy - half_h)), int(np.ceil(cy + half_h))
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    x1, y1 = max(min(x1, width), x0 + 1), max(min(y1, height), y0 + 1)
    return x0, y0, x1, y1


def nearest_exact_indices(length: int, size: int) -> np.ndarray:
    """Source index of each of `size` outputs under nearest-exact resampling of `length` inputs."""
    scale = np.float32(length) / np.float32(size)  # in float32 as torch computes it, so the indices agree exactly
    return np.minimum(np.floor((np.arange(size, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.int64),
                      length - 1)


def crop_inputs(image: np.ndarray | None, flow: np.ndarray, masks: np.ndarray, box, size: int = SIZE,
                context: float = CONTEXT) -> torch.Tensor:
    """The encoder input of one crop: (C, size, size) float32 = [RGB (3, unless `image` is None),] u, v, masks.

    image: (H, W, 3) uint8 RGB or None; flow: (H, W, 2) float, standardised (`standardise_flow`); masks: (M, H, W)
    or (H, W) bool; box: (x0, y0, x1, y1) in pixels, grown by `context_box`. Image and flow are resized bilinearly
    with antialiasing, masks by nearest neighbour (they stay 0 / 1).
    """
    flow = np.asarray(flow, dtype=np.float32)
    height, width = flow.shape[:2]
    if flow.shape != (height, width, 2):
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    masks = [np.asarray(masks, dtype=bool)] if np.ndim(masks) == 2 else [np.asarray(m, dtype=bool) for m in masks]
    if any(m.shape != (height, width) for m in masks):
        raise ValueError(f"masks of shape {masks[0].shape} for a flow of {(height, width)}")
    x0, y0, x1, y1 = context_box(box, context, height, width)
    dense = [torch.from_numpy(np.ascontiguousarray(flow[y0:y1, x0:x1])).permute(2, 0, 1)]
    if image is not None:
        image = np.asarray(image)
        if image.shape != (height, width, 3):
            raise ValueError(f"image must be (H, W, 3) like the flow, got {image.shape}")
        rgb = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1).float().div_(255)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        dense.insert(0, (rgb - mean) / std)
    dense = F.interpolate(torch.cat(dense)[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    # Nearest-exact resampling by indexing the boolean crops (what F.interpolate(mode="nearest-exact") computes),
    # before any float conversion: the assignment input holds up to 41 masks per decision.
    rows = nearest_exact_indices(y1 - y0, size) + y0
    columns = nearest_exact_indices(x1 - x0, size) + x0
    crops = torch.from_numpy(np.stack([m[rows][:, columns] for m in masks])).float()
    return torch.cat([dense, crops]).float()


def selection_inputs(image, flow, proposal_mask, box, config: ALBANetConfig) -> torch.Tensor:
    """(base_channels, S, S): [RGB,] u, v, p_i on the proposal's crop."""
    return crop_inputs(image if config.rgb else None, flow, proposal_mask, box, config.size, config.context)


def assignment_inputs(image, flow, proposal_mask, box, state, config: ALBANetConfig) -> dict[str, torch.Tensor]:
    """The assignment network's inputs for one proposal and a `zoo.alba.env.GroupingState` (before the decision):
    {"base": (C, S, S), "slots": (K, 2, S, S) = M^k_t-1, M^k_<i,t, "available": (K,), "new_allowed": ()}; stack
    them over proposals to make a batch. Only slots in use are cropped (the others stay zero and are masked)."""
    if state.max_objects != config.max_objects:
        raise ValueError(f"the state has {state.max_objects} slots, the network {config.max_objects}")
    in_use = np.flatnonzero(state.in_use)
    masks = [proposal_mask, *(state.previous[k] for k in in_use), *(state.current[k] for k in in_use)]
    crop = crop_inputs(image if config.rgb else None, flow, masks, box, config.size, config.context)
    base = crop[: config.base_channels]
    slots = torch.zeros(config.max_objects, 2, config.size, config.size)
    n = len(in_use)
    used = torch.from_numpy(in_use)
    slots[used, 0] = crop[config.base_channels : config.base_channels + n]
    slots[used, 1] = crop[config.base_channels + n :]
    allowed = torch.from_numpy(state.allowed())
    return {"base": base, "slots": slots, "available": allowed[:-1], "new_allowed": allowed[-1]}
