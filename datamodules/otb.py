"""Reader of the native OTB-2013 / OTB-100 layout (Wu, Lim, Yang, TPAMI 2015).

On disk a sequence is ``<root>/<Seq>/img/%04d.jpg`` plus ``<root>/<Seq>/groundtruth_rect.txt`` (one ``x,y,w,h``
row per frame, 1-based pixels, separated by commas, tabs or spaces). Three quirks of the release are handled:

* Several targets in one video (Jogging, Skating2, Human4) have ``groundtruth_rect.1.txt`` / ``.2.txt`` and no
  ``groundtruth_rect.txt``; each target is a sequence named ``Jogging.1``, ``Jogging.2`` ... as the toolkit names
  them. Human4's ``.1`` file is empty in the release, so only ``Human4.2`` exists.
* Some sequences are evaluated on a frame range only (the toolkit's ``configSeqs``: ``startFrame``/``endFrame``),
  listed in ``FRAME_RANGES``. Their ground truth either covers exactly that range (David: 471 rows for frames
  300-770) or starts at frame 1 (Tiger1: 354 rows, evaluated from frame 6); both are accepted. Images outside the
  range are ignored.
* Everything else must agree exactly: a sequence without a toolkit range pairs ground-truth row i with the i-th
  image counted from the first image number, so every image in that run must exist and the row count must equal
  the image count. This keeps truncated copies loadable (the shared Human3/Liquor samples are the first 100 frames
  with the first 100 rows) while a missing frame, a surplus image or a short ground truth is an error that names
  the file, never a silent skip.

Boxes follow the toolkit where it defines what a box means: a ground-truth row that is NaN or has w or h <= 0 is
kept, and scored as a failure (seeds.md 0.3). What it cannot score is refused, naming the file and line: an infinite
value, a first box that cannot initialise a tracker (NaN, w or h <= 0), a box entirely outside the image, and a frame
whose size differs from the sequence's first frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from datamodules.image_io import read_rgb
from datamodules.vos_io import frame_size

GROUNDTRUTH_FILE = "groundtruth_rect.txt"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_OTB2013 = (
    "Basketball", "Bolt", "Boy", "Car4", "CarDark", "CarScale", "Coke", "Couple", "Crossing", "David", "David2",
    "David3", "Deer", "Dog1", "Doll", "Dudek", "FaceOcc1", "FaceOcc2", "Fish", "FleetFace", "Football",
    "Football1", "Freeman1", "Freeman3", "Freeman4", "Girl", "Ironman", "Jogging.1", "Jogging.2", "Jumping",
    "Lemming", "Liquor", "Matrix", "Mhyang", "MotorRolling", "MountainBike", "Shaking", "Singer1", "Singer2",
    "Skating1", "Skiing", "Soccer", "Subway", "Suv", "Sylvester", "Tiger1", "Tiger2", "Trellis", "Walking",
    "Walking2", "Woman",
)
_TB50 = (
    "Basketball", "Biker", "Bird1", "BlurBody", "BlurCar2", "BlurFace", "BlurOwl", "Bolt", "Box", "Car1", "Car4",
    "CarDark", "CarScale", "ClifBar", "Couple", "Crowds", "David", "Deer", "Diving", "DragonBaby", "Dudek",
    "Football", "Freeman4", "Girl", "Human3", "Human4.2", "Human6", "Human9", "Ironman", "Jump", "Jumping",
    "Liquor", "Matrix", "MotorRolling", "Panda", "RedTeam", "Shaking", "Singer2", "Skating1", "Skating2.1",
    "Skating2.2", "Skiing", "Soccer", "Surfer", "Sylvester", "Tiger2", "Trellis", "Walking", "Walking2", "Woman",
)
_TB100_REST = (
    "Bird2", "BlurCar1", "BlurCar3", "BlurCar4", "Board", "Bolt2", "Boy", "Car2", "Car24", "Coke", "Coupon",
    "Crossing", "Dancer", "Dancer2", "David2", "David3", "Dog", "Dog1", "Doll", "FaceOcc1", "FaceOcc2", "Fish",
    "FleetFace", "Football1", "Freeman1", "Freeman3", "Girl2", "Gym", "Human2", "Human5", "Human7", "Human8",
    "Jogging.1", "Jogging.2", "KiteSurf", "Lemming", "Man", "Mhyang", "MountainBike", "Rubik", "Singer1",
    "Skater", "Skater2", "Subway", "Suv", "Tiger1", "Toy", "Trans", "Twinnings", "Vase",
)
# DRLT (Zhang et al. 2017), Table 2: the 30 OTB-100 videos whose targets are PASCAL VOC classes, in table order.
_DRLT30 = (
    "Suv", "Couple", "Diving", "Dudek", "Human3", "Human6", "Human9", "Jump", "Jumping", "Singer2", "Skating1",
    "Woman", "Dancer", "Liquor", "BlurCar4", "Human7", "Human8", "BlurCar2", "Skater2", "Bird2", "Girl2",
    "CarDark", "CarScale", "Car2", "BlurCar3", "Gym", "BlurCar1", "BlurBody", "Skater", "Dancer2",
)

SUBSETS: dict[str, tuple[str, ...]] = {
    "otb2013": _OTB2013,
    "otb100": tuple(sorted(_TB50 + _TB100_REST)),
    "tb50": _TB50,
    "drlt30": _DRLT30,
}

# (startFrame, endFrame), 1-based inclusive, from the OTB toolkit's sequence configuration (configSeqs100.m) for
# the sequences whose ground truth does not simply cover image 1..N. Keyed by directory name.
FRAME_RANGES: dict[str, tuple[int, int]] = {
    "David": (300, 770),
    "Football1": (1, 74),
    "Freeman3": (1, 460),
    "Freeman4": (1, 283),
    "Diving": (1, 215),
    "BlurCar1": (247, 988),
    "BlurCar3": (3, 359),
    "BlurCar4": (18, 397),
    "Tiger1": (6, 354),
}

_TARGET_SUFFIX = re.compile(r"(?P<video>.+)\.(?P<target>\d+)")
_NUMBERED_GROUNDTRUTH = re.compile(r"groundtruth_rect\.(?P<target>\d+)\.txt")


@dataclass
class OTBSequence:
    """One tracked target: frame i is `frame_paths[i]`, its box `boxes[i]` (x, y, w, h; NaN = no annotation)."""

    name: str
    frame_paths: list[Path]
    boxes: np.ndarray
    start_frame: int = field(default=1)

    def __len__(self) -> int:
        return len(self.frame_paths)

    def read_frame(self, index: int) -> np.ndarray:
        """Frame `index` (0-based within the sequence) as an H x W x 3 uint8 RGB array."""
        return read_rgb(self.frame_paths[index])

    def frames(self) -> Iterator[np.ndarray]:
        for path in self.frame_paths:
            yield read_rgb(path)

    @cached_property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the first frame, from its header."""
        return frame_size(self.frame_paths[0])


def read_groundtruth(path: str | Path) -> np.ndarray:
    """(N, 4) float64 boxes from an OTB ground-truth or results file; "NaN" entries are kept as NaN."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"box file {path} does not exist")
    rows = []
    for line_number, line in enumerate(path.read_text().rstrip().splitlines(), start=1):
        fields = [value for value in re.split(r"[,\s]+", line.strip().strip(",")) if value]
        try:
            if len(fields) != 4:
                raise ValueError
            rows.append([float(value) for value in fields])
        except ValueError:
            raise ValueError(
                f"{path}, line {line_number}: expected 4 numbers x,y,w,h separated by commas, tabs or spaces, "
                f"got {line!r}"
            ) from None
    if not rows:
        raise ValueError(f"{path} is empty: expected one x,y,w,h row per frame")
    boxes = np.asarray(rows, dtype=np.float64)
    infinite = np.flatnonzero(np.isinf(boxes).any(axis=1))
    if infinite.size:
        line_number = int(infinite[0]) + 1
        raise ValueError(
            f"{path}, line {line_number}: {boxes[infinite[0]].tolist()} is not finite; write NaN,NaN,NaN,NaN for a "
            "frame without a box"
        )
    return boxes


def _check_boxes(path: Path, boxes: np.ndarray, first_line: int, image_size: tuple[int, int], image: Path) -> None:
    """Refuse what the toolkit cannot score: a first box unfit to initialise a tracker, a box off the image."""
    x, y, w, h = boxes[0]
    if not (np.isfinite(boxes[0]).all() and w > 0 and h > 0):
        raise ValueError(
            f"{path}, line {first_line}: the first box {boxes[0].tolist()} must have a positive width and height, "
            "because trackers are initialised on it; correct that row"
        )
    height, width = image_size
    valid = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    # 1-based boxes cover [x, x + w); the image covers [1, W + 1). No common pixel: not a box of this image.
    outside = valid & ((boxes[:, 0] >= width + 1) | (boxes[:, 1] >= height + 1) | (boxes[:, 0] + boxes[:, 2] <= 1)
                       | (boxes[:, 1] + boxes[:, 3] <= 1))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{path}, line {first_line + row}: box {boxes[row].tolist()} lies entirely outside the {width}x{height} "
            f"image ({image}); are the boxes for another resolution? Correct the row, or write NaN,NaN,NaN,NaN for "
            "a frame without the target"
        )


def _split_name(name: str) -> tuple[str, str]:
    """Sequence name -> (directory, ground-truth file); "Jogging.2" -> ("Jogging", "groundtruth_rect.2.txt")."""
    match = _TARGET_SUFFIX.fullmatch(name)
    if match:
        return match["video"], f"groundtruth_rect.{match['target']}.txt"
    return name, GROUNDTRUTH_FILE


def _groundtruth_path(root: Path, name: str) -> Path:
    video, file_name = _split_name(name)
    video_dir = root / video
    if not video_dir.is_dir():
        raise FileNotFoundError(f"sequence {name!r}: directory {video_dir} does not exist")
    path = video_dir / file_name
    if not path.is_file():
        targets = sorted(_NUMBERED_GROUNDTRUTH.fullmatch(p.name)["target"] for p in video_dir.iterdir()
                         if _NUMBERED_GROUNDTRUTH.fullmatch(p.name))
        hint = f"; this video has several targets, use {', '.join(f'{video}.{t}' for t in targets)}" if targets else ""
        raise FileNotFoundError(f"sequence {name!r}: ground-truth file {path} does not exist{hint}")
    return path


def _rows_in_range(path: Path, rows: np.ndarray, video: str) -> tuple[np.ndarray, int]:
    """Ground-truth rows that pair with the evaluated frames, and the number of the first of those frames."""
    if video not in FRAME_RANGES:
        return rows, 1
    start, end = FRAME_RANGES[video]
    length = end - start + 1
    if len(rows) == length:
        return rows, start
    if len(rows) >= end:
        return rows[start - 1 : end], start
    raise ValueError(
        f"{path} has {len(rows)} rows, but the OTB toolkit evaluates {video} on frames {start}-{end}: expected "
        f"{length} rows (that range) or at least {end} rows (numbered from frame 1)"
    )


def read_sequence_groundtruth(root: str | Path, name: str) -> np.ndarray:
    """The evaluated ground-truth rows of sequence `name`, without touching its images."""
    path = _groundtruth_path(Path(root), name)
    rows, _ = _rows_in_range(path, read_groundtruth(path), _split_name(name)[0])
    return rows


def _numbered_images(img_dir: Path) -> dict[int, Path]:
    if not img_dir.is_dir():
        raise FileNotFoundError(f"image directory {img_dir} does not exist")
    images: dict[int, Path] = {}
    for path in img_dir.iterdir():
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
            number = int(path.stem)
            if number in images:
                raise ValueError(f"{img_dir}: frame {number} exists twice ({images[number].name}, {path.name})")
            images[number] = path
    if not images:
        raise FileNotFoundError(f"image directory {img_dir} holds no numbered frames (expected img/%04d.jpg)")
    return images


def load_sequence(root: str | Path, name: str) -> OTBSequence:
    root = Path(root)
    path = _groundtruth_path(root, name)
    video = _split_name(name)[0]
    images = _numbered_images(root / video / "img")
    rows = read_groundtruth(path)
    if video in FRAME_RANGES:
        boxes, first = _rows_in_range(path, rows, video)
    else:
        boxes, first = rows, min(images)
    last = first + len(boxes) - 1
    for number in range(first, last + 1):
        if number not in images:
            raise FileNotFoundError(
                f"sequence {name!r}: frame {number} ({root / video / 'img' / f'{number:04d}.jpg'}) is missing; "
                f"{path.name} pairs its rows with frames {first}-{last}"
            )
    if video not in FRAME_RANGES and max(images) > last:
        raise ValueError(
            f"{path} has fewer rows ({len(boxes)}) than the sequence has frames "
            f"({max(images) - first + 1}, images {first}-{max(images)})"
        )
    frame_paths = [images[number] for number in range(first, last + 1)]
    sequence = OTBSequence(name=name, frame_paths=frame_paths, boxes=boxes, start_frame=first)
    _check_frame_sizes(sequence)
    # Rows numbered from frame 1 but evaluated from a later frame (Tiger1) start further down the file.
    first_line = first if len(rows) != len(boxes) else 1
    _check_boxes(path, boxes, first_line, sequence.image_size, frame_paths[0])
    return sequence


def _check_frame_sizes(sequence: OTBSequence) -> None:
    # Headers only (about 0.1 ms a frame): boxes are pixels of one image size, and trackers read frames by path.
    height, width = sequence.image_size
    for path in sequence.frame_paths[1:]:
        other_height, other_width = frame_size(path)
        if (other_height, other_width) != (height, width):
            raise ValueError(
                f"sequence {sequence.name!r}: frame {path} is {other_width}x{other_height} but "
                f"{sequence.frame_paths[0]} is {width}x{height} (W x H); every frame must have the first frame's size: "
                "is it from another video?"
            )


def discover_sequences(root: str | Path) -> list[str]:
    """Every sequence under `root`, one name per target, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"OTB root {root} does not exist")
    names = []
    for video_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if (video_dir / GROUNDTRUTH_FILE).is_file():
            names.append(video_dir.name)
            continue
        numbered = sorted(
            (int(match["target"]), p) for p in video_dir.iterdir() if (match := _NUMBERED_GROUNDTRUTH.fullmatch(p.name))
        )
        targets = [f"{video_dir.name}.{target}" for target, p in numbered if p.read_text().strip()]
        if targets:
            names.extend(targets)
        elif (video_dir / "img").is_dir():
            raise FileNotFoundError(f"{video_dir} has images but no {GROUNDTRUTH_FILE} (or groundtruth_rect.N.txt)")
    return names


def sequence_names(root: str | Path, sequences: str | Sequence[str] | None = None) -> list[str]:
    """Resolve None (every sequence under `root`), a subset name (see SUBSETS) or explicit names to a name list."""
    if sequences is None:
        return discover_sequences(root)
    if isinstance(sequences, str):
        if sequences not in SUBSETS:
            raise ValueError(
                f"unknown OTB subset {sequences!r}; known subsets: {', '.join(SUBSETS)} "
                "(pass a list for sequence names)"
            )
        return list(SUBSETS[sequences])
    if len(sequences) == 1 and sequences[0] in SUBSETS:
        return list(SUBSETS[sequences[0]])
    return list(sequences)


def load_otb(root: str | Path, sequences: str | Sequence[str] | None = None) -> list[OTBSequence]:
    return [load_sequence(root, name) for name in sequence_names(root, sequences)]
