"""Reader (and synthetic writer) of the VOT long-term layout: VOT2018-LT / LTB35, as vot-toolkit ships it.

On disk (vot-toolkit's `VOTDataset` / `VOTSequence`)::

    <root>/list.txt                      one sequence name per line
    <root>/<seq>/groundtruth.txt         one region per frame, comma-separated
    <root>/<seq>/sequence                metadata, ``key=value`` lines: ``channels.color=color/%08d.jpg``, ``fps=30``,
                                         ``format=default``, ``name=<seq>`` (optional ``groundtruth=<file>``)
    <root>/<seq>/color/00000001.jpg ...  frames numbered from 1
    <root>/<seq>/*.tag, *.label          per-frame attribute flags (not read here)

The frame pattern comes from ``channels.color`` in ``sequence`` (a folder without a pattern means ``%08d.jpg``
inside it; another channel is used when there is no ``color`` one). Without a ``sequence`` file the toolkit's default
``color/%08d.jpg`` is used, and older releases that put ``%08d.jpg`` directly in the sequence folder are read too.
Frames are counted from 1 up to the first missing number, and there must be exactly one ground-truth row per frame.

Ground-truth rows are read as the toolkit parses regions: ``x,y,w,h`` (a rectangle; any NaN, as in
``nan,nan,nan,nan``, marks a frame where the target is absent), 6 or more numbers (a polygon ``x1,y1,x2,y2,...``,
converted to its axis-aligned bounding box as the toolkit's ``convert_region`` does) or a single number (a special
code: no region). Every sequence becomes ``boxes`` (N, 4) float64 x, y, w, h in 0-based pixels with NaN rows where
the target is absent. The first row must be a box with a positive size: trackers are initialised on it.

`write_vot_lt(root)` writes a small synthetic tree in this exact layout (videos from
`datamodules.synthetic_vos.render_video`: a textured object that leaves the image through one border, is absent for
several frames, and comes back through the opposite one).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datamodules.image_io import read_rgb, write_rgb
from datamodules.vos_io import frame_size

LIST_FILE = "list.txt"
GROUNDTRUTH_FILE = "groundtruth.txt"
METADATA_FILE = "sequence"
DEFAULT_PATTERN = "%08d.jpg"
_PATTERN_FIELD = re.compile(r"%0?\d*d")


@dataclass
class VOTLTSequence:
    """One sequence: frame i is `frame_paths[i]`, its box `boxes[i]` (x, y, w, h, 0-based; NaN row = target absent)."""

    name: str
    frame_paths: list[Path]
    boxes: np.ndarray
    image_size: tuple[int, int]  # (height, width) of the frames
    metadata: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def bounds(self) -> tuple[int, int]:
        """(width, height): the image bounds as vot-toolkit's `sequence.size` (the metric's `bounds`)."""
        return self.image_size[1], self.image_size[0]

    @property
    def visible(self) -> np.ndarray:
        """(N,) bool: frames where the target is annotated (not a NaN row)."""
        return ~np.isnan(self.boxes).any(axis=1)

    def read_frame(self, index: int) -> np.ndarray:
        """Frame `index` (0-based) as an H x W x 3 uint8 RGB array."""
        return read_rgb(self.frame_paths[index])

    def frames(self) -> Iterator[np.ndarray]:
        for path in self.frame_paths:
            yield read_rgb(path)


def parse_region(text: str, where: str = "region") -> np.ndarray:
    """One region line -> (4,) float64 x, y, w, h; NaN row for "no region" (a NaN value or a special code)."""
    text = text.strip()
    if text.startswith("m"):
        raise ValueError(f"{where}: {text[:20]!r}... is a VOT mask region (m...); this reader takes rectangles and "
                         "polygons (VOT2018-LT ground truth is x,y,w,h)")
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError:
        raise ValueError(f"{where}: expected comma-separated numbers (x,y,w,h or a polygon x1,y1,x2,y2,...), "
                         f"got {text!r}") from None
    if any(math.isinf(value) for value in values):
        raise ValueError(f"{where}: {text!r} is not finite; write nan,nan,nan,nan for a frame without the target")
    if len(values) == 1:
        return np.full(4, np.nan)  # a special code (0 / 1 / 2 in the toolkit): no region
    if len(values) == 4:
        return np.full(4, np.nan) if any(math.isnan(v) for v in values) else np.array(values, dtype=np.float64)
    if len(values) >= 6 and len(values) % 2 == 0:
        points = np.array(values, dtype=np.float64).reshape(-1, 2)
        if np.isnan(points).any():
            return np.full(4, np.nan)
        left, top = points.min(axis=0)
        right, bottom = points.max(axis=0)
        return np.array([left, top, right - left, bottom - top], dtype=np.float64)
    raise ValueError(f"{where}: {len(values)} numbers in {text!r}; a region is x,y,w,h (4 numbers), a polygon "
                     "(an even number, at least 6) or a single special code")


def read_regions(path: str | Path) -> np.ndarray:
    """(N, 4) float64 x, y, w, h rows of a VOT region file (ground truth or a tracker's results), NaN = no region."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"region file {path} does not exist")
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{path} is empty: expected one region (x,y,w,h) per frame")
    rows = [parse_region(line, f"{path}, line {number}") for number, line in enumerate(lines, start=1)]
    return np.stack(rows)


def read_properties(path: str | Path) -> dict[str, str]:
    """The ``key=value`` lines of a VOT ``sequence`` metadata file (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    properties = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"{path}, line {number}: expected key=value (e.g. channels.color=color/%08d.jpg), "
                             f"got {line!r}")
        properties[key.strip()] = value.strip()
    return properties


def _frame_pattern(sequence_dir: Path, metadata: dict[str, str]) -> Path:
    """The frame file pattern (with a %d field) of the sequence's colour channel."""
    channels = [key for key in metadata if key.startswith("channels.")]
    if channels:
        key = "channels.color" if "channels.color" in metadata else channels[0]
        source = metadata[key].replace("\\", "/")
        if not Path(source).suffix:  # a folder: the toolkit appends %08d.jpg
            source = source.rstrip("/") + "/" + DEFAULT_PATTERN
        if not _PATTERN_FIELD.search(source):
            raise ValueError(f"{sequence_dir / METADATA_FILE}: {key}={metadata[key]} has no frame number field "
                             "(expected a pattern such as color/%08d.jpg)")
        return sequence_dir / source
    if (sequence_dir / "color").is_dir():
        return sequence_dir / "color" / DEFAULT_PATTERN
    if (sequence_dir / (DEFAULT_PATTERN % 1)).is_file():  # older releases: frames directly in the sequence folder
        return sequence_dir / DEFAULT_PATTERN
    raise FileNotFoundError(
        f"sequence {sequence_dir.name!r}: no frames found: neither {sequence_dir / 'color' / (DEFAULT_PATTERN % 1)} "
        f"nor {sequence_dir / (DEFAULT_PATTERN % 1)} exists, and there is no {sequence_dir / METADATA_FILE} naming "
        "the frame pattern (channels.color=color/%08d.jpg)"
    )


def _count_frames(pattern: Path) -> tuple[list[Path], int | None]:
    """Frames 1, 2, ... of `pattern` up to the first missing number, and the number of a later frame that exists
    past that gap (None when there is none)."""
    folder, name = pattern.parent, pattern.name
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder {folder} does not exist (frames {pattern})")
    present = set(os.listdir(folder))
    paths, number = [], 1
    while name % number in present:
        paths.append(folder / (name % number))
        number += 1
    numbered = re.compile(re.escape(name.split("%")[0]) + r"(\d+)" + re.escape(_PATTERN_FIELD.split(name)[-1]))
    later = [int(m.group(1)) for f in present if (m := numbered.fullmatch(f)) and int(m.group(1)) > number]
    return paths, (min(later) if later else None)


def sequence_names(root: str | Path) -> list[str]:
    """The sequence names of `root/list.txt`, in order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOT long-term root {root} does not exist")
    listing = root / LIST_FILE
    if not listing.is_file():
        folders = sorted(p.name for p in root.iterdir() if (p / GROUNDTRUTH_FILE).is_file())
        hint = f" ({len(folders)} sequence folders found: write their names to it, one per line)" if folders else ""
        raise FileNotFoundError(f"{listing} does not exist: a VOT dataset root lists its sequences there{hint}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{listing} is empty: expected one sequence name per line")
    return names


def load_sequence(root: str | Path, name: str) -> VOTLTSequence:
    root = Path(root)
    sequence_dir = root / name
    if not sequence_dir.is_dir():
        raise FileNotFoundError(f"sequence {name!r} (listed in {root / LIST_FILE}): folder {sequence_dir} does not "
                                "exist")
    metadata_path = sequence_dir / METADATA_FILE
    metadata = read_properties(metadata_path) if metadata_path.is_file() else {}
    groundtruth_path = sequence_dir / metadata.get("groundtruth", GROUNDTRUTH_FILE)
    if not groundtruth_path.is_file():
        raise FileNotFoundError(
            f"sequence {name!r}: ground-truth file {groundtruth_path} does not exist; a VOT sequence needs one "
            "region per frame there (x,y,w,h, nan,nan,nan,nan where the target is absent)"
        )
    boxes = read_regions(groundtruth_path)
    pattern = _frame_pattern(sequence_dir, metadata)
    frame_paths, later = _count_frames(pattern)
    if not frame_paths:
        raise FileNotFoundError(f"sequence {name!r}: the first frame {Path(str(pattern) % 1)} does not exist")
    if len(frame_paths) != len(boxes):
        gap = (f"; frame {Path(str(pattern) % (len(frame_paths) + 1))} is missing but frame {later} exists"
               if later is not None else "")
        raise ValueError(
            f"sequence {name!r}: {groundtruth_path} has {len(boxes)} rows but there are {len(frame_paths)} frames "
            f"({pattern.parent / pattern.name} numbered 1..{len(frame_paths)}){gap}; VOT needs exactly one "
            "ground-truth row per frame"
        )
    first = boxes[0]
    if not (np.isfinite(first).all() and first[2] > 0 and first[3] > 0):
        raise ValueError(f"{groundtruth_path}, line 1: the first region {first.tolist()} must be a box with a "
                         "positive width and height, because trackers are initialised on it")
    with np.errstate(invalid="ignore"):
        negative = np.flatnonzero((boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if negative.size:
        row = int(negative[0])
        raise ValueError(f"{groundtruth_path}, line {row + 1}: {boxes[row].tolist()} has a negative width or height; "
                         "VOT rectangles are x,y,w,h with (x, y) the top-left corner")
    return VOTLTSequence(name=name, frame_paths=frame_paths, boxes=boxes, image_size=frame_size(frame_paths[0]),
                         metadata=metadata)


def load_vot_lt(root: str | Path, sequences: Sequence[str] | None = None) -> list[VOTLTSequence]:
    """Every sequence of `root/list.txt` (or the named ones), in order."""
    names = sequence_names(root) if sequences is None else list(sequences)
    return [load_sequence(root, name) for name in names]


# --------------------------------------------------------------------------------------------- synthetic writer


def _target_boxes(labels: list[np.ndarray], object_id: int = 1) -> np.ndarray:
    """x, y, w, h of the visible part of `object_id` per frame (tight, pixel-edge), NaN where it has no pixel."""
    boxes = np.full((len(labels), 4), np.nan)
    for index, label in enumerate(labels):
        rows, columns = np.nonzero(label == object_id)
        if rows.size:
            boxes[index] = (columns.min(), rows.min(), columns.max() + 1 - columns.min(), rows.max() + 1 - rows.min())
    return boxes


def _format_row(box: np.ndarray, polygon: bool) -> str:
    if np.isnan(box).any():
        return "nan,nan,nan,nan"
    x, y, w, h = (float(v) for v in box)
    values = (x, y, x + w, y, x + w, y + h, x, y + h) if polygon else (x, y, w, h)
    return ",".join(f"{v:.2f}" for v in values)


def write_vot_lt(
    root: str | Path,
    num_sequences: int = 2,
    num_frames: int = 60,
    image_size: tuple[int, int] = (96, 128),
    seed: int = 0,
    polygons: bool = False,
    legacy_layout: bool = False,
) -> dict[str, np.ndarray]:
    """Write synthetic sequences (``synthlt01`` ...) in the VOT long-term layout under `root`; return
    {name: (num_frames, 4) ground-truth boxes as written}, in writing (list.txt) order.

    `image_size` is (height, width). The target is object 1 of `render_video`: its ground truth is the tight box of
    its visible pixels, ``nan,nan,nan,nan`` on the frames where it is out of the image (or fully hidden). With
    `polygons`, rows are written as 8-number polygons of the same boxes; with `legacy_layout`, frames go directly
    into the sequence folder and no ``sequence`` metadata file is written (older releases).
    """
    from datamodules.synthetic_vos import render_video

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = image_size
    written: dict[str, np.ndarray] = {}
    for index in range(num_sequences):
        name = f"synthlt{index + 1:02d}"
        for attempt in range(20):
            video = render_video(seed * 1000 + index + 97 * attempt, num_frames=num_frames, height=height,
                                 width=width, num_objects=2)
            boxes = _target_boxes(video.labels)
            if not np.isnan(boxes[0]).any():  # the first frame must show the target: trackers start from it
                break
        else:
            raise RuntimeError(f"{name}: no rendered video shows the target on its first frame")
        sequence_dir = root / name
        frame_dir = sequence_dir if legacy_layout else sequence_dir / "color"
        for number, frame in enumerate(video.frames, start=1):
            write_rgb(frame_dir / (DEFAULT_PATTERN % number), frame, quality=92)
        (sequence_dir / GROUNDTRUTH_FILE).write_text("\n".join(_format_row(b, polygons) for b in boxes) + "\n")
        if not legacy_layout:
            (sequence_dir / METADATA_FILE).write_text(
                f"channels.color=color/{DEFAULT_PATTERN}\nformat=default\nfps=30\nname={name}\n"
            )
        written[name] = boxes
    (root / LIST_FILE).write_text("\n".join(written) + "\n")
    return written
