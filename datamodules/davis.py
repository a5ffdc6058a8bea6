"""DAVIS 2016 and 2017 read in their release layouts, for the semi-supervised, box-initialised, unsupervised and
interactive tasks; plus the thin Lightning wrapper shared by every VOS reader.

DAVIS 2017 (``DAVIS-2017-trainval-480p.zip`` and friends, one root)::

    JPEGImages/{480p,Full-Resolution}/<seq>/00000.jpg ...        consecutive 5-digit frame numbers
    Annotations/{480p,Full-Resolution}/<seq>/00000.png ...       palette PNG: 0 background, 1..K objects, 255 void;
                                                                 test-dev / test-challenge: frame 0 only
    Annotations_unsupervised/{480p,Full-Resolution}/<seq>/...    DAVIS 2019 unsupervised re-annotation (train / val)
    ImageSets/2017/{train,val,test-dev,test-challenge}.txt        one sequence name per line
    ImageSets/2019/test-dev.txt                                   unsupervised test-dev (2019 challenge)
    Scribbles/<seq>/001.json ...                                  davis-interactive scribbles (train / val)

DAVIS 2016 (``DAVIS-data.zip``)::

    JPEGImages/{480p,1080p}/<seq>/00000.jpg ...
    Annotations/{480p,1080p}/<seq>/00000.png ...                 binary 0/255 (some are mode LA), every frame
    Annotations/db_info.yml                                       sequences: name, attributes, num_frames,
                                                                  set (training | test = train | val)
    ImageSets/{480p,1080p}/{train,val,trainval}.txt               "/JPEGImages/480p/<seq>/00000.jpg
                                                                  /Annotations/480p/<seq>/00000.png" per line

Tasks (what `DAVIS(..., task=...)` checks and which annotations it reads):

* ``semi-supervised``: ``Annotations``; the frame-0 annotation must exist; objects are 1..(largest id in frame 0)
  and an annotation with a larger id is an error naming the file (the official evaluation stops on such ids).
* ``box``: as semi-supervised; the input is `VideoSequence.first_frame_boxes()` (one box per object, from the masks).
* ``unsupervised``: ``Annotations_unsupervised`` for 2017 (``Annotations`` for 2016, whose single foreground is the
  unsupervised target); ids are not checked.
* ``interactive``: ``Annotations`` plus ``Scribbles``; a scribble folder for a sequence that has neither frames nor
  annotations is an error naming it. Sequences may lack frames (the davis-interactive test data ships annotations
  and scribbles only for blackswan): their frame names then come from the annotations and `frame(i)` names the
  missing file.

Every task: a frame or annotation whose name is not a frame number (``00003 (copy).jpg``), an entry that cannot be
read, and a hole in the annotated frames (DAVIS 2016: any frame without an annotation) are errors naming the file,
never a skipped frame or an unannotated one. So is a first annotated frame whose largest id leaves most of 1..K
absent (see `datamodules.vos_io.objects_in_first_frame`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml

from datamodules.vos_io import SequenceCollection, VideoSequence

TASKS = ("semi-supervised", "box", "unsupervised", "interactive")
_FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
_SCRIBBLE_NAME = re.compile(r"^(\d{3})\.json$")


def _image_stems(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Frame number -> file; a name that is not a frame number (``00003 (copy).jpg``) or an entry that cannot be read
    (a broken link, a folder) is an error naming it, since skipping it would hide a frame or an annotation."""
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in suffixes:
            continue
        if not path.stem.isdigit():
            raise ValueError(
                f"{path}: {path.stem!r} is not a frame number; DAVIS names frames and annotations 00000, 00001, ... "
                "(a copy of a frame? remove or rename it)"
            )
        if not path.is_file() or not os.access(path, os.R_OK):
            raise FileNotFoundError(f"{path} is not a readable file (a broken link or a folder?); restore it")
        found[path.stem] = path
    return found


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


class DAVIS(SequenceCollection):
    """The sequences of one DAVIS split, each a lazily decoded `VideoSequence`; index by position or by name.

    `split=None` (or a root without ``ImageSets``) takes every sequence folder found. `sequences` restricts to the
    given names (each must exist on disk).
    """

    def __init__(
        self,
        root: str | Path,
        year: int = 2017,
        split: str | None = "val",
        task: str = "semi-supervised",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"DAVIS root {self.root} does not exist")
        if year not in (2016, 2017):
            raise ValueError(f"year must be 2016 or 2017, got {year!r}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.year, self.split, self.task, self.resolution = year, split, task, resolution
        self.frames_root = self.root / "JPEGImages" / resolution
        annotation_folder = "Annotations_unsupervised" if task == "unsupervised" and year == 2017 else "Annotations"
        self.annotations_root = self.root / annotation_folder / resolution
        self.scribbles_root = self.root / "Scribbles"
        self.db_info = self._read_db_info()
        on_disk = sorted(set(_subfolders(self.frames_root)) | set(_subfolders(self.annotations_root)))
        if not on_disk:
            raise FileNotFoundError(
                f"{self.root}: neither {self.frames_root} nor {self.annotations_root} holds sequence folders; "
                f"is this a DAVIS {year} root at resolution {resolution!r}?"
            )
        names = list(sequences) if sequences is not None else self._split_names(on_disk)
        for name in names:
            if name not in on_disk:
                raise FileNotFoundError(
                    f"sequence {name!r} has no folder {self.frames_root / name} or {self.annotations_root / name}"
                )
        scribble_files = self._scribble_files(on_disk)
        self._sequences = {name: self._build_sequence(name, scribble_files.get(name, {})) for name in names}

    # -- discovery -------------------------------------------------------------------------------------------------

    def _read_db_info(self) -> dict[str, dict] | None:
        path = self.root / "Annotations" / "db_info.yml"
        if not path.is_file():
            return None
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(content, dict) or not isinstance(content.get("sequences"), list):
            raise ValueError(f"{path}: expected a mapping with a 'sequences' list")
        return {entry["name"]: entry for entry in content["sequences"]}

    def _split_names(self, on_disk: list[str]) -> list[str]:
        if self.split is None:
            return on_disk
        parts = ["train", "val"] if self.split == "trainval" and self.year == 2017 else [self.split]
        names: list[str] = []
        for part in parts:
            names.extend(name for name in self._names_in_image_set(part, on_disk) if name not in names)
        return names

    def _names_in_image_set(self, split: str, on_disk: list[str]) -> list[str]:
        folder = self.root / "ImageSets" / ("2017" if self.year == 2017 else self.resolution)
        path = folder / f"{split}.txt"
        if path.is_file():
            names: list[str] = []
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                # 2016 lists frame/annotation path pairs, 2017 bare sequence names.
                name = line.split()[0].strip("/").split("/")[-2] if self.year == 2016 else line.strip()
                if name not in names:
                    names.append(name)
            return names
        if self.year == 2016 and self.db_info is not None:
            wanted = {"train": "training", "val": "test"}.get(split)
            if wanted is None:
                raise ValueError(f"DAVIS 2016 split must be train, val or trainval, got {split!r}")
            return [n for n, entry in self.db_info.items() if entry.get("set") == wanted and n in on_disk]
        if folder.is_dir():
            available = sorted(p.stem for p in folder.glob("*.txt"))
            raise FileNotFoundError(f"no split file {path}; available splits: {available}")
        return on_disk

    def _scribble_files(self, on_disk: list[str]) -> dict[str, dict[int, Path]]:
        found: dict[str, dict[int, Path]] = {}
        for name in _subfolders(self.scribbles_root):
            files = {}
            for path in sorted((self.scribbles_root / name).iterdir()):
                match = _SCRIBBLE_NAME.match(path.name)
                if match:
                    files[int(match.group(1))] = path
            if files and name not in on_disk and self.task == "interactive":
                raise ValueError(
                    f"scribble file {next(iter(files.values()))} is for sequence {name!r}, which has no folder in "
                    f"{self.frames_root} or {self.annotations_root}"
                )
            found[name] = files
        return found

    def _build_sequence(self, name: str, scribble_files: dict[int, Path]) -> VideoSequence:
        frames = _image_stems(self.frames_root / name, _FRAME_SUFFIXES)
        annotation_dir = self.annotations_root / name
        annotations = _image_stems(annotation_dir, (".png",))
        if frames:
            stray = [stem for stem in annotations if stem not in frames]
            if stray:
                raise FileNotFoundError(
                    f"frame {self.frames_root / name / stray[0]}.jpg is missing "
                    f"(its annotation {annotations[stray[0]]} exists)"
                )
            stems = list(frames)
            frame_paths = list(frames.values())
        else:
            stems = list(annotations)
            frame_paths = [self.frames_root / name / f"{stem}.jpg" for stem in stems]
        self._check_consecutive(name, stems)
        index_of = {stem: index for index, stem in enumerate(stems)}
        self._check_annotated_range(name, stems, annotations, annotation_dir, frames_exist=bool(frames))
        if self.task in ("semi-supervised", "box") and stems and stems[0] not in annotations:
            raise FileNotFoundError(
                f"the {self.task} task needs the first-frame annotation {annotation_dir / stems[0]}.png of "
                f"{name!r}; it does not exist"
            )
        return VideoSequence(
            name,
            frame_paths,
            {index_of[stem]: path for stem, path in annotations.items()},
            frame_names=stems,
            strict_ids=self.task in ("semi-supervised", "box", "interactive"),
            annotation_dir=annotation_dir,
            scribble_files=scribble_files,
            metadata=dict(self.db_info.get(name, {})) if self.db_info else {},
        )

    def _check_annotated_range(
        self, name: str, stems: list[str], annotations: dict[str, Path], folder: Path, frames_exist: bool
    ) -> None:
        # A missing annotation would read as "not annotated": DAVIS annotates a run of frames without holes (all of
        # them in 2016 and train / val, frame 0 only in test-dev; the shared samples stop early, never skip).
        if not annotations:
            return
        indices = [index for index, stem in enumerate(stems) if stem in annotations]
        if self.year == 2016 and frames_exist:
            first, last, rule = 0, len(stems) - 1, "DAVIS 2016 annotates every frame"
        else:
            first, last, rule = indices[0], indices[-1], f"the annotations of {name!r} run from frame {indices[0]}"
        if len(indices) != last - first + 1:
            missing = next(stems[i] for i in range(first, last + 1) if stems[i] not in annotations)
            raise FileNotFoundError(
                f"annotation {folder / missing}.png is missing: {rule} to frame {last} without a gap; restore it"
            )

    def _check_consecutive(self, name: str, stems: list[str]) -> None:
        folder = self.frames_root / name
        numbers = [int(stem) for stem in stems]
        for expected, number in enumerate(numbers):
            if number != expected:
                raise FileNotFoundError(f"{name}: frame {folder / f'{expected:05d}'}.jpg is missing (found {number})")
        if self.db_info and name in self.db_info and (self.frames_root / name).is_dir():
            expected_count = int(self.db_info[name].get("num_frames", len(stems)))
            if expected_count != len(stems):
                raise FileNotFoundError(
                    f"{folder}: db_info.yml lists {expected_count} frames for {name!r}, the folder has {len(stems)} "
                    f"(first missing: {folder / f'{len(stems):05d}'}.jpg)"
                )

    # -- access ----------------------------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.root} ({self.split or 'all'})"

    def scribble(self, sequence: str, number: int = 1) -> dict:
        """The davis-interactive scribble dict of `sequence`; an unknown sequence is a KeyError naming the root."""
        return self[sequence].scribble(number)


class ClipDataset(torch.utils.data.Dataset):
    """Fixed-length windows of consecutive annotated frames, decoded on access, for training.

    Item: {"frames": float (T, 3, H, W) in 0..1, "masks": int64 (T, H, W), "sequence": name, "frame_indices": (T,)}.
    Only windows whose frames are all annotated are kept, so sparse ground truth (FBMS, YouTube-VOS valid, DAVIS
    test-dev) yields no clip rather than a broken one.
    """

    def __init__(self, sequences: Sequence[VideoSequence], clip_length: int, stride: int = 1):
        if clip_length < 1 or stride < 1:
            raise ValueError(f"clip_length and stride must be >= 1, got {clip_length} and {stride}")
        self.sequences = list(sequences)
        self.windows: list[tuple[int, list[int]]] = []
        for sequence_index, sequence in enumerate(self.sequences):
            annotated = set(sequence.annotated_frames)
            for start in range(0, len(sequence) - clip_length + 1, stride):
                indices = list(range(start, start + clip_length))
                if annotated.issuperset(indices):
                    self.windows.append((sequence_index, indices))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int) -> dict[str, Any]:
        sequence_index, indices = self.windows[item]
        sequence = self.sequences[sequence_index]
        frames = np.stack([sequence.frame(i) for i in indices])
        masks = np.stack([sequence.require_mask(i) for i in indices])
        return {
            "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0),
            "masks": torch.from_numpy(masks.astype(np.int64)),
            "sequence": sequence.name,
            "frame_indices": torch.tensor(indices),
        }


def _keep_as_list(batch: list) -> list:
    return batch


SequenceFactory = Callable[[], Sequence[VideoSequence]]


class VOSDataModule(L.LightningDataModule):
    """Thin Lightning wrapper over any VOS reader.

    Without `clip_length` a batch is a list of `batch_size` lazy `VideoSequence`s (the RL loops walk them frame by
    frame); with it, `ClipDataset` windows stacked by the default collate (frames of one size). `train`, `val`,
    `test` are zero-argument callables returning sequences, so readers are only built in `setup`.
    """

    def __init__(
        self,
        train: SequenceFactory | None = None,
        val: SequenceFactory | None = None,
        test: SequenceFactory | None = None,
        clip_length: int | None = None,
        clip_stride: int = 1,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self._factories = {"train": train, "val": val, "test": test}
        self.clip_length, self.clip_stride = clip_length, clip_stride
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.sequences: dict[str, list[VideoSequence]] = {}

    def setup(self, stage: str | None = None) -> None:
        for split, factory in self._factories.items():
            if factory is not None and split not in self.sequences:
                self.sequences[split] = list(factory())

    def _loader(self, split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        if split not in self.sequences:
            raise RuntimeError(f"no {split} sequences: pass `{split}=` to the data module and call setup() first")
        generator = torch.Generator().manual_seed(self.seed)
        if self.clip_length is None:
            dataset: Any = self.sequences[split]
            collate = _keep_as_list
        else:
            dataset, collate = ClipDataset(self.sequences[split], self.clip_length, self.clip_stride), None
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate,
            num_workers=self.num_workers, generator=generator,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> torch.utils.data.DataLoader:
        return self._loader("test", shuffle=False)


class DAVISDataModule(VOSDataModule):
    """`VOSDataModule` over `DAVIS(root, year, split, task, resolution)` for the train / val (/ test) splits."""

    def __init__(
        self,
        root: str | Path,
        year: int = 2017,
        task: str = "semi-supervised",
        resolution: str = "480p",
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        **loader_options: Any,
    ):
        def reader(split: str | None) -> SequenceFactory | None:
            if split is None:
                return None
            return lambda: DAVIS(root, year=year, split=split, task=task, resolution=resolution)

        super().__init__(train=reader(train_split), val=reader(val_split), test=reader(test_split), **loader_options)
