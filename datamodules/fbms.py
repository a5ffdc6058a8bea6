"""FBMS-59 (Freiburg-Berkeley Motion Segmentation) read in the release layout::

    Trainingset/<seq>/<seq>_01.jpg ...            frames, numbered from 1 (two digits; three or more in long shots)
    Trainingset/<seq>/GroundTruth/<seq>Def.dat    ground-truth definition file (below)
    Trainingset/<seq>/GroundTruth/<seq>_01_gt.pgm sparse ground truth, one grey level per region (.ppm colour in some
                                                  shots: value = R*65536 + G*256 + B; .png in FBMS-3D copies)
    Testset/<seq>/...                             same

The definition file lists "Total number of regions:", each region's grey value, the "Confusion penality matrix",
"Total number of frames in this shot:", "Total number of labeled frames for this shot:" and, per labelled frame
(about every 20th), "Frame number:" (0-based), "File name:" and "Input file name:". Regions become ids in listed order,
with the black region (value 0) as background 0. A value that is not a listed region is read as background, as the
official C++ evaluation does (it happens in the release, e.g. cats04), with a warning naming the file.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from datamodules.vos_io import SequenceCollection, VideoSequence

SPLITS = {"train": "Trainingset", "test": "Testset", "Trainingset": "Trainingset", "Testset": "Testset"}
_FRAME_NUMBER = re.compile(r"_(\d+)$")


@dataclass(frozen=True)
class GroundTruthDefinition:
    region_values: list[int]
    num_frames: int
    labelled: list[tuple[int, str, str]]  # (0-based frame number, ground-truth file name, input frame file name)


def read_definition(path: Path) -> GroundTruthDefinition:
    """Parse an FBMS ``<seq>Def.dat``; a malformed file is a ValueError naming the file and line."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    position = 0

    def after(label: str) -> str:
        nonlocal position
        while position < len(lines) and not lines[position].startswith(label):
            position += 1
        if position + 1 >= len(lines):
            raise ValueError(f"{path}: no '{label}' entry (is this an FBMS Def.dat file?)")
        position += 2
        return lines[position - 1]

    def next_value() -> str:
        nonlocal position
        while position < len(lines) and not lines[position]:
            position += 1
        if position >= len(lines):
            raise ValueError(f"{path}: ended early")
        position += 1
        return lines[position - 1]

    try:
        num_regions = int(after("Total number of regions:"))
        values = [int(next_value()) for _ in range(num_regions)]
        num_frames = int(after("Total number of frames in this shot:"))
        num_labelled = int(after("Total number of labeled frames for this shot:"))
        labelled = []
        for _ in range(num_labelled):
            frame_number = int(after("Frame number:"))
            labelled.append((frame_number, after("File name:"), after("Input file name:")))
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: malformed near line {position} ({error})") from error
    return GroundTruthDefinition(values, num_frames, labelled)


def decode_regions(files: tuple[Path, ...], values: tuple[int, ...]) -> np.ndarray:
    (path,) = files
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"{path}: missing or not decodable as an image")
    if image.ndim == 3:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.int64)
        image = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    ordered = ([0] if 0 in values else []) + [v for v in values if v != 0]
    first_id = 0 if 0 in values else 1
    lookup = {value: first_id + position for position, value in enumerate(ordered)}
    labels = np.zeros(image.shape, np.uint8)
    unknown = []
    for value in np.unique(image).tolist():
        if value in lookup:
            labels[image == value] = lookup[value]
        else:
            unknown.append(value)
    if unknown:
        warnings.warn(f"{path}: values {unknown[:5]} are not regions of the Def.dat file; read as background",
                      stacklevel=2)
    return labels


class FBMS(SequenceCollection):
    """The shots of one FBMS-59 split (``Trainingset`` / ``Testset``, or ``train`` / ``test``) as lazy sequences."""

    def __init__(self, root: str | Path, split: str = "Trainingset", sequences: Sequence[str] | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.root = Path(root)
        self.split_root = self.root / SPLITS[split]
        if not self.split_root.is_dir():
            raise FileNotFoundError(f"FBMS split folder {self.split_root} does not exist")
        names = list(sequences) if sequences is not None else sorted(
            p.name for p in self.split_root.iterdir() if p.is_dir()
        )
        self._sequences = {name: self._build(name) for name in names}

    def _build(self, name: str) -> VideoSequence:
        folder = self.split_root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"FBMS sequence folder {folder} does not exist")
        frames = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".png", ".ppm")
                  and _FRAME_NUMBER.search(p.stem)]
        frames.sort(key=lambda p: int(_FRAME_NUMBER.search(p.stem).group(1)))
        truth = folder / "GroundTruth"
        definitions = sorted(truth.glob("*Def.dat")) if truth.is_dir() else []
        if len(definitions) != 1:
            raise FileNotFoundError(f"{truth}: expected one <seq>Def.dat ground-truth definition, found {definitions}")
        definition = read_definition(definitions[0])
        if definition.num_frames != len(frames):
            numbers = {int(_FRAME_NUMBER.search(p.stem).group(1)) for p in frames}
            gap = next((n for n in range(1, definition.num_frames + 1) if n not in numbers), None)
            raise FileNotFoundError(
                f"{definitions[0]} declares {definition.num_frames} frames but {folder} has {len(frames)}"
                + (f"; frame number {gap} is missing" if gap is not None else "")
            )
        annotations = {}
        for frame_number, file_name, input_name in definition.labelled:
            if not 0 <= frame_number < len(frames) or frames[frame_number].name != input_name:
                raise ValueError(
                    f"{definitions[0]}: labelled frame {frame_number} should be {input_name}, but that position holds "
                    f"{frames[frame_number].name if 0 <= frame_number < len(frames) else 'nothing'}"
                )
            if not (truth / file_name).is_file():
                raise FileNotFoundError(f"annotation {truth / file_name} listed in {definitions[0]} does not exist")
            annotations[frame_number] = truth / file_name
        values = tuple(definition.region_values)
        num_objects = len([v for v in values if v != 0])
        return VideoSequence(
            name,
            frames,
            annotations,
            object_ids=list(range(1, num_objects + 1)),
            decode_annotation=partial(decode_regions, values=values),
            annotation_dir=truth,
            metadata={"region_values": list(values)},
        )

    def _where(self) -> str:
        return str(self.split_root)
