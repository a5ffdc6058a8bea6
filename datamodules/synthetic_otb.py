"""Synthetic tracking videos written in the native OTB layout (`<Seq>/img/%04d.jpg` + `groundtruth_rect.txt`).

This is the zoo's embedded default data: no download, deterministic for a seed, and readable by
`datamodules.otb` exactly like the real benchmark. Each video has a textured, saturated target moving smoothly
over a cluttered background, with the OTB challenge attributes the trackers must cope with: scale variation
(±25 %), partial occlusion by a sliding bar, motion blur, and an out-of-view excursion through an image border
(the ground truth then holds the visible part of the box, as OTB annotates it).

`quirks=True` adds the layout quirks of the real release: a tab-separated ground truth, a video with two targets
(`groundtruth_rect.1.txt` / `.2.txt`, sequences `SynthPair.1` / `SynthPair.2`), and `Football1`, whose images run
past the toolkit's frame range (1-74) while its ground truth stops at frame 74.

`write_synthetic_multi_target_otb` writes videos with several differently textured targets each (``SynthMulti01``
..., one ``groundtruth_rect.N.txt`` per target), for training trackers that must follow the target given by the first
box rather than whichever object stands out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from datamodules.otb import FRAME_RANGES, GROUNDTRUTH_FILE

_NOISE_BANK = 4
_FRAME_RANGE_SEQUENCE = "Football1"
_MULTI_TARGET_STREAM = 1  # seeds the multi-target writer's generator apart from write_synthetic_otb's
_MAX_REDRAWS = 50
MIN_COLOUR_DISTANCE = 80.0  # between the colours of any two targets of a multi-target video (RGB, 0..441)


@dataclass
class _Track:
    texture: np.ndarray  # base appearance, BGR uint8
    boxes: np.ndarray  # (N, 4) visible part of the box per frame (the ground truth), 0-based pixels x, y, w, h
    full_boxes: np.ndarray  # (N, 4) the whole target, which may extend past the border


def write_synthetic_otb(
    root: str | Path,
    num_sequences: int = 6,
    num_frames: int = 60,
    image_size: tuple[int, int] = (240, 320),
    seed: int = 0,
    quirks: bool = False,
) -> list[str]:
    """Write the videos under `root` and return their sequence names (one per target), in writing order."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = []
    for index in range(num_sequences):
        name = f"Synth{index + 1:02d}"
        frames, tracks = _render_video(rng, num_frames, image_size, num_targets=1)
        _write_video(root / name, frames, {GROUNDTRUTH_FILE: tracks[0].boxes}, delimiter=",")
        names.append(name)
    if quirks:
        frames, tracks = _render_video(rng, num_frames, image_size, num_targets=1)
        _write_video(root / "SynthTabs", frames, {GROUNDTRUTH_FILE: tracks[0].boxes}, delimiter="\t")
        names.append("SynthTabs")

        frames, tracks = _render_video(rng, num_frames, image_size, num_targets=2)
        files = {f"groundtruth_rect.{k + 1}.txt": track.boxes for k, track in enumerate(tracks)}
        _write_video(root / "SynthPair", frames, files, delimiter=",")
        names += ["SynthPair.1", "SynthPair.2"]

        start, end = FRAME_RANGES[_FRAME_RANGE_SEQUENCE]
        frames, tracks = _render_video(rng, end + 6, image_size, num_targets=1)
        _write_video(root / _FRAME_RANGE_SEQUENCE, frames, {GROUNDTRUTH_FILE: tracks[0].boxes[start - 1 : end]},
                     delimiter=",")
        names.append(_FRAME_RANGE_SEQUENCE)
    return names


def write_synthetic_multi_target_otb(
    root: str | Path,
    num_videos: int,
    num_frames: int,
    targets_per_video: int,
    image_size: tuple[int, int] = (240, 320),
    seed: int = 0,
) -> list[str]:
    """Write `num_videos` videos ``SynthMulti01``, ``SynthMulti02`` ... with `targets_per_video` moving targets each
    (``groundtruth_rect.1.txt`` ... ``.K.txt``, the OTB multi-target layout) and return the video names.

    Only the first box tells which target is meant, so the targets must not look alike: a video whose targets'
    colours are too close (`texture_colour_distance` below `MIN_COLOUR_DISTANCE`) is drawn again from the same
    generator (deterministic for `seed`). Later targets are pasted over earlier ones where they cross, so targets
    occlude one another; the ground truth keeps the whole (in-image) box, as OTB annotates an occluded target.
    Independent of `write_synthetic_otb` (own generator): what that writes is unchanged."""
    if targets_per_video < 1:
        raise ValueError(f"targets_per_video must be at least 1, got {targets_per_video}")
    root = Path(root)
    rng = np.random.default_rng([seed, _MULTI_TARGET_STREAM])
    names = []
    for index in range(num_videos):
        name = f"SynthMulti{index + 1:02d}"
        for _ in range(_MAX_REDRAWS):
            frames, tracks = _render_video(rng, num_frames, image_size, num_targets=targets_per_video)
            if _textures_differ(tracks):
                break
        else:
            raise RuntimeError(f"{name}: could not draw {targets_per_video} targets that look different from one "
                               f"another in {_MAX_REDRAWS} tries; use fewer targets per video")
        files = {f"groundtruth_rect.{k + 1}.txt": track.boxes for k, track in enumerate(tracks)}
        _write_video(root / name, frames, files, delimiter=",")
        names.append(name)
    return names


def texture_colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart the colours of two target textures are: for each colour of one texture (its rim left out), the
    Euclidean distance (0..441) to the nearest colour of the other, averaged, the larger of the two directions."""
    colours_a, colours_b = (np.unique(t[8:-8, 8:-8].reshape(-1, 3), axis=0).astype(np.float64) for t in (a, b))
    distances = np.linalg.norm(colours_a[:, None] - colours_b[None], axis=2)
    return float(max(distances.min(axis=1).mean(), distances.min(axis=0).mean()))


def _textures_differ(tracks: list[_Track]) -> bool:
    return all(texture_colour_distance(a.texture, b.texture) >= MIN_COLOUR_DISTANCE
               for i, a in enumerate(tracks) for b in tracks[i + 1 :])


def _write_video(video_dir: Path, frames: list[np.ndarray], groundtruths: dict[str, np.ndarray], delimiter: str):
    img_dir = video_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=1):
        cv2.imwrite(str(img_dir / f"{number:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    for file_name, boxes in groundtruths.items():
        one_based = boxes + np.array([1, 1, 0, 0])
        lines = [delimiter.join(str(int(v)) for v in row) for row in one_based]
        (video_dir / file_name).write_text("\n".join(lines) + "\n")


def _render_video(rng: np.random.Generator, num_frames: int, image_size: tuple[int, int], num_targets: int):
    height, width = image_size
    background = _cluttered_background(rng, height, width)
    noise = [rng.normal(0, 4, (height, width, 3)).astype(np.int16) for _ in range(_NOISE_BANK)]
    tracks = [_track(rng, num_frames, height, width) for _ in range(num_targets)]
    occlusion = _span(rng, num_frames, 0.15)
    blur = _span(rng, num_frames, 0.12)
    occluder_colour = rng.integers(40, 200, 3)

    frames = []
    for t in range(num_frames):
        frame = background.copy()
        for track in tracks:
            _paste(frame, track.texture, track.full_boxes[t])
        if occlusion[0] <= t < occlusion[1]:
            _draw_occluder(frame, tracks[0].boxes[t], (t - occlusion[0]) / (occlusion[1] - occlusion[0]),
                           occluder_colour)
        if blur[0] <= t < blur[1]:
            frame = cv2.blur(frame, (9, 1))  # horizontal motion blur
        frame = np.clip(frame.astype(np.int16) + noise[t % _NOISE_BANK], 0, 255).astype(np.uint8)
        frames.append(frame)
    return frames, tracks


def _cluttered_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    # Low-frequency colour field with muted blobs: clutter that looks like a scene but not like a target.
    coarse = rng.integers(60, 190, (6, 8, 3)).astype(np.uint8)
    background = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(2, max(width // 6, 3))), int(rng.integers(2, max(height // 6, 3))))
        colour = tuple(int(c) for c in rng.integers(50, 200, 3))
        cv2.ellipse(background, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return cv2.GaussianBlur(background, (5, 5), 0)


def _target_texture(rng: np.random.Generator) -> np.ndarray:
    # Saturated checkerboard with a dark rim: high contrast against the muted background.
    cells = int(rng.integers(3, 6))
    colours = rng.integers(0, 256, (2, 3))
    colours[:, rng.integers(0, 3)] = (255, 0)  # push the two colours apart in one channel
    pattern = (np.add.outer(np.arange(cells), np.arange(cells)) % 2).astype(int)
    texture = cv2.resize(colours[pattern].astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
    cv2.rectangle(texture, (0, 0), (63, 63), (20, 20, 20), 4)
    return texture


def _track(rng: np.random.Generator, num_frames: int, height: int, width: int) -> _Track:
    t = np.arange(num_frames) / num_frames
    box_h = rng.uniform(0.18, 0.28) * height
    box_w = box_h * rng.uniform(0.6, 1.2)
    scale = 1 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.5, 1.0) * t + rng.uniform(0, 2 * np.pi))
    w, h = box_w * scale, box_h * scale
    amplitude_x = width / 2 - box_w * 1.25 / 2 - 4
    amplitude_y = height / 2 - box_h * 1.25 / 2 - 4
    cx = width / 2 + amplitude_x * 0.8 * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * t + rng.uniform(0, 2 * np.pi))
    cy = height / 2 + amplitude_y * 0.8 * np.sin(2 * np.pi * rng.uniform(0.4, 0.9) * t + rng.uniform(0, 2 * np.pi))

    # Out of view: a smooth excursion that carries the centre past the nearer side border and back, timed where
    # the path already runs closest to a border so that the target never jumps.
    length = max(int(round(0.25 * num_frames)), 2)
    first_start = max(num_frames // 5, 1)
    last_start = max(num_frames - length, first_start + 1)
    nearest = int(np.argmax(np.abs(cx[first_start + length // 2 : last_start + length // 2] - width / 2)))
    start, end = first_start + nearest, min(first_start + nearest + length, num_frames)
    phase = np.clip((np.arange(num_frames) - start) / max(end - start, 1), 0, 1)
    side = 1.0 if cx[start] > width / 2 else -1.0
    excursion = np.sin(np.pi * phase) ** 2
    target_cx = width / 2 + side * (width / 2 + 0.1 * box_w)
    cx = cx + excursion * (target_cx - cx)

    x0, y0 = np.round(cx - w / 2), np.round(cy - h / 2)
    x1, y1 = x0 + np.round(w), y0 + np.round(h)
    boxes = np.stack([x0, y0, x1, y1], axis=1)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    full = np.stack([x0, y0, np.round(w), np.round(h)], axis=1)
    visible = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    return _Track(texture=_target_texture(rng), boxes=visible.astype(np.int64), full_boxes=full.astype(np.int64))


def _paste(frame: np.ndarray, texture: np.ndarray, full_box: np.ndarray) -> None:
    x, y, w, h = (int(v) for v in full_box)
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if right <= left or bottom <= top:
        return
    scaled = cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)
    frame[top:bottom, left:right] = scaled[top - y : bottom - y, left - x : right - x]


def _draw_occluder(frame: np.ndarray, box: np.ndarray, progress: float, colour: np.ndarray) -> None:
    # A vertical bar half the target's width that slides across it: partial occlusion, never total.
    x, y, w, h = (int(v) for v in box)
    bar_w = max(w // 2, 2)
    bar_x = int(x - bar_w + progress * (w + bar_w))
    top, bottom = max(y - h // 4, 0), min(y + h + h // 4, frame.shape[0])
    left, right = max(bar_x, 0), min(bar_x + bar_w, frame.shape[1])
    if right > left:
        frame[top:bottom, left:right] = colour
        frame[top:bottom, left:right:4] = colour // 2  # stripes, so the bar has texture of its own


def _span(rng: np.random.Generator, num_frames: int, fraction: float) -> tuple[int, int]:
    """A frame interval of about `fraction` of the video that never includes frame 0 (the initialisation)."""
    length = max(int(round(fraction * num_frames)), 1)
    start = int(rng.integers(max(num_frames // 5, 1), max(num_frames - length, 2)))
    return start, min(start + length, num_frames)
