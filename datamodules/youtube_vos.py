"""YouTube-VOS 2018 / 2019 read in the release layout (one root per year)::

    train/JPEGImages/<video>/00000.jpg 00005.jpg ...   frames sampled every 5th frame of the 30 fps video
    train/Annotations/<video>/00000.png ...            palette PNGs, every sampled frame, ids as in meta.json
    train/meta.json                                    {"videos": {<video>: {"objects": {"1": {"category": "person",
                                                       "frames": ["00000", "00005", ...]}}}}}
    valid/JPEGImages/<video>/...                       (also test/ for the 2018 / 2019 test phases)
    valid/Annotations/<video>/<frame>.png              only the frame where an object first appears, holding the
                                                       objects that appear there
    valid/meta.json                                    "frames": the frames to predict the object in (from its
                                                       first appearance on); "category" may be absent
    {train,valid}_all_frames/JPEGImages/<video>/...    every frame (optional download)

Objects can first appear after frame 0: `VideoSequence.first_appearance()` gives, per object, the frame of its
first annotation (from meta.json), and `initial_masks()` / `initial_boxes()` its mask or box there. Annotations
whose ids are not objects of the video in meta.json are errors naming the file, and so are a meta.json of another
shape (videos as a list, a non-integer object id), a frame named other than by its number, and, in train, a frame
that meta.json lists for an object but that has no annotation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datamodules.vos_io import SequenceCollection, VideoSequence

SPLITS = ("train", "valid", "test")


class YouTubeVOS(SequenceCollection):
    """The videos of one YouTube-VOS split as lazy `VideoSequence`s; index by position or name.

    `all_frames=True` reads frames from ``<split>_all_frames/JPEGImages`` (annotations stay on the sparse frames).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        year: int = 2019,
        all_frames: bool = False,
        videos: Sequence[str] | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if year not in (2018, 2019):
            raise ValueError(f"year must be 2018 or 2019, got {year!r}")
        self.root, self.split, self.year = Path(root), split, year
        split_root = self.root / split
        self.frames_root = (self.root / f"{split}_all_frames" if all_frames else split_root) / "JPEGImages"
        self.annotations_root = split_root / "Annotations"
        meta_path = split_root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"YouTube-VOS meta data {meta_path} does not exist; is {self.root} a release root?")
        try:
            self.meta = _checked_meta(json.loads(meta_path.read_text()), meta_path)
        except json.JSONDecodeError as error:
            raise ValueError(f"{meta_path}: not valid JSON ({error})") from error
        names = list(videos) if videos is not None else sorted(self.meta)
        unknown = [name for name in names if name not in self.meta]
        if unknown:
            raise KeyError(f"videos {unknown[:5]} are not in {meta_path}")
        self._sequences = {name: self._build(name, meta_path) for name in names}

    def _build(self, name: str, meta_path: Path) -> VideoSequence:
        frame_dir = self.frames_root / name
        if not frame_dir.is_dir():
            raise FileNotFoundError(f"video {name!r} of {meta_path} has no frame folder {frame_dir}")
        frames = {p.stem: p for p in sorted(frame_dir.glob("*.jpg"))}
        odd = next((p for p in frames.values() if not p.stem.isdigit()), None)
        if odd is not None:
            raise ValueError(
                f"{odd}: {odd.stem!r} is not a frame number; YouTube-VOS names frames 00000.jpg, 00005.jpg, ... "
                "(a copy of a frame? remove or rename it)"
            )
        annotations = {p.stem: p for p in sorted((self.annotations_root / name).glob("*.png"))}
        stray = [stem for stem in annotations if stem not in frames]
        if stray:
            raise FileNotFoundError(
                f"frame {frame_dir / stray[0]}.jpg is missing (its annotation {annotations[stray[0]]} exists)"
            )
        stems = list(frames)
        index_of = {stem: index for index, stem in enumerate(stems)}
        objects = self.meta[name].get("objects", {})
        object_ids = sorted(int(key) for key in objects)
        first_appearance = {}
        for object_id in object_ids:
            listed = objects[str(object_id)].get("frames", [])
            if not listed:
                continue
            first = listed[0]
            if first not in index_of:
                raise FileNotFoundError(
                    f"{meta_path}: object {object_id} of {name!r} starts at frame {first}, "
                    f"but frame {frame_dir / first}.jpg is missing"
                )
            if self.split != "test" and first not in annotations:
                raise FileNotFoundError(
                    f"object {object_id} of {name!r} first appears at frame {first} (meta.json) but its annotation "
                    f"{self.annotations_root / name / first}.png does not exist"
                )
            first_appearance[object_id] = index_of[first]
            if self.split == "train":
                # Train annotates every listed frame; a lost file would otherwise read as "not annotated".
                lost = next((stem for stem in listed if stem not in annotations), None)
                if lost is not None:
                    raise FileNotFoundError(
                        f"annotation {self.annotations_root / name / lost}.png does not exist, but frame {lost} is "
                        f"listed in {meta_path} for object {object_id} of {name!r}; restore it"
                    )
        categories = {object_id: objects[str(object_id)].get("category") for object_id in object_ids}
        return VideoSequence(
            name,
            list(frames.values()),
            {index_of[stem]: path for stem, path in annotations.items()},
            object_ids=object_ids,
            strict_ids=True,
            annotation_dir=self.annotations_root / name,
            first_appearance=first_appearance,
            metadata={"categories": categories, "year": self.year},
        )

    _kind = 'video'

    def _where(self) -> str:
        return str(self.root / self.split)


def _checked_meta(meta: Any, path: Path) -> dict:
    """``meta["videos"]``, checked to be {video: {"objects": {"<int>": {"frames": [str, ...], ...}}}}."""
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f'{path}: "videos" must map video names to their objects: {{"videos": {{"<video>": '
                         '{"objects": {"1": {"category": ..., "frames": ["00000", ...]}}}}}}')
    for name, video in videos.items():
        objects = video.get("objects", {}) if isinstance(video, dict) else None
        if not isinstance(objects, dict):
            raise ValueError(f'{path}: video {name!r} must be {{"objects": {{"<id>": {{...}}}}}}, got {video!r:.80}')
        for key, entry in objects.items():
            if not re.fullmatch(r"[1-9][0-9]*", key):
                raise ValueError(f"{path}: video {name!r} has object id {key!r}; object ids are integers 1, 2, ...")
            frames = entry.get("frames", []) if isinstance(entry, dict) else None
            if not isinstance(frames, list) or not all(isinstance(stem, str) for stem in frames):
                raise ValueError(
                    f'{path}: object {key!r} of video {name!r} must be {{"category": ..., "frames": ["00000", ...]}} '
                    f'with "frames" a list of frame names, got {entry!r:.80}'
                )
    return videos


def youtube_vos_datamodule(root: str | Path, year: int = 2019, **loader_options: Any):
    """`VOSDataModule` with YouTube-VOS train as training and valid as validation split."""
    from datamodules.davis import VOSDataModule

    return VOSDataModule(
        train=lambda: YouTubeVOS(root, "train", year), val=lambda: YouTubeVOS(root, "valid", year), **loader_options
    )
