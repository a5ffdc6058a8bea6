"""Interactive VOS engines: the segmentation algorithm behind an interactive session, under one interface.

IVOS-W (seeds.md §2) recommends which frame the user annotates next; the masks come from an external interactive
VOS method (ATNet, MANet, IPN in the paper; MiVOS, Cutie, SAM 2 today). `InteractiveEngine` is what such a method
must offer:

    engine.start(frames, num_objects)            # frames: list of (H, W, 3) uint8 RGB; objects 1..K
    out = engine.interact(frame_index, scribbles) # one round: the scribbles drawn on frame `frame_index`
    out.probabilities                             # (K + 1, T, H, W) float32 in [0, 1]; channel 0 = background,
                                                  # channels sum to 1 at every pixel
    out.labels                                    # (T, H, W) uint8 in 0..K, = argmax over channels (ties: lower id)
    engine.reset()                                # forget the rounds, keep the video (and its cached flow)

`scribbles` is davis-interactive's format, as the robot returns and ``Scribbles/<seq>/NNN.json`` holds: a dict
{"scribbles": [[stroke, ...] per frame], ...} whose strokes all lie on `frame_index`, or just the list of strokes of
that frame; a stroke is {"path": [[x, y], ...] as fractions of (W, H), "object_id": k} with k = 0 for background.

Wrapping an external model (a sketch; ``mivos`` stands for the model's own API):

    class MiVOSEngine(InteractiveEngine):
        def start(self, frames, num_objects):
            self.model = mivos.InferenceCore(np.stack(frames), num_objects)
        def interact(self, frame_index, scribbles):
            strokes = strokes_on_frame(scribbles, frame_index)
            seeds = rasterise_strokes(strokes, self.model.shape)          # (H, W) ids, -1 where nothing drawn
            probs = self.model.interact(frame_index, seeds)               # the model's (K + 1, T, H, W) output
            return EngineOutput.from_probabilities(probs)
        def reset(self):
            self.model.clear_memory()

`FlowPropagationEngine` is the weight-free engine of this module (see its docstring).
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from zoo.interactive.scribbles import scribbles_to_mask
from zoo.vision.flow import FlowEstimator


@dataclass(frozen=True)
class EngineOutput:
    """Masks of every frame after a round: `probabilities` (K + 1, T, H, W) float32, channel 0 the background, each
    pixel's channels summing to 1; `labels` (T, H, W) uint8, the argmax over channels (lower id on ties)."""

    probabilities: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> "EngineOutput":
        """Normalise a (K + 1, T, H, W) non-negative array over channels and take its argmax."""
        probs = np.clip(np.asarray(probabilities, dtype=np.float32), 0, None)
        total = probs.sum(axis=0, keepdims=True)
        probs = np.where(total > 0, probs / np.maximum(total, 1e-12), np.eye(len(probs), dtype=np.float32)[0][
            :, None, None, None])
        return cls(probs.astype(np.float32), probs.argmax(axis=0).astype(np.uint8))


class InteractiveEngine(abc.ABC):
    """The interface of an interactive VOS method (see the module docstring for the exact contract)."""

    @abc.abstractmethod
    def start(self, frames: Sequence[np.ndarray], num_objects: int) -> None:
        """Load a video: `frames` (H, W, 3) uint8 RGB, objects 1..`num_objects`. Forgets any earlier round."""

    @abc.abstractmethod
    def interact(self, frame_index: int, scribbles: Mapping[str, Any] | Sequence[Mapping]) -> EngineOutput:
        """Apply one round's scribbles on `frame_index`; return the masks of every frame."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every round of the current video (the video itself stays loaded)."""


def strokes_on_frame(scribbles: Mapping[str, Any] | Sequence[Mapping], frame_index: int) -> list[dict]:
    """The strokes of one round on `frame_index`, from a davis-interactive dict or a plain list of strokes. A dict
    with strokes on another frame is an error (one round annotates one frame)."""
    if isinstance(scribbles, Mapping):
        frames = scribbles.get("scribbles")
        if not isinstance(frames, list) or not 0 <= frame_index < len(frames):
            raise ValueError(f"scribbles need a 'scribbles' list with an entry for frame {frame_index}")
        others = [index for index, strokes in enumerate(frames) if strokes and index != frame_index]
        if others:
            raise ValueError(f"one round annotates one frame: strokes on frame(s) {others}, not only {frame_index}")
        return list(frames[frame_index])
    return list(scribbles)


def rasterise_strokes(strokes: Sequence[Mapping], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int64 map of stroke object ids (-1 where nothing was drawn), rasterised by
    `zoo.interactive.scribbles.scribbles_to_mask` (Bresenham lines, later strokes on top)."""
    return scribbles_to_mask({"scribbles": [list(strokes)]}, shape)[0]


def channel_argmax(probs: np.ndarray) -> np.ndarray:
    """np.argmax(probs, axis=0) as uint8 (lowest channel on ties), channel by channel: much faster on (C, H, W)."""
    best = probs[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    for channel in range(1, len(probs)):
        higher = probs[channel] > best
        labels[higher] = channel
        np.maximum(best, probs[channel], out=best)
    return labels


class ScribbleMaskMixin:
    """The scribble → mask step the engines share (`FlowPropagationEngine` steps 1–2, and the annotated frames of
    `zoo.interactive.matching_engine.MatchingEngine`), plus the watershed appearance refinement of a propagated map.

    The host class provides ``frames`` (list of (H, W, 3) uint8 RGB), ``num_objects``, ``blur_sigma``, ``soft_sigma``,
    ``_strokes`` (frame → every stroke drawn on it so far, this round's included) and ``_blurred`` (frame → the
    watershed input, a per-video cache). `_check_frames` / `_check_round` / `_check_mask` check the arguments of
    ``start`` / ``interact`` / ``interact_mask``; `_segment` gives the annotated frame's labels from its strokes and
    prior (see `FlowPropagationEngine`, steps 1 and 2); `_soft` the soft one-hot probabilities of a label map;
    `_watershed_refined` the refinement of a propagated map (`FlowPropagationEngine`, step 3).

    It also keeps the rounds the same way for both engines: `interact` / `interact_mask` check the round, run the
    host's per-video work once (``_prepare_video``: the flow, the keys), take the annotated frame's labels and hand
    them to the host's ``_commit`` (the propagation), which records the frame with `_mark_annotated` and writes frames
    with `_set_frame`; `_reset_rounds` forgets every round.
    """

    frames: list[np.ndarray] | None
    num_objects: int
    blur_sigma: float
    soft_sigma: float

    def _prepare_video(self) -> None:
        """The host's per-video work (flow, features), done on the first round and kept."""
        raise NotImplementedError

    def _commit(self, frame_index: int, labels: np.ndarray) -> EngineOutput:
        """The host's propagation of frame `frame_index`'s new labels to the other frames."""
        raise NotImplementedError

    def interact(self, frame_index: int, scribbles: Mapping[str, Any] | Sequence[Mapping]) -> EngineOutput:
        frame_index, strokes = self._check_round(frame_index, scribbles)
        self._prepare_video()
        prior = None if self._new_probs() else self._labels[frame_index]
        self._strokes.setdefault(frame_index, []).extend(strokes)
        return self._commit(frame_index, self._segment(frame_index, strokes, prior))

    def interact_mask(self, frame_index: int, labels: np.ndarray) -> EngineOutput:
        """A round that gives frame `frame_index`'s whole (H, W) label map (ids 0..K) instead of scribbles (e.g. the
        first-frame ground truth of semi-supervised VOS); it is propagated and fused like a scribbled round."""
        frame_index, labels = self._check_mask(frame_index, labels)
        self._prepare_video()
        self._new_probs()
        return self._commit(frame_index, labels)

    def output(self) -> EngineOutput:
        """The current masks (read-only views; copy them to keep them past the next round)."""
        if self._probs is None:
            raise RuntimeError("no round yet")
        probs, labels = self._probs.view(), self._labels.view()
        probs.flags.writeable = labels.flags.writeable = False
        return EngineOutput(probs, labels)

    @property
    def annotated_frames(self) -> list[int]:
        return list(self._annotated)

    def _reset_rounds(self) -> None:
        self._probs: np.ndarray | None = None  # (K + 1, T, H, W)
        self._labels: np.ndarray | None = None  # (T, H, W)
        self._annotated: list[int] = []  # annotated frames, oldest round first (a frame re-annotated moves last)
        self._strokes: dict[int, list[dict]] = {}  # every stroke drawn on each frame, in order

    def _new_probs(self) -> bool:
        """Allocates the masks on the first round (True); False when they exist (the current labels are the prior)."""
        if self._probs is not None:
            return False
        num_frames, (height, width) = len(self.frames), self.frames[0].shape[:2]
        self._probs = np.zeros((self.num_objects + 1, num_frames, height, width), np.float32)
        self._probs[0] = 1.0
        self._labels = np.zeros((num_frames, height, width), np.uint8)
        return True

    def _mark_annotated(self, frame_index: int) -> None:
        if frame_index in self._annotated:
            self._annotated.remove(frame_index)
        self._annotated.append(frame_index)

    def _set_frame(self, t: int, probs: np.ndarray) -> None:
        self._probs[:, t] = probs
        self._labels[t] = channel_argmax(probs)

    @staticmethod
    def _check_frames(frames: Sequence[np.ndarray], num_objects) -> list[np.ndarray]:
        frames = [np.asarray(frame) for frame in frames]
        if not frames:
            raise ValueError("need at least one frame")
        shape = frames[0].shape
        for index, frame in enumerate(frames):
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or frame.shape != shape:
                raise ValueError(f"frame {index}: need (H, W, 3) uint8 frames of one size, got {frame.dtype} "
                                 f"{frame.shape} (frame 0: {shape})")
        if not isinstance(num_objects, (int, np.integer)) or not 1 <= num_objects <= 254:
            raise ValueError(f"num_objects must be an int in 1..254, got {num_objects!r}")
        return frames

    def _check_round(self, frame_index, scribbles) -> tuple[int, list[dict]]:
        """(frame index, the round's strokes on it), checked (the engine must be started)."""
        if self.frames is None:
            raise RuntimeError("call start(frames, num_objects) before interact")
        num_frames = len(self.frames)
        if not isinstance(frame_index, (int, np.integer)) or not 0 <= frame_index < num_frames:
            raise ValueError(f"frame_index {frame_index!r} is outside 0..{num_frames - 1}")
        frame_index = int(frame_index)
        strokes = strokes_on_frame(scribbles, frame_index)
        for stroke in strokes:
            object_id = stroke.get("object_id")
            if not isinstance(object_id, (int, np.integer)) or not 0 <= object_id <= self.num_objects:
                raise ValueError(f"stroke object_id {object_id!r} is outside 0..{self.num_objects}")
        return frame_index, strokes

    def _check_mask(self, frame_index, labels) -> tuple[int, np.ndarray]:
        """`interact_mask`'s arguments: a frame index and an (H, W) integer label map with ids in 0..K."""
        frame_index, _ = self._check_round(frame_index, [])
        labels = np.asarray(labels)
        if labels.shape != self.frames[0].shape[:2] or labels.dtype.kind not in "ui" or (
                labels.size and (labels.min() < 0 or labels.max() > self.num_objects)):
            raise ValueError(f"the mask must be an (H, W) = {self.frames[0].shape[:2]} integer map with ids in "
                             f"0..{self.num_objects}, got {labels.dtype} {labels.shape}")
        return frame_index, labels.astype(np.uint8)

    def _watershed_refined(self, t: int, probs: np.ndarray) -> np.ndarray:
        """Appearance refinement of a propagated map: its labels, every region eroded by r pixels, seed a watershed
        on frame t; the result is the mean of the map and the soft watershed labels."""
        labels = self._watershed(t, self._prior_markers(channel_argmax(probs)))
        return 0.5 * probs + 0.5 * self._soft(labels)

    def _prior_markers(self, prior: np.ndarray) -> np.ndarray:
        height, width = prior.shape
        erosion = max(2, int(round(0.01 * min(height, width))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erosion + 1, 2 * erosion + 1))
        markers = np.zeros((height, width), np.int32)
        for object_id in range(self.num_objects + 1):
            region = (prior == object_id).astype(np.uint8)
            if region.any():
                core = cv2.erode(region, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
                markers[core] = object_id + 1
        return markers

    def _soft(self, labels: np.ndarray) -> np.ndarray:
        """One-hot `labels` blurred (sigma `soft_sigma`) and normalised; where the blur would change the argmax (thin
        or isolated parts), the pixel stays one-hot, so the argmax of the result is `labels` exactly."""
        onehot = (labels[None] == np.arange(self.num_objects + 1)[:, None, None]).astype(np.float32)
        if self.soft_sigma <= 0:
            return onehot
        soft = np.empty_like(onehot)
        for channel in range(len(onehot)):
            soft[channel] = cv2.GaussianBlur(onehot[channel], (0, 0), self.soft_sigma)
        soft /= np.maximum(soft.sum(axis=0, keepdims=True), 1e-6)
        soft = np.where((channel_argmax(soft) == labels)[None], soft, onehot)
        return soft

    def _segment(self, frame_index: int, new_strokes: list[dict], prior: np.ndarray | None) -> np.ndarray:
        frame = self.frames[frame_index]
        height, width = frame.shape[:2]
        small = min(height, width)
        markers = np.zeros((height, width), np.int32)  # 0 unknown, id + 1 a seed of id
        if prior is None:
            drawn = rasterise_strokes(self._strokes[frame_index], (height, width))
            far = np.ones((height, width), bool)
            for object_id in range(1, self.num_objects + 1):
                ys, xs = np.nonzero(drawn == object_id)
                if not len(ys):
                    continue
                diagonal = float(np.hypot(np.ptp(xs), np.ptp(ys)))
                radius = max(0.75 * diagonal, 0.05 * small)
                not_drawn = np.where(drawn == object_id, 0, 255).astype(np.uint8)
                distance = cv2.distanceTransform(not_drawn, cv2.DIST_L2, 5)
                far &= distance > radius
            markers[far] = 1
        else:
            band = max(2, int(round(0.01 * small)))
            unknown = np.zeros((height, width), np.uint8)
            for stroke in new_strokes:
                pixels = rasterise_strokes([stroke], (height, width)) >= 0
                ys, xs = np.nonzero(pixels)
                if not len(ys):
                    continue
                radius = 0.5 * float(np.hypot(np.ptp(xs), np.ptp(ys))) + band
                distance = cv2.distanceTransform(np.where(pixels, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
                unknown[(distance <= radius) & (prior != stroke["object_id"])] = 1
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
            unknown = cv2.dilate(unknown, kernel).astype(bool)
            markers = np.where(unknown, 0, prior.astype(np.int32) + 1).astype(np.int32)
            drawn = rasterise_strokes(self._strokes[frame_index], (height, width))
        markers[drawn >= 0] = drawn[drawn >= 0] + 1
        return self._watershed(frame_index, markers)

    def _watershed(self, t: int, markers: np.ndarray) -> np.ndarray:
        """Labels (id = marker - 1) grown from `markers` by `cv2.watershed` on the blurred frame t."""
        frame = self.frames[t]
        if not (markers > 0).any():
            return np.zeros(frame.shape[:2], np.uint8)
        image = self._blurred.get(t)
        if image is None:
            image = cv2.GaussianBlur(frame, (0, 0), self.blur_sigma) if self.blur_sigma > 0 else frame
            image = self._blurred[t] = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        seeds = markers
        markers = markers.astype(np.int32, copy=True)
        cv2.watershed(image, markers)
        markers = np.where(seeds > 0, seeds, markers)  # seeds are hard (watershed marks the image border -1)
        lines = markers <= 0
        if lines.any():
            filled = cv2.dilate(np.where(lines, 0, markers).astype(np.float32), np.ones((3, 3), np.uint8))
            markers = np.where(lines, filled, markers).astype(np.int32)
            markers[markers <= 0] = 1
        return (markers - 1).astype(np.uint8)


class FlowPropagationEngine(ScribbleMaskMixin, InteractiveEngine):
    """Weight-free interactive VOS: seeded watershed on the annotated frame, optical-flow propagation, nearest-frame
    fusion of rounds.

    A round on frame a:

    1. Seeds (`cv2.watershed` markers). All strokes drawn on frame a so far (this round's and earlier rounds') are
       rasterised (`rasterise_strokes`) and are hard seeds of their id (0 = background).
       - If the video has no masks yet (first round): background seeds are also every pixel farther than
         R_k = max(0.75·d_k, 0.05·min(H, W)) from each object k's strokes, d_k the diagonal of the bounding box of
         object k's stroke pixels (strokes run along an object, so the object lies within about that distance).
       - Otherwise the current label map of frame a (annotated earlier or propagated) is the prior, and every
         pixel seeds its prior label except the correction zone: the pixels within 0.5·d_s + r of a stroke s of this
         round whose prior label differs from the stroke's id (d_s the diagonal of the stroke's bounding box), grown
         by r = max(2, round(0.01·min(H, W))) pixels so that the boundary around them can move. The strokes are
         painted on top. So pixels under an object's stroke become that object, under a background stroke
         background, only the correction zone is re-segmented, and the rest of the frame keeps its labels.
    2. `cv2.watershed` on the frame (Gaussian-blurred, sigma = `blur_sigma` pixels, to damp texture) grows the seeds;
       seeds keep their label, and the one-pixel watershed lines take the largest label of their 3×3
       neighbourhood. Probabilities of frame a: the one-hot labels blurred with a Gaussian of sigma `soft_sigma`
       pixels (soft edges), normalised, and kept one-hot wherever the blur would move the argmax.
    3. Propagation: for t > a, P_t(x) = P_{t-1}(x + F_{t→t-1}(x)) (backward flow, bilinear `cv2.remap`); for t < a,
       P_t(x) = P_{t+1}(x + F_{t→t+1}(x)). Pixels fetched from outside the image are background. Channels are
       renormalised after every step. Appearance refinement (``refine=True``, the default): each warped map's
       labels, every region eroded by r pixels, seed a watershed on frame t (as in step 2), and P_t is the mean of
       the warped probabilities and the soft watershed labels; this pulls drifting masks back onto image edges. The
       refined P_t is what the next step warps.
    4. Fusion (nearest-frame): every frame t takes the propagation from the annotated frame nearest in time; a tie
       goes to the frame annotated most recently. A round thus recomputes exactly the frames whose nearest annotated
       frame is now a (a itself included) and leaves every other frame's probabilities bit for bit as they were.

    Flow: the 2(T − 1) flows F_{t→t+1}, F_{t+1→t} are computed once per video (on the first round, with
    `flow_estimator`, DIS by default; a `cache_dir` estimator also keeps them on disk) and kept until `start` loads a
    different video; `reset` keeps them. `flow_calls` counts the estimator calls this engine made.

    Cost: the engine holds (K + 1)·T·H·W float32 probabilities and 2(T − 1) flows (for 50 frames at 854×480 and
    K = 2, about 250 MB + 320 MB). A round costs about 35 ms per recomputed 854×480 frame on one core with
    refinement (DIS flow, computed once, about 45 ms per pair). Weak spots: DIS loses fast, finely textured objects
    (the synthetic object that swings out of the frame moves ~15 % of the width per frame), and the first-round
    background seeds assume the strokes run along their objects.
    """

    def __init__(self, flow_estimator: FlowEstimator | None = None, video_name: str | None = None,
                 blur_sigma: float = 1.0, soft_sigma: float = 1.0, refine: bool = True):
        self.flow = flow_estimator if flow_estimator is not None else FlowEstimator("dis")
        self.video_name = video_name
        self.blur_sigma, self.soft_sigma = float(blur_sigma), float(soft_sigma)
        self.refine = bool(refine)
        self.flow_calls = 0
        self.frames: list[np.ndarray] | None = None
        self.num_objects = 0
        self._digest: str | None = None
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self._blurred: dict[int, np.ndarray] = {}  # watershed input (blurred BGR) per frame
        self._forward: list[np.ndarray] | None = None  # F_{t→t+1}, t = 0..T-2
        self._backward: list[np.ndarray] | None = None  # F_{t+1→t}, t = 0..T-2
        self.reset()

    # ------------------------------------------------------------------------------------------ interface
    def start(self, frames: Sequence[np.ndarray], num_objects: int) -> None:
        frames = self._check_frames(frames, num_objects)
        shape = frames[0].shape
        digest = hashlib.sha1(np.stack(frames).tobytes()).hexdigest()
        if digest != self._digest:
            self._forward = self._backward = None
            self._digest = digest
            self._blurred = {}
        height, width = shape[:2]
        self._grid = tuple(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)))
        self.frames, self.num_objects = frames, int(num_objects)
        self.reset()

    def reset(self) -> None:
        self._reset_rounds()

    def _commit(self, frame_index: int, labels: np.ndarray) -> EngineOutput:
        """Frame `frame_index` annotated with `labels`: propagate over the frames it now owns (steps 3–4)."""
        self._mark_annotated(frame_index)
        cell = np.nonzero(self.frame_owners() == frame_index)[0]  # a contiguous run of frames around frame_index
        self._set_frame(frame_index, self._soft(labels))
        for t in range(frame_index + 1, int(cell.max()) + 1):
            self._set_frame(t, self._refined(t, self._warp(self._probs[:, t - 1], self._backward[t - 1])))
        for t in range(frame_index - 1, int(cell.min()) - 1, -1):
            self._set_frame(t, self._refined(t, self._warp(self._probs[:, t + 1], self._forward[t])))
        return self.output()

    # ------------------------------------------------------------------------------------------ internals
    def frame_owners(self) -> np.ndarray:
        """For every frame, the annotated frame it takes its masks from (-1 before any round)."""
        num_frames = len(self.frames)
        owner = np.full(num_frames, -1, np.int64)
        best = np.full(num_frames, np.inf)
        times = np.arange(num_frames)
        for annotated in self._annotated:  # oldest first; `<=` lets the later round win ties
            distance = np.abs(times - annotated)
            closer = distance <= best
            owner[closer], best[closer] = annotated, distance[closer]
        return owner

    def _prepare_video(self) -> None:  # the flows of every pair of frames
        if self._forward is not None:
            return
        forward, backward = [], []
        for t in range(len(self.frames) - 1):
            pair = self.flow.forward_backward(
                self.frames[t], self.frames[t + 1], video=self.video_name, first_frame=t, second_frame=t + 1
            )
            self.flow_calls += 2
            forward.append(pair[0])
            backward.append(pair[1])
        self._forward, self._backward = forward, backward

    def _warp(self, probs: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """P'(x) = P(x + flow(x)), bilinear; outside the image counts as background; renormalised."""
        columns, rows = self._grid
        map_x, map_y = columns + flow[..., 0], rows + flow[..., 1]
        map_1, map_2 = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        warped = np.empty_like(probs)
        for channel in range(len(probs)):
            warped[channel] = cv2.remap(probs[channel], map_1, map_2, cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=1.0 if channel == 0 else 0.0)
        total = warped.sum(axis=0, keepdims=True)
        return warped / np.maximum(total, 1e-6)

    def _refined(self, t: int, warped: np.ndarray) -> np.ndarray:
        """Appearance refinement of a warped map (`_watershed_refined`), when ``refine`` is on."""
        return self._watershed_refined(t, warped) if self.refine else warped


__all__ = ["EngineOutput", "FlowPropagationEngine", "InteractiveEngine", "ScribbleMaskMixin", "channel_argmax",
           "rasterise_strokes", "strokes_on_frame"]
