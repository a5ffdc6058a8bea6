"""Synthetic videos written in the exact on-disk layouts of DAVIS 2016 / 2017, YouTube-VOS, SegTrack v2 and FBMS-59.

They are the embedded default data of the VOS methods (no benchmark can be downloaded here) and the test trees of
the readers. Every video is a textured, slowly panning background with textured polygon objects that move on smooth
paths, occlude each other (fixed depth order: higher id in front), and, in videos with two or more objects, object 1
leaves the frame through the right border and comes back; YouTube-VOS videos have an object that enters after frame
0. Everything is a function of the seed, so two runs write byte-identical label files (JPEG frames are identical for
one OpenCV build).

`render_video` gives the pixels; `write_davis2016`, `write_davis2017`, `write_youtube_vos`, `write_segtrack_v2`,
`write_fbms` write a tree; `synthetic_root(layout)` writes one once into a cache folder and returns its root.
The layouts are documented in the matching reader modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datamodules.image_io import write_rgb
from datamodules.vos_io import VOID_LABEL, write_label_png, write_scribbles

CATEGORIES = ("person", "dog", "car", "bird", "ball", "boat")


@dataclass(frozen=True)
class SyntheticVideo:
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    labels: list[np.ndarray]  # (H, W) uint8, 0 background, 1..num_objects (visible part of each object)
    num_objects: int


def _texture(rng: np.random.Generator, height: int, width: int, base_colour: np.ndarray) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 9.0)
    stripes = np.sin((columns * np.cos(angle) + rows * np.sin(angle)) * 2 * np.pi / period)
    checker = ((rows // 5 + columns // 5) % 2) * 2 - 1
    shade = 0.25 * stripes + 0.1 * checker + rng.normal(0, 0.04, (height, width))
    return np.clip(base_colour[None, None, :] * (1 + shade[..., None]), 0, 255).astype(np.uint8)


def _polygon_sprite(rng: np.random.Generator, size: int) -> np.ndarray:
    vertices = rng.integers(6, 10)
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = rng.uniform(0.55, 1.0, vertices) * (size / 2 - 1)
    centre = (size - 1) / 2
    points = np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], axis=1)
    sprite = np.zeros((size, size), np.uint8)
    cv2.fillPoly(sprite, [np.round(points).astype(np.int32)], 1)
    return sprite.astype(bool)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int, where: np.ndarray, value) -> None:
    height, width = canvas.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + patch.shape[0], height), min(left + patch.shape[1], width)
    if y0 >= y1 or x0 >= x1:
        return
    inside = where[y0 - top : y1 - top, x0 - left : x1 - left]
    target = canvas[y0:y1, x0:x1]
    if isinstance(value, np.ndarray):
        value = value[y0 - top : y1 - top, x0 - left : x1 - left][inside]
    target[inside] = value


def render_video(
    seed: int,
    num_frames: int = 24,
    height: int = 96,
    width: int = 128,
    num_objects: int = 2,
    late_entry_frame: int | None = None,
) -> SyntheticVideo:
    """Frames and visible-object labels of one synthetic video (see the module docstring).

    With `late_entry_frame`, the last object is absent before that frame. With two or more objects, object 1
    leaves through the right border around the first quarter of the video and re-enters.
    """
    if num_objects < 1 or num_frames < 2:
        raise ValueError(f"need at least 1 object and 2 frames, got {num_objects} and {num_frames}")
    rng = np.random.default_rng(seed)
    margin = max(height, width) // 4
    background = cv2.resize(
        rng.uniform(40, 215, (6, 8, 3)).astype(np.float32), (width + 2 * margin, height + 2 * margin),
        interpolation=cv2.INTER_CUBIC,
    )
    background = np.clip(background + rng.normal(0, 6, background.shape), 0, 255).astype(np.uint8)
    pan = rng.uniform(-1, 1, 2) * margin / num_frames

    hues = (rng.uniform(0, 180) + np.arange(num_objects) * 180 / num_objects) % 180
    sprites, textures, paths = [], [], []
    for index in range(num_objects):
        size = int(rng.uniform(0.3, 0.45) * min(height, width))
        sprites.append(_polygon_sprite(rng, size))
        hsv = np.uint8([[[hues[index], 200, 220]]])
        textures.append(_texture(rng, size, size, cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)))
        phase = rng.uniform(0, 2 * np.pi, 2)
        if index == 0 and num_objects >= 2:
            # Swing far enough to the right that the whole sprite is outside for a few frames, then return.
            centre_x, amplitude_x, phase[0] = width / 2, 1.15 * (width / 2 + size), 0.0
        else:
            centre_x, amplitude_x = rng.uniform(0.35, 0.65) * width, 0.25 * width
        centre_y, amplitude_y = rng.uniform(0.35, 0.65) * height, 0.15 * height
        paths.append((centre_x, amplitude_x, centre_y, amplitude_y, phase, size))

    frames, labels = [], []
    for t in range(num_frames):
        offset = np.round(margin + pan * t).astype(int)
        frame = background[offset[0] : offset[0] + height, offset[1] : offset[1] + width].copy()
        label = np.zeros((height, width), np.uint8)
        angle = 2 * np.pi * t / num_frames
        for index in range(num_objects):
            if late_entry_frame is not None and index == num_objects - 1 and t < late_entry_frame:
                continue
            centre_x, amplitude_x, centre_y, amplitude_y, phase, size = paths[index]
            x = centre_x + amplitude_x * np.sin(angle + phase[0])
            y = centre_y + amplitude_y * np.sin(angle + phase[1])
            top, left = int(round(y - size / 2)), int(round(x - size / 2))
            _paste(frame, sprites[index], top, left, sprites[index], textures[index])
            _paste(label, sprites[index], top, left, sprites[index], index + 1)
        frames.append(frame)
        labels.append(label)
    return SyntheticVideo(frames, labels, num_objects)


def _void_ring(labels: np.ndarray, object_id: int) -> np.ndarray:
    """`labels` with a 1-pixel void band just outside `object_id`, like DAVIS 2017's ambiguous-boundary void."""
    inside = (labels == object_id).astype(np.uint8)
    ring = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool) & ~inside.astype(bool)
    out = labels.copy()
    out[ring] = VOID_LABEL
    return out


def _scribble_for(labels: np.ndarray, object_ids: list[int], start_time: float) -> list[dict]:
    """One horizontal stroke per visible object through the middle row of its eroded mask, in davis-interactive
    format (coordinates as fractions of width and height)."""
    height, width = labels.shape
    strokes = []
    for object_id in object_ids:
        core = cv2.erode((labels == object_id).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        rows = np.nonzero(core.any(axis=1))[0]
        if rows.size == 0:
            continue
        row = int(rows[rows.size // 2])
        columns = np.nonzero(core[row])[0]
        path = [[float(c) / width, float(row) / height] for c in columns[:: max(1, columns.size // 20)]]
        strokes.append(
            {"path": path, "object_id": int(object_id), "start_time": start_time, "end_time": start_time + 1.0}
        )
        start_time += 1.5
    return strokes


def _sequence_videos(prefix: str, count: int, seed: int, **render_options) -> dict[str, SyntheticVideo]:
    videos = {}
    for index in range(count):
        options = {"num_objects": 1 + index % 3, **render_options}
        videos[f"{prefix}{index:02d}"] = render_video(seed * 1000 + index, **options)
    return videos


def write_davis2017(
    root: str | Path, num_train: int = 2, num_val: int = 2, num_frames: int = 20, height: int = 96,
    width: int = 128, seed: int = 0,
) -> Path:
    """A DAVIS 2017 tree (480p folders, palette annotations with void, unsupervised annotations, ImageSets/2017,
    one scribble file per sequence). Sequence i has 1 + i % 3 objects."""
    root = Path(root)
    videos = _sequence_videos("synth-", num_train + num_val, seed, num_frames=num_frames, height=height, width=width)
    names = list(videos)
    for name, video in videos.items():
        for t, (frame, labels) in enumerate(zip(video.frames, video.labels)):
            write_rgb(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame)
            annotated = _void_ring(labels, video.num_objects) if video.num_objects > 1 else labels
            write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", annotated)
            write_label_png(root / "Annotations_unsupervised" / "480p" / name / f"{t:05d}.png", labels)
        scribble_frame = num_frames // 2
        per_frame: list[list[dict]] = [[] for _ in range(num_frames)]
        per_frame[scribble_frame] = _scribble_for(
            video.labels[scribble_frame], list(range(1, video.num_objects + 1)), start_time=1.0
        )
        write_scribbles(root / "Scribbles" / name / "001.json", {"scribbles": per_frame, "sequence": name})
    image_sets = root / "ImageSets" / "2017"
    image_sets.mkdir(parents=True, exist_ok=True)
    (image_sets / "train.txt").write_text("".join(f"{n}\n" for n in names[:num_train]))
    (image_sets / "val.txt").write_text("".join(f"{n}\n" for n in names[num_train:]))
    return root


def write_davis2016(
    root: str | Path, num_train: int = 2, num_val: int = 1, num_frames: int = 20, height: int = 96,
    width: int = 128, seed: int = 0,
) -> Path:
    """A DAVIS 2016 tree: binary 0/255 greyscale annotations (the first annotation of the first sequence in mode
    LA, as ``bear/00077.png`` of the release), ImageSets/480p frame-pair lists, Annotations/db_info.yml."""
    root = Path(root)
    videos = _sequence_videos("synth-", num_train + num_val, seed, num_frames=num_frames, height=height, width=width)
    lines = {"train": [], "val": []}
    entries = []
    for position, (name, video) in enumerate(videos.items()):
        split = "train" if position < num_train else "val"
        for t, (frame, labels) in enumerate(zip(video.frames, video.labels)):
            write_rgb(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame)
            binary = np.where(labels > 0, 255, 0).astype(np.uint8)
            path = root / "Annotations" / "480p" / name / f"{t:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if position == 0 and t == 0:
                Image.fromarray(np.stack([binary, np.full_like(binary, 255)], axis=-1), mode="LA").save(path)
            else:
                Image.fromarray(binary, mode="L").save(path)
            lines[split].append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png\n")
        entries.append(
            {"attributes": ["OCC", "OV"] if video.num_objects > 1 else [], "name": name, "num_frames": num_frames,
             "set": "training" if split == "train" else "test", "eval_t": True}
        )
    image_sets = root / "ImageSets" / "480p"
    image_sets.mkdir(parents=True, exist_ok=True)
    for split, split_lines in lines.items():
        (image_sets / f"{split}.txt").write_text("".join(split_lines))
    (image_sets / "trainval.txt").write_text("".join(lines["train"] + lines["val"]))
    db_info = {"attributes": ["OCC", "OV"], "sets": ["training", "test"], "sequences": entries}
    (root / "Annotations" / "db_info.yml").write_text(json.dumps(db_info, indent=1))  # JSON is valid YAML
    return root


def write_youtube_vos(
    root: str | Path, split: str = "train", num_videos: int = 3, num_frames: int = 16, height: int = 96,
    width: int = 128, seed: int = 0, frame_step: int = 5, all_frames: bool = False,
) -> Path:
    """A YouTube-VOS 2018/2019 split: ``<split>/JPEGImages/<vid>/`` frames numbered every `frame_step`,
    ``<split>/Annotations/<vid>/`` palette PNGs (train: every frame; valid: only where an object first appears, holding
    just the objects that appear there), ``<split>/meta.json``; with `all_frames`, ``<split>_all_frames/JPEGImages``
    holds every frame as well. The last object of each video with two or more objects enters at a third of the way."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    root = Path(root)
    meta: dict = {"videos": {}}
    for index in range(num_videos):
        name = f"{seed:02d}synth{index:03d}"
        num_objects = 2 + index % 2
        video = render_video(
            seed * 1000 + index, num_frames=num_frames, height=height, width=width, num_objects=num_objects,
            late_entry_frame=num_frames // 3,
        )
        stems = [f"{t * frame_step:05d}" for t in range(num_frames)]
        for t, frame in enumerate(video.frames):
            write_rgb(root / split / "JPEGImages" / name / f"{stems[t]}.jpg", frame)
            if all_frames:
                # The sparse frames are every `frame_step`-th of the full-rate video; fill the rest with copies.
                for k in range(frame_step if t < num_frames - 1 else 1):
                    write_rgb(root / f"{split}_all_frames" / "JPEGImages" / name / f"{t * frame_step + k:05d}.jpg",
                                frame)
        objects = {}
        first_seen = {}
        for object_id in range(1, num_objects + 1):
            present = [t for t, labels in enumerate(video.labels) if (labels == object_id).any()]
            first_seen[object_id] = present[0]
            frames = present if split == "train" else list(range(present[0], num_frames))
            objects[str(object_id)] = {
                "category": CATEGORIES[(index + object_id) % len(CATEGORIES)], "frames": [stems[t] for t in frames]
            }
        meta["videos"][name] = {"objects": objects}
        for t, labels in enumerate(video.labels):
            if split == "train":
                write_label_png(root / split / "Annotations" / name / f"{stems[t]}.png", labels)
            else:
                entering = [object_id for object_id, first in first_seen.items() if first == t]
                if entering:
                    sparse = np.where(np.isin(labels, entering), labels, 0).astype(np.uint8)
                    write_label_png(root / split / "Annotations" / name / f"{stems[t]}.png", sparse)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / split / "meta.json").write_text(json.dumps(meta, indent=1))
    return root


def write_segtrack_v2(
    root: str | Path, num_sequences: int = 3, num_frames: int = 16, height: int = 96, width: int = 128, seed: int = 0
) -> Path:
    """A SegTrack v2 tree: ``JPEGImages/<seq>/<seq>_NNNNN.png``, binary ground truth in ``GroundTruth/<seq>/`` for
    single-object sequences and ``GroundTruth/<seq>/<k>/`` per object otherwise (the second sequence in ``.bmp``, as
    the release mixes extensions), ``ImageSets/all.txt`` (``*<seq>`` lines) and ``ImageSets/<seq>.txt`` (the folder,
    then one frame name per line)."""
    root = Path(root)
    videos = _sequence_videos("synthseq", num_sequences, seed, num_frames=num_frames, height=height, width=width)
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)
    for position, (name, video) in enumerate(videos.items()):
        stems = [f"{name}_{t:05d}" for t in range(num_frames)]
        extension = ".bmp" if position == 1 else ".png"
        for t, (frame, labels) in enumerate(zip(video.frames, video.labels)):
            write_rgb(root / "JPEGImages" / name / f"{stems[t]}.png", frame)
            if video.num_objects == 1:
                folders = {1: root / "GroundTruth" / name}
            else:
                folders = {k: root / "GroundTruth" / name / str(k) for k in range(1, video.num_objects + 1)}
            for object_id, folder in folders.items():
                folder.mkdir(parents=True, exist_ok=True)
                binary = np.where(labels == object_id, 255, 0).astype(np.uint8)
                cv2.imwrite(str(folder / f"{stems[t]}{extension}"), binary)
        (root / "ImageSets" / f"{name}.txt").write_text(f"{name}/\n" + "".join(f"{s}\n" for s in stems))
    (root / "ImageSets" / "all.txt").write_text("".join(f"*{name}\n" for name in videos))
    return root


FBMS_GREY_LEVELS = (255, 128, 64, 192, 32)


def write_fbms(
    root: str | Path, split: str = "Trainingset", num_sequences: int = 2, num_frames: int = 45, height: int = 96,
    width: int = 128, seed: int = 0, label_step: int = 20, prefix: str = "synthcars",
) -> Path:
    """An FBMS-59 split: ``<split>/<seq>/<seq>_NN.jpg`` (1-based, two digits, three from 100 frames on) and
    ``<split>/<seq>/GroundTruth/``: one grey level per object every `label_step` frames (``<seq>_NN_gt.pgm``; the
    second sequence as ``.png``) and the definition file ``<seq>Def.dat``."""
    if split not in ("Trainingset", "Testset"):
        raise ValueError(f"split must be Trainingset or Testset, got {split!r}")
    root = Path(root)
    videos = _sequence_videos(prefix, num_sequences, seed, num_frames=num_frames, height=height, width=width)
    digits = 3 if num_frames >= 100 else 2
    for position, (name, video) in enumerate(videos.items()):
        folder = root / split / name
        for t, frame in enumerate(video.frames):
            write_rgb(folder / f"{name}_{t + 1:0{digits}d}.jpg", frame)
        levels = (0,) + FBMS_GREY_LEVELS[: video.num_objects]
        labelled = list(range(0, num_frames, label_step))
        extension = ".png" if position == 1 else ".pgm"
        definition = ["Ground truth definition file; do not change!", "", "Total number of regions:",
                      str(len(levels))]
        for level in levels:
            definition += ["", str(level)]
        definition += ["", "Confusion penality matrix"]
        definition += [" ".join("0" if i == j else "1" for j in range(len(levels))) for i in range(len(levels))]
        definition += ["", "Total number of frames in this shot:", str(num_frames),
                       "Total number of labeled frames for this shot:", str(len(labelled))]
        for t in labelled:
            file_name = f"{name}_{t + 1:0{digits}d}_gt{extension}"
            grey = np.asarray(levels, np.uint8)[video.labels[t]]
            (folder / "GroundTruth").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / "GroundTruth" / file_name), grey)
            definition += ["Frame number:", str(t), "File name:", file_name, "Input file name:",
                           f"{name}_{t + 1:0{digits}d}.jpg"]
        (folder / "GroundTruth" / f"{name}Def.dat").write_text("\n".join(definition) + "\n")
    return root


WRITERS = {
    "davis2016": write_davis2016,
    "davis2017": write_davis2017,
    "youtube_vos": write_youtube_vos,
    "segtrack_v2": write_segtrack_v2,
    "fbms": write_fbms,
}


def synthetic_root(layout: str = "davis2017", cache_dir: str | Path | None = None, **options) -> Path:
    """Root of a synthetic tree of `layout` (a `WRITERS` key), written once into a folder keyed by the options.

    The cache lives in `cache_dir`, else ``$ZOO_CACHE/synthetic_vos``, else the system temp folder. A tree is
    written beside its final name and renamed into place, so concurrent callers never see half a tree.
    """
    if layout not in WRITERS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {sorted(WRITERS)}")
    return synthetic_tree(layout, WRITERS[layout], cache_dir, **options)


def synthetic_tree(layout: str, writer, cache_dir: str | Path | None = None, **options) -> Path:
    """`synthetic_root` for any ``writer(root, **options)`` (the writers of other modules' layouts)."""
    base = Path(cache_dir or Path(os.environ.get("ZOO_CACHE", tempfile.gettempdir())) / "synthetic_vos")
    key = hashlib.sha256(json.dumps([layout, sorted(options.items())], default=str).encode()).hexdigest()[:12]
    final = base / f"{layout}-{key}"
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{layout}-", dir=base))
    try:
        writer(staging, **options)
        staging.rename(final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
