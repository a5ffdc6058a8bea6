"""Dense optical flow between two frames: OpenCV DIS (weight-free default) or torchvision RAFT.

Convention (OpenCV's and RAFT's): ``flow[y, x] = (dx, dy)`` maps pixel (x, y) of the *source* frame to
(x + dx, y + dy) in the *target* frame; arrays are (H, W, 2) float32 in pixels. Forward flow of frames (t, t+1) is
source t, target t+1; backward flow swaps them.

ALBA feeds flow (u, v) of each frame, standardised, to its encoder next to the proposal mask (seeds.md §3; it used
PWC-Net, which torchvision does not ship: RAFT is the learned stand-in, DIS the classical one).

    estimator = FlowEstimator("dis", cache_dir="cache")
    forward, backward = estimator.forward_backward(frame_t, frame_t1, video="bear", first_frame=t, second_frame=t + 1)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from zoo.vision import DEFAULT_WEIGHTS, build_with_weights, check_rgb
from zoo.vision.cache import ArrayCache

METHODS = ("dis", "raft_small", "raft_large")
_DIS_PRESETS = ("ultrafast", "fast", "medium")


@dataclass(frozen=True)
class DISSettings:
    """OpenCV DIS preset; a field left at None keeps the preset's value."""

    preset: str = "medium"
    finest_scale: int | None = None
    patch_size: int | None = None
    patch_stride: int | None = None
    gradient_descent_iterations: int | None = None
    variational_refinement_iterations: int | None = None


@dataclass(frozen=True)
class RAFTSettings:
    num_flow_updates: int = 12  # torchvision's default number of recurrent refinements


class FlowEstimator:
    """Optical flow for frame pairs, optionally cached on disk (``pretrained`` is None for DIS, which has no weights).

    ``method``: "dis" (default, no weights), "raft_small" or "raft_large". For RAFT, ``weights`` is ``"DEFAULT"``
    (torchvision's C_T_SKHT_V2 weights when loadable, else random init with a warning), ``None`` or a state-dict
    path. Results are cached when ``cache_dir`` is set and the call names ``video`` and both frames.
    """

    def __init__(
        self,
        method: str = "dis",
        settings: DISSettings | RAFTSettings | None = None,
        weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
        cache_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {METHODS}")
        expected = DISSettings if method == "dis" else RAFTSettings
        settings = expected() if settings is None else settings
        if not isinstance(settings, expected):
            raise TypeError(f"method {method!r} takes {expected.__name__}, got {type(settings).__name__}")
        self.method, self.settings, self.device = method, settings, torch.device(device)
        if method == "dis":
            self.weights_tag, self.pretrained = "none", None  # classical method: no weights to load
            self._dis = _make_dis(settings)
        else:
            from torchvision.models import optical_flow

            builder = getattr(optical_flow, method)
            default_weights = {
                "raft_small": optical_flow.Raft_Small_Weights.C_T_V2,
                "raft_large": optical_flow.Raft_Large_Weights.C_T_SKHT_V2,
            }[method]
            self.raft, self.weights_tag = build_with_weights(
                lambda w: builder(weights=w, progress=False), default_weights, weights, seed
            )
            self.raft.to(self.device)
            self.pretrained = not self.weights_tag.startswith("random-init")
        self.cache = ArrayCache(cache_dir, compress=False) if cache_dir is not None else None
        self.model_calls = 0

    def cache_key(self) -> dict:
        return {
            "method": self.method,
            "weights": self.weights_tag,
            "pretrained": self.pretrained,
            "settings": asdict(self.settings),
        }

    def __call__(
        self,
        source: np.ndarray,
        target: np.ndarray,
        *,
        video: str | None = None,
        source_frame: str | int | None = None,
        target_frame: str | int | None = None,
    ) -> np.ndarray:
        """(H, W, 2) float32 flow from ``source`` to ``target``, both (H, W, 3) uint8 RGB of the same size."""
        source, target = check_rgb(source, "source"), check_rgb(target, "target")
        if source.shape != target.shape:
            raise ValueError(f"source and target frames differ in size: {source.shape} vs {target.shape}")
        use_cache = self.cache is not None and None not in (video, source_frame, target_frame)
        if use_cache:
            pair = f"{_frame_name(source_frame)}_to_{_frame_name(target_frame)}"
            stored = self.cache.get("flow", video, pair, self.cache_key())
            if stored is not None:
                return stored["flow"]
        self.model_calls += 1
        flow = self._dis_flow(source, target) if self.method == "dis" else self._raft_flow(source, target)
        if use_cache:
            self.cache.put("flow", video, pair, self.cache_key(), {"flow": flow})
        return flow

    def forward_backward(
        self,
        first: np.ndarray,
        second: np.ndarray,
        *,
        video: str | None = None,
        first_frame: str | int | None = None,
        second_frame: str | int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(first -> second, second -> first) flows, each cached on its own."""
        forward = self(first, second, video=video, source_frame=first_frame, target_frame=second_frame)
        backward = self(second, first, video=video, source_frame=second_frame, target_frame=first_frame)
        return forward, backward

    def _dis_flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        import cv2

        gray_source = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
        gray_target = cv2.cvtColor(target, cv2.COLOR_RGB2GRAY)
        return self._dis.calc(gray_source, gray_target, None).astype(np.float32, copy=False)

    @torch.inference_mode()
    def _raft_flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        height, width = source.shape[:2]
        # RAFT needs sides divisible by 8 and at least 128 (its correlation pyramid); replicate-pad, crop back.
        pad_bottom = max(128, height + -height % 8) - height
        pad_right = max(128, width + -width % 8) - width

        def prepare(image: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None].float()
            tensor = tensor.div_(127.5).sub_(1.0)  # torchvision's RAFT weights expect [-1, 1]
            return torch.nn.functional.pad(tensor, (0, pad_right, 0, pad_bottom), mode="replicate")

        predictions = self.raft(prepare(source), prepare(target), num_flow_updates=self.settings.num_flow_updates)
        flow = predictions[-1][0, :, :height, :width].permute(1, 2, 0)
        return np.ascontiguousarray(flow.cpu().numpy(), dtype=np.float32)


def _frame_name(frame: str | int) -> str:
    return f"{frame:05d}" if isinstance(frame, int) else str(frame)


def _make_dis(settings: DISSettings):
    import cv2

    if settings.preset not in _DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {settings.preset!r}; choose one of {_DIS_PRESETS}")
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{settings.preset.upper()}"))
    overrides = {
        "finest_scale": dis.setFinestScale,
        "patch_size": dis.setPatchSize,
        "patch_stride": dis.setPatchStride,
        "gradient_descent_iterations": dis.setGradientDescentIterations,
        "variational_refinement_iterations": dis.setVariationalRefinementIterations,
    }
    for name, setter in overrides.items():
        value = getattr(settings, name)
        if value is not None:
            setter(int(value))
    return dis
