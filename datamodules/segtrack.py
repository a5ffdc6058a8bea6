"""SegTrack v2 read in the release layout (``SegTrackv2.zip``)::

    JPEGImages/<seq>/<frame>.png|.bmp|.jpg     extensions differ between sequences
    GroundTruth/<seq>/<frame>.png|.bmp         single-object sequences: one binary mask per frame
    GroundTruth/<seq>/<k>/<frame>.png|.bmp     multi-object sequences: one folder per object, k = 1..K
    ImageSets/all.txt                          one "*<seq>" line per sequence
    ImageSets/<seq>.txt                        first line the folder ("<seq>/"), then one frame name per line

Per-object binary masks (foreground = any non-zero grey value) are merged into one id map, object k -> id k; where
two objects' masks overlap, the higher id wins. Every frame is annotated: a missing ``GroundTruth/<seq>`` folder, or a
frame without its mask for some object, is an error naming the missing file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from datamodules.vos_io import SequenceCollection, VideoSequence

_IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg")


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES}


def merge_object_masks(files: tuple[Path, ...]) -> np.ndarray:
    """One id map from per-object binary masks: the k-th file is object k."""
    labels = None
    for object_id, path in enumerate(files, start=1):
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise ValueError(f"{path}: missing or not decodable as an image")
        if labels is None:
            labels = np.zeros(grey.shape, np.uint8)
        elif grey.shape != labels.shape:
            raise ValueError(f"{path} is {grey.shape} but {files[0]} is {labels.shape}: object masks must agree")
        labels[grey > 0] = object_id
    return labels


class SegTrackV2(SequenceCollection):
    """The SegTrack v2 sequences as lazy `VideoSequence`s (index by position or name)."""

    def __init__(self, root: str | Path, sequences: Sequence[str] | None = None):
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"{self.root / 'JPEGImages'} does not exist; is {self.root} a SegTrack v2 root?")
        listing = self.root / "ImageSets" / "all.txt"
        if sequences is not None:
            names = list(sequences)
        elif listing.is_file():
            names = [line.strip().lstrip("*") for line in listing.read_text().splitlines() if line.strip()]
        else:
            names = sorted(p.name for p in (self.root / "JPEGImages").iterdir() if p.is_dir())
        self._sequences = {name: self._build(name) for name in names}

    def _frame_list(self, name: str) -> tuple[str, list[str]]:
        image_set = self.root / "ImageSets" / f"{name}.txt"
        if not image_set.is_file():
            folder = self.root / "JPEGImages" / name
            if not folder.is_dir():
                raise FileNotFoundError(f"sequence {name!r}: neither {image_set} nor {folder} exists")
            return name, list(_by_stem(folder))
        lines = [line.strip() for line in image_set.read_text().splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"{image_set} is empty; expected the folder name, then one frame name per line")
        return lines[0].strip("/"), lines[1:]

    def _build(self, name: str) -> VideoSequence:
        prefix, stems = self._frame_list(name)
        frame_folder = self.root / "JPEGImages" / prefix
        frames = _by_stem(frame_folder)
        missing = [stem for stem in stems if stem not in frames]
        if missing:
            raise FileNotFoundError(f"sequence {name!r}: frame {frame_folder / missing[0]}.* is missing")
        truth = self.root / "GroundTruth" / prefix
        if not truth.is_dir():
            raise FileNotFoundError(
                f"sequence {name!r}: ground-truth folder {truth} does not exist; SegTrack v2 annotates every frame "
                f"(GroundTruth/{prefix}/ or GroundTruth/{prefix}/<k>/ per object)"
            )
        object_folders = sorted((p for p in truth.iterdir() if p.is_dir() and p.name.isdigit()),
                                key=lambda p: int(p.name))
        if object_folders and [int(p.name) for p in object_folders] != list(range(1, len(object_folders) + 1)):
            raise ValueError(f"{truth}: object folders must be named 1..K, found {[p.name for p in object_folders]}")
        folders = object_folders or [truth]
        masks = [_by_stem(folder) for folder in folders]
        annotations = {}
        for index, stem in enumerate(stems):
            files = [per_object.get(stem) for per_object in masks]
            if any(f is None for f in files):
                absent = folders[files.index(None)] / stem
                raise FileNotFoundError(f"sequence {name!r}: annotation {absent}.* is missing for frame {stem}")
            annotations[index] = tuple(files)
        return VideoSequence(
            name,
            [frames[stem] for stem in stems],
            annotations,
            frame_names=stems,
            object_ids=list(range(1, len(folders) + 1)),
            decode_annotation=merge_object_masks,
            annotation_dir=folders[0],
        )

    def _where(self) -> str:
        return str(self.root)
