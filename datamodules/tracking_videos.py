"""Tracking videos with SEVERAL objects per frame, for training and validating the DRLT single-object tracker.

Why: a tracker trained on videos with one salient object learns to find "the object", not "the object it was given".
Here most frames hold several annotated objects, and an episode tracks a target drawn at random among them, so the
first-frame box s_1 is the only way to know which one to follow. Every video is a `TrackedVideo`: frame paths and,
per target id, one OTB box per frame, (x, y, w, h) float64 pixels with a 1-based top-left corner (the box covers
[x-1, x-1+w] in 0-based continuous coordinates); a row of NaN where the target is absent or too little of it shows.

Sources:
- ``otb`` (`otb_videos`): the OTB-2013/100 layout read by `datamodules.otb`; Name.1 / Name.2 targets of one video
  (Jogging, Skating2, Human4) become one video "otb/Name" with targets "1", "2"; other videos have one target "1".
  Ground-truth rows with a non-positive width or height are NaN rows here.
- ``davis2016`` (`davis2016_videos`): real videos, one object, the tight box of the binary mask on every frame.
- ``davis2017`` / ``coco128`` / ``cvppp`` (`camera_trajectory_videos`): still images with instance masks (several
  objects each) filmed by a virtual camera that pans and zooms smoothly over the image; every instance's box follows
  from its warped mask. Rendered once into the OTB layout under an output folder and re-used while its parameters
  match (meta.json).
- ``synthetic`` (`synthetic_multi_target_videos`): `datamodules.synthetic_otb.write_synthetic_multi_target_otb`,
  several differently textured targets crossing a cluttered scene.

`realdata_tracking_sources` gathers the real ones under ``../shared/realdata``. DAVIS 2017 contributes its first
annotated frame per sequence, except the sequences that are DAVIS 2016 sequences (bear, blackswan, tennis...), so that
the DAVIS 2016 val sequences (`datamodules.instance_frames.davis2016_val_sequences`) stay held out.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from datamodules.image_io import write_rgb
from datamodules.otb import _split_name, discover_sequences, load_otb, read_groundtruth
from datamodules.vos_io import boxes_from_mask

if TYPE_CHECKING:  # datamodules.instance_frames imports torch and Lightning: loaded only where frames are listed
    from datamodules.instance_frames import InstanceFrame

SOURCES = ("otb", "davis2016", "davis2017", "coco128", "cvppp", "synthetic")
REALDATA_SOURCES = ("davis2016", "otb", "coco128", "cvppp", "davis2017")
MIN_VISIBLE_PIXELS = 25  # fewer visible mask pixels than this in a rendered frame: the box is a NaN row
RENDER_VERSION = 1  # bump when the camera rendering changes, so that cached videos are rendered again
FRAMES_PER_KEY = 40  # camera keyframes scale with the video's length (see camera_path)
JPEG_QUALITY = 90

# The 50 sequences of DAVIS 2016 (Annotations/db_info.yml of the release). DAVIS 2017 re-uses them; its copies are left
# out of the camera-trajectory videos so that the DAVIS 2016 val sequences stay held out.
DAVIS2016_SEQUENCES = frozenset((
    "bear", "blackswan", "bmx-bumps", "bmx-trees", "boat", "breakdance", "breakdance-flare", "bus", "camel",
    "car-roundabout", "car-shadow", "car-turn", "cows", "dance-jump", "dance-twirl", "dog", "dog-agility",
    "drift-chicane", "drift-straight", "drift-turn", "elephant", "flamingo", "goat", "hike", "hockey",
    "horsejump-high", "horsejump-low", "kite-surf", "kite-walk", "libby", "lucia", "mallard-fly", "mallard-water",
    "motocross-bumps", "motocross-jump", "motorbike", "paragliding", "paragliding-launch", "parkour", "rhino",
    "rollerblade", "scooter-black", "scooter-gray", "soapbox", "soccerball", "stroller", "surf", "swing", "tennis",
    "train",
))

Progress = Callable[..., Iterable]


@dataclass
class TrackedVideo:
    name: str  # unique, e.g. "otb/Crossing", "davis2016/bear", "coco128/000000000009", "synthetic/SynthMulti01"
    source: str  # one of SOURCES
    frame_paths: list[Path]
    image_size: tuple[int, int]  # (H, W), the same for every frame
    boxes: dict[str, np.ndarray]  # target id -> (N, 4) float64 OTB boxes, a NaN row where the target is not visible

    def __post_init__(self):
        self.frame_paths = [Path(path) for path in self.frame_paths]
        if not self.frame_paths:
            raise ValueError(f"tracked video {self.name!r} has no frames")
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"tracked video {self.name!r}: image_size must be (H, W) > 0, got {self.image_size}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if not self.boxes:
            raise ValueError(f"tracked video {self.name!r} has no target: give at least one target's boxes")
        checked = {}
        for target, boxes in self.boxes.items():
            boxes = np.asarray(boxes, dtype=np.float64)
            if boxes.ndim != 2 or boxes.shape[1] != 4:
                raise ValueError(f"tracked video {self.name!r}, target {target!r}: boxes must be (N, 4) x, y, w, h, "
                                 f"got shape {boxes.shape}")
            if len(boxes) != len(self.frame_paths):
                raise ValueError(f"tracked video {self.name!r}, target {target!r}: {len(boxes)} box rows for "
                                 f"{len(self.frame_paths)} frames; give one row per frame (NaN where not visible)")
            if np.isinf(boxes).any():
                raise ValueError(f"tracked video {self.name!r}, target {target!r}: infinite box values; write NaN "
                                 "rows for frames without the target")
            checked[str(target)] = boxes
        self.boxes = checked

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def targets(self) -> list[str]:
        return list(self.boxes)


def first_visible_frames(video: TrackedVideo, target: str) -> np.ndarray:
    """Indices of the frames where `target` has a box (finite row): the frames an episode may start from."""
    if target not in video.boxes:
        raise KeyError(f"tracked video {video.name!r} has no target {target!r}; its targets are {video.targets}")
    return np.flatnonzero(np.isfinite(video.boxes[target]).all(axis=1))


def _visible_or_nan(boxes: np.ndarray) -> np.ndarray:
    boxes = np.array(boxes, dtype=np.float64)
    boxes[~((boxes[:, 2] > 0) & (boxes[:, 3] > 0))] = np.nan  # NaN rows stay NaN (comparisons are False)
    return boxes


# --- OTB ----------------------------------------------------------------------------------------------------------


def otb_videos(root: str | Path, names: str | Sequence[str] | None = None, *, source: str = "otb") -> list[TrackedVideo]:
    """The OTB videos under `root` (every one when `names` is None), each target of a multi-target video ("Jogging.1",
    "Jogging.2") grouped into one video "otb/Jogging" with targets "1", "2"; single-target videos get target "1".

    `names` may list video names ("Jogging") or sequence names ("Jogging.2", that target only)."""
    root = Path(root)
    available = discover_sequences(root)
    if names is not None:
        wanted = [names] if isinstance(names, str) else list(names)
        known = set(available) | {_split_name(name)[0] for name in available}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise FileNotFoundError(
                f"OTB root {root} has no video {', '.join(map(repr, unknown))}; it has "
                f"{', '.join(sorted({_split_name(name)[0] for name in available})) or 'none'}"
            )
        wanted_set = set(wanted)
        available = [name for name in available if name in wanted_set or _split_name(name)[0] in wanted_set]
    grouped: dict[str, list] = {}
    for sequence in load_otb(root, available):
        video, file_name = _split_name(sequence.name)
        match = re.fullmatch(r"groundtruth_rect\.(\d+)\.txt", file_name)
        grouped.setdefault(video, []).append((match[1] if match else "1", sequence))
    videos = []
    for video, targets in grouped.items():
        first = targets[0][1]
        for _, sequence in targets[1:]:
            if sequence.frame_paths != first.frame_paths:
                raise ValueError(
                    f"OTB video {root / video}: targets {first.name} and {sequence.name} cover different frames "
                    f"({len(first)} and {len(sequence)}); their ground-truth files must have one row per frame"
                )
        videos.append(TrackedVideo(
            name=f"{source}/{video}", source=source, frame_paths=list(first.frame_paths),
            image_size=first.image_size, boxes={target: _visible_or_nan(seq.boxes) for target, seq in targets},
        ))
    return videos


# --- DAVIS 2016 ---------------------------------------------------------------------------------------------------


def _mask_box(labels: np.ndarray) -> np.ndarray:
    """Tight OTB box (1-based x, y, w, h) of the non-zero pixels of `labels`; a NaN row when there are none."""
    found = boxes_from_mask((labels > 0).astype(np.uint8), [1])
    if 1 not in found:
        return np.full(4, np.nan)
    x0, y0, x1, y1 = found[1]
    return np.array([x0 + 1, y0 + 1, x1 - x0, y1 - y0], np.float64)


def davis2016_videos(root: str | Path, sequences: str | Sequence[str] | None = None) -> list[TrackedVideo]:
    """DAVIS 2016 480p videos read by `datamodules.davis.DAVIS` (every sequence when `sequences` is None; a split
    name "train" / "val" / "trainval" reads ImageSets/480p/<split>.txt), one target "1": the tight box of each
    frame's mask; an empty mask gives a NaN row. The reader's errors name the missing or mismatched file."""
    from datamodules.davis import DAVIS

    split = sequences if isinstance(sequences, str) else None
    names = None if sequences is None or isinstance(sequences, str) else list(sequences)
    collection = DAVIS(root, year=2016, split=split, sequences=names)
    videos = []
    for name in collection.names:
        sequence = collection[name]
        if not sequence.frame_paths or not all(path.is_file() for path in sequence.frame_paths):
            raise FileNotFoundError(f"DAVIS 2016 sequence {name!r}: its frames under "
                                    f"{Path(root) / 'JPEGImages' / '480p' / name} are missing")
        boxes = np.stack([_mask_box(sequence.require_mask(index)) for index in range(len(sequence))])
        videos.append(TrackedVideo(name=f"davis2016/{name}", source="davis2016", frame_paths=sequence.frame_paths,
                                   image_size=sequence.frame_size(0), boxes={"1": boxes}))
    return videos


# --- camera trajectories over still images ------------------------------------------------------------------------


def _video_rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _ease(u: np.ndarray) -> np.ndarray:
    return (1 - np.cos(np.pi * u)) / 2


def camera_path(rng: np.random.Generator, image_size: tuple[int, int], output_size: tuple[int, int],
                num_frames: int) -> np.ndarray:
    """(num_frames, 3) windows (centre x, centre y, width) in continuous image coordinates (0 = left edge), of the
    output's aspect: 2-3 random keyframes, one more per further `FRAMES_PER_KEY` frames, with cosine-eased
    interpolation, each window 45-100 % of the largest one that fits in the image, a mild zoom between keyframes, a
    margin of 5 % past the image, and a jitter of at most 1 % of the window per frame. Longer videos get more
    keyframes rather than slower pans, so that the camera moves about as fast per frame whatever the length (a
    40-frame path is drawn exactly as before the keyframes scaled)."""
    height, width = image_size
    aspect = output_size[1] / output_size[0]
    full_width = min(width, height * aspect)  # widest window of the output's aspect that fits in the image
    num_keys = int(rng.integers(2, 4)) + max(0, num_frames // FRAMES_PER_KEY - 1)
    base = rng.uniform(0.45, 1.0)
    scales = np.clip(base * rng.uniform(0.85, 1.15, num_keys), 0.45, 1.0)
    scales[0] = base

    def position(scale: float) -> np.ndarray:
        window_w = full_width * scale
        window_h = window_w / aspect
        low = np.array([window_w / 2 - 0.05 * window_w, window_h / 2 - 0.05 * window_h])
        high = np.array([width - window_w / 2 + 0.05 * window_w, height - window_h / 2 + 0.05 * window_h])
        return rng.uniform(low, high)

    keys = [position(scales[0])]
    for index in range(1, num_keys):
        candidates = [position(scales[index]) for _ in range(4)]
        if index == num_keys - 1:  # the end point: the farthest of a few draws, so that the camera pans
            keys.append(max(candidates, key=lambda point: float(np.linalg.norm((point - keys[0]) / full_width))))
        else:
            keys.append(candidates[0])
    key_times = np.linspace(0, num_frames - 1, num_keys)
    if num_keys == 3:
        key_times[1] = rng.uniform(0.3, 0.7) * (num_frames - 1)
    elif num_keys > 3:  # interior keyframes moved by up to 40 % of their spacing, so the pans differ in length
        spacing = (num_frames - 1) / (num_keys - 1)
        key_times[1:-1] += rng.uniform(-0.4, 0.4, num_keys - 2) * spacing
    log_scales = np.log(scales)
    path = np.empty((num_frames, 3))
    for t in range(num_frames):
        k = min(int(np.searchsorted(key_times, t, side="right")) - 1, num_keys - 2)
        span = max(key_times[k + 1] - key_times[k], 1e-9)
        e = float(_ease(np.clip((t - key_times[k]) / span, 0, 1)))
        centre = keys[k] + e * (keys[k + 1] - keys[k])
        scale = math.exp(log_scales[k] + e * (log_scales[k + 1] - log_scales[k]))
        path[t] = (centre[0], centre[1], full_width * scale)
    jitter = rng.uniform(-0.01, 0.01, (num_frames, 2))
    path[:, 0] += jitter[:, 0] * path[:, 2]
    path[:, 1] += jitter[:, 1] * path[:, 2] / aspect
    return path


def _window_matrix(window: np.ndarray, output_size: tuple[int, int], image_scale=(1.0, 1.0)) -> np.ndarray:
    """cv2 affine matrix taking the window (cx, cy, w) of an image resized by `image_scale` (sx, sy) to the output."""
    centre_x, centre_y, window_w = window
    zoom = output_size[1] / window_w  # output pixels per image pixel, the same on both axes
    left = centre_x - window_w / 2
    top = centre_y - window_w * output_size[0] / output_size[1] / 2
    zx, zy = zoom / image_scale[0], zoom / image_scale[1]  # output pixels per pixel of the resized image
    # Pixel i of the resized image is centred on i + 0.5, output pixel u on u + 0.5: u + 0.5 = zx (i + 0.5 - left sx).
    return np.array([[zx, 0, zx * (0.5 - left * image_scale[0]) - 0.5],
                     [0, zy, zy * (0.5 - top * image_scale[1]) - 0.5]])


def _render_frame(rgb: np.ndarray, window: np.ndarray, output_size: tuple[int, int], border) -> np.ndarray:
    height, width = rgb.shape[:2]
    zoom = output_size[1] / window[2]
    source, scale = rgb, (1.0, 1.0)
    if zoom < 1:  # shrink with INTER_AREA first (anti-aliasing), then warp with a zoom near 1
        size = (max(1, round(width * zoom)), max(1, round(height * zoom)))
        source = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        scale = (size[0] / width, size[1] / height)
    return cv2.warpAffine(source, _window_matrix(window, output_size, scale), (output_size[1], output_size[0]),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _warp_mask(mask: np.ndarray, window: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(mask.astype(np.uint8), _window_matrix(window, output_size), (output_size[1], output_size[0]),
                          flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0


def _visible_box(mask: np.ndarray) -> np.ndarray:
    return _mask_box(mask) if int(np.count_nonzero(mask)) >= MIN_VISIBLE_PIXELS else np.full(4, np.nan)


def _select_targets(masks: np.ndarray, window: np.ndarray, output_size: tuple[int, int], min_box_pixels: int,
                    max_box_fraction: float, max_targets: int) -> list[int]:
    """Indices of the instances that make targets on frame 0 (largest box first)."""
    frame_area = output_size[0] * output_size[1]
    candidates = []
    for index, mask in enumerate(masks):
        box = _visible_box(_warp_mask(mask, window, output_size))
        if np.isfinite(box).all() and min(box[2], box[3]) >= min_box_pixels and \
                box[2] * box[3] <= max_box_fraction * frame_area:
            candidates.append((-box[2] * box[3], index))
    return [index for _, index in sorted(candidates)[:max_targets]]


def _write_boxes(path: Path, boxes: np.ndarray) -> None:
    lines = ["NaN,NaN,NaN,NaN" if not np.isfinite(row).all() else ",".join(str(int(v)) for v in row)
             for row in boxes]
    path.write_text("\n".join(lines) + "\n")


def _frame_names(num_frames: int) -> list[str]:
    return [f"{number:04d}.jpg" for number in range(1, num_frames + 1)]


def _cached_video(folder: Path, meta: dict, name: str, source: str) -> TrackedVideo | None | bool:
    """The video of a complete folder rendered with `meta`: a TrackedVideo, None for an image rendered without any
    target, False when the folder must be rendered (again)."""
    meta_path = folder / "meta.json"
    try:
        stored = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    num_targets = stored.pop("num_targets", None)
    if stored != meta or not isinstance(num_targets, int):
        return False
    if num_targets == 0:
        return None
    frame_paths = [folder / "img" / file_name for file_name in _frame_names(meta["num_frames"])]
    if not all(path.is_file() for path in frame_paths):
        return False
    boxes = {}
    for k in range(1, num_targets + 1):
        try:
            boxes[str(k)] = read_groundtruth(folder / f"groundtruth_rect.{k}.txt")
        except (OSError, ValueError):
            return False
        if len(boxes[str(k)]) != len(frame_paths):
            return False
    return TrackedVideo(name=name, source=source, frame_paths=frame_paths, image_size=tuple(meta["output_size"]),
                        boxes=boxes)


def _clear(folder: Path) -> None:
    """Remove what a previous rendering wrote (meta.json first, so a half-cleared folder never counts as complete)."""
    (folder / "meta.json").unlink(missing_ok=True)
    for path in folder.glob("groundtruth_rect*.txt"):
        path.unlink()
    for path in (folder / "img").glob("*.jpg"):
        path.unlink()


def _default_progress(iterable, desc: str = "", unit: str = "it"):
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, unit=unit, disable=not sys.stderr.isatty())


def camera_trajectory_videos(
    frames: list[InstanceFrame],
    out_dir: str | Path,
    *,
    num_frames: int = 40,
    output_size: tuple[int, int] = (240, 320),
    seed: int = 0,
    min_box_pixels: int = 12,
    max_box_fraction: float = 0.6,
    max_targets: int = 8,
    progress: Progress | None = None,
) -> list[TrackedVideo]:
    """One video per still image: what a camera moving smoothly over it would film (see `camera_path`), the image
    warped per frame to `output_size` (H, W), and each instance's box the tight box of its mask warped the same way
    (a NaN row under `MIN_VISIBLE_PIXELS` visible pixels). Targets are the instances whose frame-0 box has both sides
    >= `min_box_pixels` and an area <= `max_box_fraction` of the frame, the `max_targets` largest; an image without
    any gives no video.

    Written to ``out_dir/<source>_<group>/`` in the OTB layout (img/%04d.jpg, groundtruth_rect.<k>.txt, k = 1..K)
    plus meta.json (written last); a folder whose meta.json matches the parameters is re-used, any other is rendered
    again. The camera of an image depends only on (seed, its name): not on the order or subset of `frames`.
    `progress`: a tqdm-like wrapper called as ``progress(iterable, desc=..., unit=...)``."""
    out_dir = Path(out_dir)
    output_size = (int(output_size[0]), int(output_size[1]))
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2, got {num_frames}")
    seen: dict[str, InstanceFrame] = {}
    for frame in frames:
        name = f"{frame.source}/{frame.group}"
        if name in seen and seen[name] != frame:
            raise ValueError(f"two frames make the video {name!r} ({seen[name].image} and {frame.image}); pass one "
                             "frame per sequence (e.g. its first annotated frame)")
        if "/" in frame.group or "\\" in frame.group:
            raise ValueError(f"{frame.image}: group {frame.group!r} cannot name a folder")
        seen[name] = frame
    parameters = dict(version=RENDER_VERSION, num_frames=int(num_frames), output_size=list(output_size),
                      seed=int(seed), min_box_pixels=int(min_box_pixels), max_box_fraction=float(max_box_fraction),
                      max_targets=int(max_targets), min_visible_pixels=MIN_VISIBLE_PIXELS, jpeg_quality=JPEG_QUALITY)
    wrap = progress or _default_progress
    videos = []
    for name, frame in wrap(list(seen.items()), desc="camera videos", unit="video"):
        folder = out_dir / f"{frame.source}_{frame.group}"
        meta = dict(parameters, source=frame.source, group=frame.group, image=frame.image.name,
                    image_bytes=frame.image.stat().st_size, labels=frame.labels.name,
                    labels_bytes=frame.labels.stat().st_size)
        cached = _cached_video(folder, meta, name, frame.source)
        if cached is None:
            continue
        if cached is False:
            cached = _render_camera_video(frame, folder, meta, name)
        if cached is not None:
            videos.append(cached)
    return videos


def _render_camera_video(frame: InstanceFrame, folder: Path, meta: dict, name: str) -> TrackedVideo | None:
    rgb, masks = frame.read()
    if masks.shape[1:] != rgb.shape[:2]:
        raise ValueError(f"{frame.labels}: masks are {masks.shape[1:]} but image {frame.image} is {rgb.shape[:2]} "
                         "(H, W); the label file must have the image's size")
    output_size = tuple(meta["output_size"])
    rng = _video_rng(meta["seed"], name)
    chosen: list[int] = []
    for _ in range(4):  # a camera whose first frame shows no usable instance is drawn again
        path = camera_path(rng, rgb.shape[:2], output_size, meta["num_frames"])
        chosen = _select_targets(masks, path[0], output_size, meta["min_box_pixels"], meta["max_box_fraction"],
                                 meta["max_targets"])
        if chosen:
            break
    folder.mkdir(parents=True, exist_ok=True)
    _clear(folder)
    if not chosen:
        (folder / "meta.json").write_text(json.dumps(dict(meta, num_targets=0), indent=1))
        return None
    border = tuple(float(c) for c in rgb.reshape(-1, 3).mean(axis=0))
    boxes = np.empty((len(chosen), meta["num_frames"], 4))
    frame_paths = []
    for t, file_name in enumerate(_frame_names(meta["num_frames"])):
        frame_paths.append(write_rgb(folder / "img" / file_name, _render_frame(rgb, path[t], output_size, border),
                                     quality=JPEG_QUALITY))
        for k, index in enumerate(chosen):
            boxes[k, t] = _visible_box(_warp_mask(masks[index], path[t], output_size))
    for k in range(len(chosen)):
        _write_boxes(folder / f"groundtruth_rect.{k + 1}.txt", boxes[k])
    (folder / "meta.json").write_text(json.dumps(dict(meta, num_targets=len(chosen)), indent=1))
    return TrackedVideo(name=name, source=frame.source, frame_paths=frame_paths, image_size=output_size,
                        boxes={str(k + 1): boxes[k] for k in range(len(chosen))})


# --- synthetic ----------------------------------------------------------------------------------------------------


def synthetic_multi_target_videos(out_dir: str | Path, *, num_videos: int = 8, num_frames: int = 60,
                                  targets_per_video: int = 3, seed: int = 0) -> list[TrackedVideo]:
    """`write_synthetic_multi_target_otb` videos under `out_dir` (written unless a complete set with these parameters
    is there, see ``synthetic_multi.json``), read back as "synthetic/SynthMultiNN" videos."""
    from datamodules.synthetic_otb import write_synthetic_multi_target_otb

    out_dir = Path(out_dir)
    marker = out_dir / "synthetic_multi.json"
    meta = dict(num_videos=int(num_videos), num_frames=int(num_frames), targets_per_video=int(targets_per_video),
                seed=int(seed))
    names = [f"SynthMulti{index + 1:02d}" for index in range(num_videos)]
    try:
        complete = json.loads(marker.read_text()) == meta and all(
            (out_dir / name / "img" / _frame_names(num_frames)[-1]).is_file() for name in names)
    except (OSError, ValueError):
        complete = False
    if not complete:
        marker.unlink(missing_ok=True)
        for name in names:
            _clear(out_dir / name)
        written = write_synthetic_multi_target_otb(out_dir, num_videos, num_frames, targets_per_video, seed=seed)
        assert written == names, (written, names)
        marker.write_text(json.dumps(meta))
    return otb_videos(out_dir, names, source="synthetic")


# --- everything under ../shared/realdata --------------------------------------------------------------------------


def realdata_tracking_sources(
    realdata: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    num_frames: int = 40,
    *,
    sources: Sequence[str] = REALDATA_SOURCES,
    frames: list[InstanceFrame] | None = None,
    output_size: tuple[int, int] = (240, 320),
    progress: Progress | None = None,
) -> dict[str, list[TrackedVideo]]:
    """{source: videos} for the real sources under `realdata` (see the module docstring); a source whose folder is
    absent gives an empty list. `sources` limits what is built; `frames` (default `real_frames(realdata)`) limits the
    still images that camera videos are rendered from (for quick checks); they are rendered under `out_dir`."""
    realdata = Path(realdata)
    unknown = [source for source in sources if source not in REALDATA_SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose among {', '.join(REALDATA_SOURCES)}")
    result: dict[str, list[TrackedVideo]] = {}
    if "davis2016" in sources:
        root = realdata / "DAVIS2016"
        result["davis2016"] = davis2016_videos(root) if root.is_dir() else []
    if "otb" in sources:
        root = realdata / "OTB"
        result["otb"] = otb_videos(root) if root.is_dir() else []
    still_sources = [source for source in ("coco128", "cvppp", "davis2017") if source in sources]
    if still_sources:
        if frames is None:
            from datamodules.instance_frames import real_frames

            frames = real_frames(realdata)
        for source in still_sources:
            chosen = [frame for frame in frames if frame.source == source]
            if source == "davis2017":
                first: dict[str, InstanceFrame] = {}
                for frame in sorted(chosen, key=lambda f: (f.group, f.labels.name)):
                    if frame.group not in DAVIS2016_SEQUENCES:
                        first.setdefault(frame.group, frame)
                chosen = list(first.values())
            result[source] = camera_trajectory_videos(chosen, out_dir, num_frames=num_frames,
                                                      output_size=output_size, seed=seed, progress=progress)
    return {source: result[source] for source in REALDATA_SOURCES if source in result}
