"""davis-interactive scribbles: checked reading and writing, and rasterisation into label masks.

The format (`Scribbles/<sequence>/NNN.json` in DAVIS, and what the robot returns)::

    {"sequence": "bear",
     "scribbles": [[], ..., [{"path": [[x, y], ...], "object_id": 1, "start_time": 0, "end_time": 1712}], ...],
     "annotated_frame": 39}            # optional; written by the robot

with one list per frame, x and y as fractions of the width and height, object id 0 for background (negative)
scribbles. `scribbles_to_mask` follows davisinteractive's `utils/scribbles.py: scribbles2mask`: a point is scaled by
(W - 1, H - 1) and truncated to an integer pixel, consecutive points are joined by Bresenham lines (ties of the
minor coordinate rounded up), and later strokes overwrite earlier ones. The robot normalises by (W, H) instead; that
asymmetry is the reference's, and can move a rasterised robot point by one pixel towards the origin.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.vos_io import read_scribbles, write_scribbles


def _check(scribbles: Mapping[str, Any], where: str) -> None:
    if not isinstance(scribbles.get("sequence"), str):
        raise ValueError(f"{where}: scribbles need a 'sequence' name")
    frames = scribbles.get("scribbles")
    if not isinstance(frames, list) or not all(isinstance(frame, list) for frame in frames):
        raise ValueError(f"{where}: 'scribbles' must be a list with one list of strokes per frame")
    for index, frame in enumerate(frames):
        for stroke in frame:
            object_id = stroke.get("object_id")
            if not isinstance(object_id, int) or isinstance(object_id, bool) or object_id < 0:
                raise ValueError(f"{where}: frame {index} has a stroke with object_id {object_id!r} (need an int >= 0)")
            path = np.asarray(stroke.get("path"), dtype=np.float64)
            if path.ndim != 2 or path.shape[1] != 2 or len(path) == 0:
                raise ValueError(f"{where}: frame {index} has a path of shape {path.shape}; need [[x, y], ...]")
            if not np.all(np.isfinite(path)) or path.min() < 0 or path.max() > 1:
                raise ValueError(
                    f"{where}: frame {index}, object {object_id}: path coordinates must be fractions of the image "
                    f"size in [0, 1], got {path.min():.4g}..{path.max():.4g}"
                )
    annotated = scribbles.get("annotated_frame")
    if annotated is not None and not (isinstance(annotated, int) and 0 <= annotated < len(frames)):
        raise ValueError(f"{where}: annotated_frame {annotated!r} is not a frame index in 0..{len(frames) - 1}")


def load_scribbles(
    path: str | Path,
    sequence: str | None = None,
    num_frames: int | None = None,
    known_sequences: Iterable[str] | None = None,
) -> dict:
    """Read and check a scribble JSON file.

    `sequence` / `num_frames`: what the file must describe; `known_sequences`: the sequences of the dataset at hand
    (a file for any other sequence is an error). Errors name the file and what to fix.
    """
    scribbles = read_scribbles(path, sequence=sequence, num_frames=num_frames)
    scribbles.setdefault("sequence", sequence if sequence is not None else Path(path).parent.name)
    if known_sequences is not None:
        known = set(known_sequences)
        if scribbles["sequence"] not in known:
            raise ValueError(
                f"{path}: scribbles for unknown sequence {scribbles['sequence']!r}; the dataset has "
                f"{sorted(known)[:10]}{' ...' if len(known) > 10 else ''} (check the DAVIS root and the file name)"
            )
    _check(scribbles, str(path))
    return scribbles


def save_scribbles(path: str | Path, scribbles: Mapping[str, Any]) -> None:
    """Check and write scribbles as davis-interactive JSON (parent folders are created)."""
    _check(scribbles, str(path))
    write_scribbles(path, scribbles)


def empty_scribbles(sequence: str, num_frames: int) -> dict:
    return {"sequence": sequence, "scribbles": [[] for _ in range(num_frames)]}


def annotated_frames(scribbles: Mapping[str, Any]) -> list[int]:
    """Indices of the frames that hold at least one stroke."""
    return [index for index, frame in enumerate(scribbles["scribbles"]) if frame]


def fuse_scribbles(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict:
    """A new scribble dict with the strokes of both (same sequence and frame count), `first`'s strokes first."""
    if first["sequence"] != second["sequence"]:
        raise ValueError(f"cannot fuse scribbles of {first['sequence']!r} and {second['sequence']!r}")
    if len(first["scribbles"]) != len(second["scribbles"]):
        raise ValueError(
            f"{first['sequence']}: cannot fuse scribbles over {len(first['scribbles'])} and "
            f"{len(second['scribbles'])} frames"
        )
    fused = {"sequence": first["sequence"], "scribbles": copy.deepcopy(first["scribbles"])}
    for frame, strokes in zip(fused["scribbles"], second["scribbles"]):
        frame.extend(copy.deepcopy(strokes))
    return fused


def bresenham(points: np.ndarray) -> np.ndarray:
    """Integer (x, y) pixels of the polyline through `points` (N, 2): each segment from its start to its end pixel."""
    points = np.asarray(points, dtype=np.int64).reshape(-1, 2)
    if len(points) < 2:
        return points
    pieces = []
    for start, end in zip(points[:-1], points[1:]):
        delta = end - start
        major = 0 if abs(delta[0]) > abs(delta[1]) else 1  # ties step along y, as in the reference
        minor = 1 - major
        length = abs(int(delta[major]))
        steps = np.arange(length + 1)
        segment = np.empty((length + 1, 2), dtype=np.int64)
        major_sign = 1 if delta[major] > 0 else -1
        minor_sign = 1 if delta[minor] > 0 else -1
        segment[:, major] = start[major] + major_sign * steps
        if length == 0:
            segment[:, minor] = start[minor]
        else:
            # Bresenham with the error test `D >= 0`: the minor offset is k·|dminor|/|dmajor| rounded half up.
            offset = (2 * steps * abs(int(delta[minor])) + length) // (2 * length)
            segment[:, minor] = start[minor] + minor_sign * offset
        pieces.append(segment)
    return np.concatenate(pieces)


def scribbles_to_mask(
    scribbles: Mapping[str, Any], shape: tuple[int, int], bresenham_lines: bool = True, default_value: int = -1
) -> np.ndarray:
    """(T, H, W) int64 map of scribble object ids (`default_value` where nothing was drawn); see the module docs."""
    height, width = (int(size) for size in shape)
    if height < 1 or width < 1:
        raise ValueError(f"invalid output shape {shape}: need (H, W) with H, W >= 1")
    frames = scribbles["scribbles"]
    masks = np.full((len(frames), height, width), default_value, dtype=np.int64)
    scale = np.array([width - 1, height - 1], dtype=np.float64)
    for index, strokes in enumerate(frames):
        for stroke in strokes:
            pixels = (np.asarray(stroke["path"], dtype=np.float64) * scale).astype(np.int64)
            if bresenham_lines:
                pixels = bresenham(pixels)
            masks[index, pixels[:, 1], pixels[:, 0]] = stroke["object_id"]
    return masks


def stroke_pixels(stroke: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """(x, y) pixel of every point of a robot stroke: x·W, y·H rounded to the nearest pixel (the robot's scale)."""
    height, width = shape
    points = np.asarray(stroke["path"], dtype=np.float64) * [width, height]
    pixels = np.floor(points + 0.5).astype(np.int64)
    return np.clip(pixels, 0, [width - 1, height - 1])


__all__ = [
    "annotated_frames", "bresenham", "empty_scribbles", "fuse_scribbles", "load_scribbles", "save_scribbles",
    "scribbles_to_mask", "stroke_pixels",
]
