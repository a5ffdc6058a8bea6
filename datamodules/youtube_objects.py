"""YouTube-Objects with the pixel ground truth of Jain & Grauman (ECCV 2014), as VOS papers evaluate on it (J only).

The ground-truth archive (``youtube_masks``) covers the 10 YouTube-Objects categories; each shot of a video is a
sequence with a binary foreground mask about every 10th frame (126 shots). Layout::

    <root>/<category>/data/<video>/shots/<shot>/labels/00001.jpg 00011.jpg ...
                                                images/00001.png 00011.png ...        (a) as distributed
                                                images/frame0001.jpg frame0002.jpg ... (b) "youtube_masks_full"

``<category>`` is one of `CATEGORIES`, ``<video>`` four digits (``0001``), ``<shot>`` three (``001``). A label file
is a greyscale JPEG, 0 background and 255 foreground with compression noise in between; its five-digit name is the
number of the frame it annotates. The layout variants differ only in where the frames are:

(a) ``images/<NNNNN>.png`` holds just the annotated frames, under the names of their labels (the archive as OnAVOS
    and TransferSeg read it). A sequence is then the annotated frames alone, every one annotated.
(b) ``images/frame<NNNN>.jpg`` holds every frame of the shot, numbered like the labels: label ``00011.jpg`` is frame
    ``frame0011.jpg`` (OnAVOS' ``youtube_masks_full``). The frames may also lie in a separate tree of the same shape
    without the ``images`` level, ``<frames_root>/<category>/data/<video>/shots/<shot>/frame<NNNN>.jpg`` (the
    YouTube-Objects v1.0 frames, as clockwork-fcn reads them): pass ``frames_root``. Full frames can be larger than
    the labels (OnAVOS resizes them to the label size; a commented-out check there expects twice the size): resize
    them first, since a frame of another size than its label is an error naming both files.

Where the layout comes from (public code read for this reader; nothing of it is copied):

* shelhamer/clockwork-fcn ``datasets/youtube.py``: ``youtube_masks/<class>/data/<vid>/shots/<shot>/labels/*.jpg``,
  label ``{idx:05d}.jpg`` of frame ``v1/<class>/data/<vid>/shots/<shot>/frame{idx:04d}.jpg``, the 10 classes,
  foreground = grey value above 15 (a JPEG threshold).
* wenz116/TransferSeg ``datasets/youtube.py``: frames read as ``youtube_masks/.../shots/<shot>/images/{idx:05d}.png``
  (variant a); it skips ``motorbike/0007`` and ``cow/0019``.
* MSiam/motion_adaptation (an OnAVOS fork) ``datasets/YoutubeObjects/YoutubeObjects_oneshot.py`` (variant a: images
  ``*.png`` zipped with labels of the same name ``.jpg``) and ``YoutubeObjectsFull_oneshot.py`` (variant b:
  ``images/frame%04d.jpg`` for every number from the first to the last label, the frames resized to the label size,
  labels read as value / 255). Both drop ``motorbike/data/0007/shots/001`` and ``cow/data/0019/shots/001``, "which
  only have a single annotated frame". An OnAVOS evaluation script (found by code search, without its repository
  path) globs ``*/data/*/*/*/labels/``, scores every label but each shot's first (the given one) and compares
  predictions saved under the label names; its commented-out checks look for labels starting at ``00001.jpg`` and
  spaced by 10, which this reader assumes neither of.

What this reader does with it:

* Sequences are named ``<category>/<video>/<shot>`` (e.g. ``aeroplane/0001/001``); ``metadata`` has ``category``,
  ``video``, ``shot``, ``layout`` ("annotated-only" for a, "full" for b), ``frame_numbers`` (the file numbers of the
  sequence's frames), ``tag`` (OnAVOS' ``<category>_<video>``) and how many frames were dropped before the first and
  after the last label. `frame_names` are the five-digit label names (``00011``) in both variants, so predictions
  saved under them line up with the label files.
* In variant b a sequence runs from the first to the last annotated frame: frames before the first label are dropped
  (so frame 0 is annotated and ``first_frame_mask()`` / ``first_frame_boxes()`` work; a `VideoSequence` whose frame 0
  had no annotation would raise there) and so are frames after the last one (nothing evaluates them); OnAVOS reads
  the same range. A missing frame number inside it is an error naming the file.
* Masks are 0/1 (object id 1 = the foreground): grey value above `mask_threshold` (127) is foreground; a mask whose
  values are only 0 and 1 is taken as is. ``.png`` labels are read the same way.
* Shots with a single label have nothing to evaluate and are skipped unless named in `sequences`
  (``skip_single_annotation=False`` keeps them): in the release those are the two shots OnAVOS and TransferSeg drop.

The ground truth is not instance-level: where several targets are visible they are one foreground. The FTMU paper
(Sec. 5.1) splits them by hand; ``split_instances=True`` approximates that split:

1. In the first annotated frame, the 8-connected foreground components whose area is at least
   `min_instance_fraction` (0.05) of the largest component's are the objects, numbered 1..K in raster order of their
   first pixel (top row first, then leftmost). Smaller components join the object they are nearest to (Euclidean
   pixel distance), as pieces of it cut off by an occluder or by JPEG noise.
2. Each later annotated frame, in order: every 8-connected foreground component takes the id of the object whose
   last seen mask (its pixels in the latest earlier annotated frame where it had any) it overlaps by the most
   pixels, ties going to the smaller id; a component that overlaps none takes the nearest object's id. So a frame
   can hold fewer ids than K (an object out of view) but never a new one.

It is an approximation: one target cut in two by an occluder in the first frame becomes two objects, and two targets
that touch become one component that goes to a single id. ``object_ids`` is (1,) without the split and 1..K with it
(computed lazily from the first label; a first label without foreground gives no objects).
All sequences are evaluation data: the dataset has no training split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from datamodules.image_io import write_rgb
from datamodules.synthetic_vos import SyntheticVideo, render_video
from datamodules.vos_io import SequenceCollection, VideoSequence, frame_size

CATEGORIES = ("aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike", "train")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_FULL_FRAME = re.compile(r"frame(\d+)")


def read_foreground_mask(path: str | Path, threshold: int = 127) -> np.ndarray:
    """A YouTube-Objects label image as an (H, W) uint8 0/1 mask: grey value above `threshold` is foreground, and a
    mask holding only 0 and 1 is returned as is. Colour images are converted to grey first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation {path} does not exist")
    data = np.fromfile(path, dtype=np.uint8)
    grey = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if grey is None:
        raise ValueError(f"annotation {path}: cannot decode as an image (truncated download? re-extract it)")
    if int(grey.max(initial=0)) <= 1:
        return grey.astype(np.uint8)
    return (grey > threshold).astype(np.uint8)


# -- instance split ------------------------------------------------------------------------------------------------


def _components(foreground: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(count, component map with 1..count in raster order of each component's first pixel, areas)."""
    count, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0, np.zeros(foreground.shape, np.int32), np.zeros(0, np.int64)
    values, first = np.unique(labels.ravel(), return_index=True)
    keep = values != 0  # the background, absent where the whole frame is foreground
    order = values[keep][np.argsort(first[keep], kind="stable")]  # component labels by their first pixel
    renumber = np.zeros(count, np.int32)
    renumber[order] = np.arange(1, count, dtype=np.int32)
    labels = renumber[labels]
    return count - 1, labels, np.bincount(labels.ravel(), minlength=count)[1:]


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel of `mask` (inf where `mask` is empty)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def split_first_frame(foreground: np.ndarray, min_instance_fraction: float = 0.05) -> np.ndarray:
    """Step 1 of the instance split (module docstring): object ids 1..K of the first annotated frame."""
    count, components, areas = _components(foreground)
    out = np.zeros(foreground.shape, np.uint8)
    if count == 0:
        return out
    kept = [c for c in range(1, count + 1) if areas[c - 1] >= min_instance_fraction * areas.max()]
    if len(kept) > 255:
        raise ValueError(f"{len(kept)} foreground components would become objects; ids are 8-bit")
    for object_id, component in enumerate(kept, start=1):
        out[components == component] = object_id
    fragments = sorted(set(range(1, count + 1)) - set(kept))
    if fragments:
        distances = [_distance_to(components == component) for component in kept]
        for fragment in fragments:
            where = components == fragment
            out[where] = 1 + int(np.argmin([d[where].min() for d in distances]))
    return out


def carry_ids(foreground: np.ndarray, last_seen: dict[int, np.ndarray]) -> np.ndarray:
    """Step 2 of the instance split: ids of a later annotated frame from each object's last seen mask."""
    count, components, _ = _components(foreground)
    out = np.zeros(foreground.shape, np.uint8)
    if count == 0:
        return out
    if not last_seen:
        out[components > 0] = 1
        return out
    ids = sorted(last_seen)
    distances = None
    for component in range(1, count + 1):
        where = components == component
        overlaps = [int(np.count_nonzero(last_seen[object_id][where])) for object_id in ids]
        if max(overlaps) > 0:
            out[where] = ids[int(np.argmax(overlaps))]
        else:
            if distances is None:
                distances = [_distance_to(last_seen[object_id]) for object_id in ids]
            out[where] = ids[int(np.argmin([d[where].min() for d in distances]))]
    return out


class _ShotAnnotations:
    """The `decode_annotation` of one shot: 0/1 masks, or instance ids carried over the annotated frames in order."""

    def __init__(
        self,
        label_paths: Sequence[Path],
        frame_paths: Sequence[Path],
        threshold: int,
        split_instances: bool,
        min_instance_fraction: float,
    ):
        self.label_paths = list(label_paths)
        self._position = {path: position for position, path in enumerate(self.label_paths)}
        self._frame_of = dict(zip(self.label_paths, frame_paths))
        self.threshold = threshold
        self.split_instances = split_instances
        self.min_instance_fraction = min_instance_fraction
        self._state: tuple[int, dict[int, np.ndarray], np.ndarray] | None = None  # last position computed

    def foreground(self, path: Path) -> np.ndarray:
        mask = read_foreground_mask(path, self.threshold)
        frame = self._frame_of[path]
        if frame.is_file():
            expected = frame_size(frame)
            if mask.shape != expected:
                raise ValueError(
                    f"annotation {path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its frame {frame} is "
                    f"{expected[0]}x{expected[1]}; frames taken from the original YouTube-Objects videos can be "
                    "larger than the masks (OnAVOS scales them down): resize the frames to the annotation size"
                )
        return mask

    def instances(self, position: int) -> np.ndarray:
        if self._state is None or self._state[0] > position:
            labels = split_first_frame(self.foreground(self.label_paths[0]), self.min_instance_fraction)
            self._state = (0, {}, labels)
            self._remember(labels)
        while self._state[0] < position:
            current, last_seen, _ = self._state
            labels = carry_ids(self.foreground(self.label_paths[current + 1]), last_seen)
            self._state = (current + 1, last_seen, labels)
            self._remember(labels)
        return self._state[2].copy()

    def _remember(self, labels: np.ndarray) -> None:
        last_seen = self._state[1]
        for object_id in np.unique(labels).tolist():
            if object_id:
                last_seen[object_id] = labels == object_id

    def __call__(self, files: tuple[Path, ...]) -> np.ndarray:
        (path,) = files
        if not self.split_instances:
            return self.foreground(path)
        return self.instances(self._position[path])


# -- reader --------------------------------------------------------------------------------------------------------


def _numbered(folder: Path, pattern: re.Pattern | None, what: str) -> dict[int, Path]:
    """Image files of `folder` by number: the whole stem (pattern None, stems must be digits) or `pattern`'s group."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if pattern is None:
            if not path.stem.isdigit():
                raise ValueError(
                    f"{path}: {what} files are named by frame number (00001.jpg, 00011.jpg, ...); rename or "
                    "remove this one"
                )
            number = int(path.stem)
        else:
            match = pattern.fullmatch(path.stem)
            if match is None:
                continue
            number = int(match.group(1))
        if number in found:
            raise ValueError(f"{path} and {found[number]} are both {what} number {number}; keep one of them")
        found[number] = path
    return found


class YouTubeObjects(SequenceCollection):
    """The shots of the YouTube-Objects ground truth as lazy `VideoSequence`s named ``<category>/<video>/<shot>``.

    `root` is the ``youtube_masks`` folder (or a folder holding it). `categories` restricts to some of `CATEGORIES`;
    `sequences` names shots to read (they are read even with a single label). `frames_root`: a separate tree of full
    frames, ``<frames_root>/<category>/data/<video>/shots/<shot>/frame<NNNN>.jpg``. See the module docstring for the
    layout, the frame range and `split_instances`.
    """

    def __init__(
        self,
        root: str | Path,
        categories: Iterable[str] | None = None,
        sequences: Iterable[str] | None = None,
        *,
        split_instances: bool = False,
        frames_root: str | Path | None = None,
        mask_threshold: int = 127,
        min_instance_fraction: float = 0.05,
        skip_single_annotation: bool = True,
    ):
        self.root = _masks_root(Path(root))
        self.frames_root = Path(frames_root) if frames_root is not None else None
        if self.frames_root is not None and not self.frames_root.is_dir():
            raise FileNotFoundError(f"frames_root {self.frames_root} does not exist")
        self.split_instances = split_instances
        self.mask_threshold = mask_threshold
        self.min_instance_fraction = min_instance_fraction
        if categories is not None:
            categories = list(categories)
            unknown = [c for c in categories if c not in CATEGORIES]
            if unknown:
                raise ValueError(f"unknown YouTube-Objects categories {unknown}; the categories are {list(CATEGORIES)}")
            for category in categories:
                if not (self.root / category / "data").is_dir():
                    raise FileNotFoundError(
                        f"category folder {self.root / category / 'data'} does not exist; is {self.root} the "
                        "youtube_masks root (<category>/data/<video>/shots/<shot>/labels/)?"
                    )
        if sequences is not None:
            names = [self._checked_name(name, categories) for name in sequences]
            explicit = set(names)
        else:
            names = self._list_shots(categories if categories is not None else CATEGORIES)
            explicit = set()
        self._sequences = {}
        for name in names:
            sequence = self._build(*name.split("/"))
            if skip_single_annotation and len(sequence.annotation_files) < 2 and name not in explicit:
                continue
            self._sequences[name] = sequence

    def _checked_name(self, name: str, categories: list[str] | None) -> str:
        parts = name.split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"sequence name {name!r} is not <category>/<video>/<shot> (e.g. 'aeroplane/0001/001')"
            )
        if parts[0] not in CATEGORIES:
            raise ValueError(f"sequence {name!r}: unknown category {parts[0]!r}; the categories are {list(CATEGORIES)}")
        if categories is not None and parts[0] not in categories:
            raise ValueError(f"sequence {name!r} is not in the requested categories {categories}")
        shot_dir = self._shot_dir(*parts)
        if not shot_dir.is_dir():
            raise FileNotFoundError(f"sequence {name!r}: shot folder {shot_dir} does not exist")
        return name

    def _list_shots(self, categories: Iterable[str]) -> list[str]:
        names = []
        for category in categories:
            data = self.root / category / "data"
            if not data.is_dir():
                continue
            for video in sorted(p for p in data.iterdir() if p.is_dir()):
                shots = video / "shots"
                if not shots.is_dir():
                    raise FileNotFoundError(
                        f"video folder {video} has no shots/ folder; each video holds shots/<shot>/labels/"
                    )
                names += [f"{category}/{video.name}/{shot.name}" for shot in sorted(shots.iterdir()) if shot.is_dir()]
        return names

    def _shot_dir(self, category: str, video: str, shot: str) -> Path:
        return self.root / category / "data" / video / "shots" / shot

    def _build(self, category: str, video: str, shot: str) -> VideoSequence:
        name = f"{category}/{video}/{shot}"
        shot_dir = self._shot_dir(category, video, shot)
        labels_dir = shot_dir / "labels"
        if not labels_dir.is_dir():
            raise FileNotFoundError(
                f"sequence {name!r}: annotation folder {labels_dir} does not exist; the ground truth of a shot is "
                "labels/<NNNNN>.jpg, one mask per annotated frame (re-extract youtube_masks)"
            )
        labels = _numbered(labels_dir, None, "annotation")
        if not labels:
            raise FileNotFoundError(f"sequence {name!r}: annotation folder {labels_dir} holds no <NNNNN>.jpg mask")
        if self.frames_root is not None:
            frame_dir = self.frames_root / category / "data" / video / "shots" / shot
        else:
            frame_dir = shot_dir / "images"
        if not frame_dir.is_dir():
            raise FileNotFoundError(f"sequence {name!r}: frame folder {frame_dir} does not exist")
        numbers_of_labels = sorted(labels)
        full = _numbered(frame_dir, _FULL_FRAME, "frame")
        if full:
            layout = "full"
            first, last = numbers_of_labels[0], numbers_of_labels[-1]
            numbers = list(range(first, last + 1))
            missing = next((n for n in numbers if n not in full), None)
            if missing is not None:
                raise FileNotFoundError(
                    f"sequence {name!r}: frame {frame_dir / f'frame{missing:04d}.jpg'} is missing; a shot's frames "
                    f"run without gaps from its first label ({labels[first].name}) to its last ({labels[last].name})"
                )
            frames = {n: full[n] for n in numbers}
            dropped = (sum(n < first for n in full), sum(n > last for n in full))
        else:
            layout = "annotated-only"
            same_name = _numbered(frame_dir, re.compile(r"(\d+)"), "frame")
            absent = next((n for n in numbers_of_labels if n not in same_name), None)
            if absent is not None:
                raise FileNotFoundError(
                    f"sequence {name!r}: frame {frame_dir / labels[absent].stem}.png of annotation {labels[absent]} "
                    f"is missing (and {frame_dir} has no frame<NNNN>.jpg full frames)"
                )
            numbers = numbers_of_labels
            frames = {n: same_name[n] for n in numbers}
            dropped = (0, 0)
        index_of = {number: index for index, number in enumerate(numbers)}
        decoder = _ShotAnnotations(
            [labels[n] for n in numbers_of_labels],
            [frames[n] for n in numbers_of_labels],
            self.mask_threshold,
            self.split_instances,
            self.min_instance_fraction,
        )
        return VideoSequence(
            name,
            [frames[n] for n in numbers],
            {index_of[n]: labels[n] for n in numbers_of_labels},
            frame_names=[f"{n:05d}" for n in numbers],
            object_ids=None if self.split_instances else [1],
            decode_annotation=decoder,
            annotation_dir=labels_dir,
            metadata={
                "category": category,
                "video": video,
                "shot": shot,
                "tag": f"{category}_{video}",
                "layout": layout,
                "frame_numbers": numbers,
                "dropped_leading_frames": dropped[0],
                "dropped_trailing_frames": dropped[1],
                "split_instances": self.split_instances,
            },
        )

    def _where(self) -> str:
        return str(self.root)


def _masks_root(root: Path) -> Path:
    if not any((root / category).is_dir() for category in CATEGORIES) and (root / "youtube_masks").is_dir():
        root = root / "youtube_masks"
    if not any((root / category / "data").is_dir() for category in CATEGORIES):
        raise FileNotFoundError(
            f"{root} holds none of the category folders {list(CATEGORIES)} with a data/ folder; is it the "
            "youtube_masks root (<category>/data/<video>/shots/<shot>/labels/<NNNNN>.jpg)?"
        )
    return root


# -- synthetic tree ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticShot:
    video: SyntheticVideo  # labels hold the true object identities (1, 2); the written masks are their union
    frame_numbers: list[int]  # file numbers of frames[0], frames[1], ...
    label_numbers: list[int]  # the annotated ones
    merged: bool  # two objects written as one foreground


def _first_pixel(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _exercises_split(labels: list[np.ndarray], annotated: list[int]) -> bool:
    """Both objects visible in every annotated frame, each overlapping its own mask of the previous annotated frame,
    and their raster order (first pixel) different in two annotated frames: ids numbered per frame would swap."""
    orders = set()
    for previous, t in zip([None, *annotated], annotated):
        one, two = labels[t] == 1, labels[t] == 2
        if not (one.any() and two.any()):
            return False
        if previous is not None:
            if not ((one & (labels[previous] == 1)).any() and (two & (labels[previous] == 2)).any()):
                return False
        orders.add(_first_pixel(one) < _first_pixel(two))
    return len(orders) == 2


def _side_by_side(seed: int, num_frames: int, height: int, width: int, annotated: list[int]) -> SyntheticVideo:
    """Two single-object videos next to each other with a 2-pixel grey seam, so their objects never touch (ids 1
    left, 2 right). Each is rendered four times as long and cut to `num_frames`, so objects move a quarter as fast
    and overlap their own mask from one annotated frame to the next; the right one's seed is the first from
    ``seed + 500`` on (50 tries, else the last) for which `_exercises_split` holds on the `annotated` frames."""
    half = (width - 2) // 2
    left = render_video(seed, num_frames=4 * num_frames, height=height, width=half, num_objects=1)
    seam_frame = np.full((height, 2, 3), 128, np.uint8)
    seam_labels = np.zeros((height, 2), np.uint8)
    for offset in range(500, 550):
        right = render_video(seed + offset, num_frames=4 * num_frames, height=height, width=width - 2 - half,
                             num_objects=1)
        frames = [np.concatenate([left.frames[t], seam_frame, right.frames[t]], axis=1) for t in range(num_frames)]
        labels = [
            np.concatenate([left.labels[t], seam_labels, np.where(right.labels[t] > 0, 2, 0).astype(np.uint8)], axis=1)
            for t in range(num_frames)
        ]
        if _exercises_split(labels, annotated):
            break
    return SyntheticVideo(frames, labels, 2)


def synthetic_shots(
    num_videos: int = 3, num_frames: int = 32, label_step: int = 10, height: int = 96, width: int = 128,
    seed: int = 0, leading_frames: int = 3,
) -> dict[str, SyntheticShot]:
    """What `write_youtube_objects` writes, by sequence name. Video i is in category ``CATEGORIES[i % 10]``
    (video ``{i // 10 + 1:04d}``, shot ``001``); i % 3 == 0: one object, labelled from frame 1 every `label_step`
    frames; i % 3 == 1: two objects side by side, written as one foreground (the case `split_instances` is for);
    i % 3 == 2: one object whose first label is on frame ``leading_frames + 1``. Frames are numbered from 1."""
    if label_step < 1 or num_frames < 2:
        raise ValueError(f"need label_step >= 1 and at least 2 frames, got {label_step} and {num_frames}")
    shots = {}
    for index in range(num_videos):
        kind = index % 3
        video_seed = seed * 1000 + index
        first_label = 1 + (leading_frames if kind == 2 else 0)
        label_numbers = list(range(first_label, num_frames + 1, label_step))
        if kind == 1:
            video = _side_by_side(video_seed, num_frames, height, width, [n - 1 for n in label_numbers])
        else:
            video = render_video(video_seed, num_frames=num_frames, height=height, width=width, num_objects=1)
        name = f"{CATEGORIES[index % len(CATEGORIES)]}/{index // len(CATEGORIES) + 1:04d}/001"
        shots[name] = SyntheticShot(video, list(range(1, num_frames + 1)), label_numbers, kind == 1)
    return shots


def write_youtube_objects(
    root: str | Path, num_videos: int = 3, num_frames: int = 32, label_step: int = 10, height: int = 96,
    width: int = 128, seed: int = 0, leading_frames: int = 3, layout: str = "full", label_suffix: str = ".jpg",
) -> Path:
    """A YouTube-Objects ground-truth tree (module docstring) of the `synthetic_shots` videos: binary 0/255 grey
    masks ``labels/<NNNNN>.jpg`` (JPEG, quality 90, as lossy as the release; ``label_suffix=".png"`` for PNG) every
    `label_step` frames, and frames as ``images/frame<NNNN>.jpg`` for every frame (``layout="full"``) or as
    ``images/<NNNNN>.png`` for the annotated frames only (``layout="annotated-only"``). Returns `root`."""
    if layout not in ("full", "annotated-only"):
        raise ValueError(f"layout must be 'full' or 'annotated-only', got {layout!r}")
    if label_suffix not in (".jpg", ".png"):
        raise ValueError(f"label_suffix must be '.jpg' or '.png', got {label_suffix!r}")
    root = Path(root)
    shots = synthetic_shots(num_videos, num_frames, label_step, height, width, seed, leading_frames)
    for name, shot in shots.items():
        category, video, shot_name = name.split("/")
        folder = root / category / "data" / video / "shots" / shot_name
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        for t, number in enumerate(shot.frame_numbers):
            annotated = number in shot.label_numbers
            if layout == "full":
                write_rgb(folder / "images" / f"frame{number:04d}.jpg", shot.video.frames[t])
            elif annotated:
                write_rgb(folder / "images" / f"{number:05d}.png", shot.video.frames[t])
            if annotated:
                mask = np.where(shot.video.labels[t] > 0, 255, 0).astype(np.uint8)
                ok, encoded = cv2.imencode(label_suffix, mask, [cv2.IMWRITE_JPEG_QUALITY, 90])
                if not ok:
                    raise ValueError(f"OpenCV could not encode {folder / 'labels'}/{number:05d}{label_suffix}")
                encoded.tofile(folder / "labels" / f"{number:05d}{label_suffix}")
    return root
