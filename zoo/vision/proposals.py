"""Class-agnostic instance proposals from a Mask R-CNN, on a whole frame or on a search region.

What the seeds need (`../shared/research/seeds.md` §1, §3):
- ALBA takes every Mask R-CNN detection above a low score threshold (0.05) as a proposal, whatever its class, with
  its binary mask and a 256-d appearance feature: the mask-head features averaged spatially. `Proposals.features`
  is exactly that: the output of torchvision's ``roi_heads.mask_head`` (256 x 14 x 14 per detection) averaged over
  its 14 x 14 grid.
- FTMU segments only inside a search region around the previous masks (it used YOLACT there; Mask R-CNN is the
  paper's slower alternative, 0.15 s/frame). ``region=(x0, y0, x1, y1)`` crops the frame, the detector resizes the
  crop to its input size as for any image, and boxes and masks are mapped back to frame coordinates.

Models:
- ``"auto"`` (default): torchvision's COCO Mask R-CNN (ResNet-50-FPN v2) when its weights can be loaded (downloaded
  or in the torch hub cache), else the zoo's own class-agnostic segmenter ``segmenter-vos``
  (`zoo.vision.segmenter`, trained by `recipes.segmenter_vos` on real frames), with a one-line notice. Never a
  random detector.
- ``"maskrcnn_resnet50_fpn"`` / ``"maskrcnn_resnet50_fpn_v2"``: torchvision's, with ``weights`` ``"DEFAULT"`` (COCO,
  random init with a warning when they cannot be loaded), ``None`` (random init) or a state-dict path.
- a zoo segmenter: a registered name (``"segmenter-vos"``) or a checkpoint folder.

"Class-agnostic" means the COCO class is not used to filter or group proposals; torchvision still suppresses
duplicates per class, so one object may appear under two classes. ``class_agnostic_nms_thresh`` removes those.
``labels`` is kept for inspection (COCO ids; 1 = "object" for the zoo segmenter).

    generator = ProposalGenerator(cache_dir="cache")
    proposals = generator(read_rgb(path), video="bear", frame=0, region=(x0, y0, x1, y1))
    proposals.masks  # (N, H, W) bool in frame coordinates; .boxes, .scores, .labels, .features
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from zoo.vision import DEFAULT_WEIGHTS, build_with_weights, check_rgb
from zoo.vision.cache import ArrayCache

MODELS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
AUTO = "auto"
ZOO_SEGMENTER = "segmenter-vos"


@dataclass(frozen=True)
class ProposalSettings:
    """Everything that changes the proposals besides the model and its weights; all of it is in the cache key."""

    box_score_thresh: float = 0.05  # ALBA's threshold; torchvision's default (for detection) is 0.05 too
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    mask_thresh: float = 0.5
    # None keeps the model's own: torchvision COCO 800 / 1333 / 1000, the zoo segmenter its checkpoint's (384 / 683 / 300)
    min_size: int | None = None  # the detector resizes the shorter image side to this
    max_size: int | None = None
    rpn_proposals: int | None = None  # region proposals kept after the RPN's NMS; the box head's cost grows with it
    class_agnostic_nms_thresh: float | None = None  # None: keep torchvision's per-class NMS only


@dataclass
class Proposals:
    """N proposals in frame coordinates, sorted by decreasing score."""

    boxes: np.ndarray  # (N, 4) float32, x0 y0 x1 y1 in pixels of the full frame
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64 COCO category ids
    masks: np.ndarray  # (N, H, W) bool, full frame
    features: np.ndarray  # (N, 256) float32 appearance features

    def __len__(self) -> int:
        return len(self.scores)

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Proposals":
        return cls(**{field.name: arrays[field.name] for field in fields(cls)})


def crop_box(region: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """The integer pixel crop covering ``region`` (x0, y0, x1, y1), rounded outwards and clipped to the frame."""
    if len(region) != 4:
        raise ValueError(f"region must be (x0, y0, x1, y1), got {region!r}")
    x0, y0, x1, y1 = (float(value) for value in region)
    left, top = max(0, math.floor(x0)), max(0, math.floor(y0))
    right, bottom = min(width, math.ceil(x1)), min(height, math.ceil(y1))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(
            f"region {region!r} leaves less than 2x2 pixels inside the {width}x{height} frame; "
            "pass a box (x0, y0, x1, y1) that overlaps the frame"
        )
    return left, top, right, bottom


def configure_detector(detector, settings: ProposalSettings) -> None:
    """Apply ``settings`` to a torchvision ``MaskRCNN`` (None fields keep the model's own values)."""
    heads = detector.roi_heads
    heads.score_thresh, heads.nms_thresh = settings.box_score_thresh, settings.box_nms_thresh
    heads.detections_per_img = settings.detections_per_img
    if settings.min_size is not None:
        detector.transform.min_size = (settings.min_size,)
    if settings.max_size is not None:
        detector.transform.max_size = settings.max_size
    if settings.rpn_proposals is not None:
        detector.rpn._pre_nms_top_n["testing"] = max(settings.rpn_proposals, detector.rpn._pre_nms_top_n["testing"])
        detector.rpn._post_nms_top_n["testing"] = settings.rpn_proposals


def coco_weights_available(weights) -> bool:
    """Whether torchvision's COCO weights load (torch hub cache or download), checked before any model is built."""
    try:
        weights.get_state_dict(progress=False)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError):
        return False
    return True


class ProposalGenerator:
    """Mask R-CNN proposals for one frame at a time, optionally cached on disk.

    ``model``: ``"auto"``, a torchvision model name of `MODELS`, or a zoo segmenter (registered name or folder); see
    the module docstring. ``weights`` applies to the torchvision models only. ``pretrained`` says whether trained
    weights (COCO, a file, or the zoo segmenter's) were loaded. Results are cached when ``cache_dir`` is set and the
    call names ``video`` and ``frame``; the cache key holds the model, a fingerprint of its weights and the settings.
    """

    def __init__(
        self,
        model: str | os.PathLike = AUTO,
        weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        settings: ProposalSettings = ProposalSettings(),
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        model = str(model)
        if model == AUTO:
            self.detector, self.weights_tag, model = self._coco_or_zoo(settings, seed)
        elif model in MODELS:
            self.detector, self.weights_tag = self._torchvision(model, weights, seed)
        else:
            self.detector, self.weights_tag = self._zoo(model)
        configure_detector(self.detector, settings)
        self.detector.to(device)
        self.device = torch.device(device)
        self.model_name = model
        self.settings = settings
        self.pretrained = not self.weights_tag.startswith("random-init")
        self.cache = ArrayCache(cache_dir) if cache_dir is not None else None
        self.model_calls = 0
        self._mask_head_output: list[torch.Tensor] = []
        self.detector.roi_heads.mask_head.register_forward_hook(
            lambda module, inputs, output: self._mask_head_output.append(output)
        )

    @staticmethod
    def _coco_weights(model: str):
        from torchvision.models import detection

        return {
            "maskrcnn_resnet50_fpn": detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
            "maskrcnn_resnet50_fpn_v2": detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
        }[model]

    @classmethod
    def _torchvision(cls, model: str, weights, seed: int):
        from torchvision.models import detection

        builder = getattr(detection, model)
        return build_with_weights(
            lambda w: builder(weights=w, weights_backbone=None, progress=False), cls._coco_weights(model), weights, seed
        )

    @staticmethod
    def _zoo(name_or_path: str):
        from zoo.hub import load, state_digest

        try:
            segmenter = load(name_or_path)
        except (KeyError, FileNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown proposal model {name_or_path!r}: choose 'auto', one of {MODELS}, a zoo segmenter name "
                f"('{ZOO_SEGMENTER}') or a segmenter checkpoint folder ({error})"
            ) from error
        if getattr(segmenter, "model_type", None) != "segmenter":
            raise ValueError(f"{name_or_path!r} is a '{segmenter.model_type}' model, not an instance segmenter")
        return segmenter.detector, f"zoo:{Path(str(name_or_path)).name}:{state_digest(segmenter)[:16]}"

    @classmethod
    def _coco_or_zoo(cls, settings: ProposalSettings, seed: int):
        import sys

        coco = "maskrcnn_resnet50_fpn_v2"
        if coco_weights_available(cls._coco_weights(coco)):
            detector, tag = cls._torchvision(coco, DEFAULT_WEIGHTS, seed)
            return detector, tag, coco
        print(f"[zoo] torchvision's COCO Mask R-CNN weights are unavailable; proposals come from the zoo's "
              f"'{ZOO_SEGMENTER}' (class-agnostic, trained on real frames)", file=sys.stderr)
        detector, tag = cls._zoo(ZOO_SEGMENTER)
        return detector, tag, ZOO_SEGMENTER

    def cache_key(self, crop: tuple[int, int, int, int] | None) -> dict:
        return {
            "model": self.model_name,
            "weights": self.weights_tag,
            "pretrained": self.pretrained,
            "settings": asdict(self.settings),
            "crop": list(crop) if crop is not None else None,
        }

    def __call__(
        self,
        image: np.ndarray,
        *,
        video: str | None = None,
        frame: str | int | None = None,
        region: Sequence[float] | None = None,
    ) -> Proposals:
        """Proposals for an (H, W, 3) uint8 RGB frame; with ``region`` the detector sees only that crop."""
        image = check_rgb(image)
        height, width = image.shape[:2]
        crop = crop_box(region, height, width) if region is not None else None
        use_cache = self.cache is not None and video is not None and frame is not None
        if use_cache:
            stored = self.cache.get("proposals", video, frame, self.cache_key(crop))
            if stored is not None:
                return Proposals.from_arrays(stored)
        proposals = self._detect(image, crop)
        if use_cache:
            self.cache.put("proposals", video, frame, self.cache_key(crop), proposals.as_arrays())
        return proposals

    @torch.inference_mode()
    def _detect(self, image: np.ndarray, crop: tuple[int, int, int, int] | None) -> Proposals:
        left, top, right, bottom = crop if crop is not None else (0, 0, image.shape[1], image.shape[0])
        patch = np.ascontiguousarray(image[top:bottom, left:right])
        tensor = torch.from_numpy(patch).to(self.device).permute(2, 0, 1).float().div_(255)
        self._mask_head_output.clear()
        self.model_calls += 1
        (detections,) = self.detector([tensor])
        (mask_features,) = self._mask_head_output
        self._mask_head_output.clear()
        boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
        patch_masks = detections["masks"][:, 0] > self.settings.mask_thresh
        features = mask_features.mean(dim=(2, 3))
        if self.settings.class_agnostic_nms_thresh is not None:
            from torchvision.ops import nms

            keep = nms(boxes, scores, self.settings.class_agnostic_nms_thresh)
            boxes, scores, labels, patch_masks, features = (
                values[keep] for values in (boxes, scores, labels, patch_masks, features)
            )
        masks = np.zeros((len(scores), image.shape[0], image.shape[1]), dtype=bool)
        masks[:, top:bottom, left:right] = patch_masks.cpu().numpy()
        offset = torch.tensor([left, top, left, top], dtype=boxes.dtype, device=boxes.device)
        return Proposals(
            boxes=(boxes + offset).cpu().numpy().astype(np.float32),
            scores=scores.cpu().numpy().astype(np.float32),
            labels=labels.cpu().numpy().astype(np.int64),
            masks=masks,
            features=features.cpu().numpy().astype(np.float32),
        )
