"""Image I/O shared by the video-object-segmentation readers, writers, metrics and methods.

Label PNGs hold one object id per pixel: 0 background, 1..K objects, 255 void (DAVIS 2017 convention). They come in
several encodings across benchmark releases, and `read_label_png` accepts all of them:

* mode ``P`` (DAVIS 2017, YouTube-VOS): the palette index is the id; the palette colours are ignored.
* mode ``L`` / ``LA`` / ``I`` (DAVIS 2016, e.g. ``bear/00077.png`` is ``LA``; SegTrack; re-saved masks): the grey value
  is the id, except that a mask whose only values are 0 and 255 is a *binary* mask (DAVIS 2016 convention) and is
  returned as 0/1. The alpha channel of ``LA`` is ignored. More than `MAX_GREY_IDS` grey levels besides 0 and 255 is
  an error: that is an anti-aliased or JPEG-compressed binary mask, not a map of ids.
* mode ``RGB`` / ``RGBA``: grey images (R == G == B) are read as above; coloured images are mapped back through the
  DAVIS palette, and a colour outside it is an error.

Frames are read with `datamodules.image_io.read_rgb` (OpenCV, returned as RGB).

Besides the pixel I/O this module holds what every VOS reader shares: `VideoSequence` (a lazily decoded video with
sparse annotations), `SequenceCollection` (a benchmark split's sequences by position or name), davis-interactive scribble JSON I/O and per-object boxes. It imports no torch, so metrics load
it cheaply; the Lightning wrapper lives in `datamodules.davis`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datamodules.image_io import check_label_map, open_label_image, read_rgb

VOID_LABEL = 255


@lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    # The PASCAL VOC colour map, which DAVIS annotations use (id 1 = (128, 0, 0), id 255 = (224, 224, 192)):
    # the bits of the id are spread over the high bits of R, G and B, three at a time.
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        red = green = blue = 0
        bits = label
        for shift in range(7, -1, -1):
            red |= ((bits >> 0) & 1) << shift
            green |= ((bits >> 1) & 1) << shift
            blue |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette[label] = (red, green, blue)
    palette.setflags(write=False)
    return palette


def davis_palette() -> np.ndarray:
    """The 256×3 uint8 colour palette of DAVIS annotation PNGs (read-only)."""
    return _palette()


# More grey levels than this between 0 and 255 are the smoothed edge of a binary mask, not object ids: no VOS
# benchmark has that many objects in one frame (the unsupervised task caps proposals at 20).
MAX_GREY_IDS = 20


def _grey_to_labels(grey: np.ndarray, path: Path) -> np.ndarray:
    low, high = int(grey.min(initial=0)), int(grey.max(initial=0))
    if low < 0 or high > 255:
        raise ValueError(f"{path}: grey values {low}..{high} do not fit 8-bit object ids")
    values = set(np.unique(grey).tolist())
    if values == {0, 255} or values == {255}:
        return (grey == 255).astype(np.uint8)
    between = len(values - {0, 255})
    if between > MAX_GREY_IDS:
        raise ValueError(
            f"{path}: this greyscale mask has {between} grey levels between 0 and 255, so it looks anti-aliased or "
            "lossy-compressed rather than a map of object ids; threshold it (values above 127 become 255) and save "
            "it as PNG, or save the object ids as a palette PNG"
        )
    return grey.astype(np.uint8)


def objects_in_first_frame(labels: np.ndarray, path: Path | str) -> int:
    """Number of objects K of a sequence whose first annotated frame is `labels`: ids 1..K, K the largest non-void id
    (DAVIS 2017 convention, so an id missing from that frame is still an object). A K that leaves more ids absent
    than present is an error naming `path`: a stray pixel of id 200 would otherwise make 200 objects."""
    present = np.unique(labels[labels != VOID_LABEL])
    present = present[present > 0]
    count = int(present[-1]) if present.size else 0
    if count - present.size > present.size:
        shown = ", ".join(str(i) for i in present[:8].tolist()) + (", ..." if present.size > 8 else "")
        raise ValueError(
            f"{path}: the first annotated frame holds ids {shown}, so its largest id {count} would make {count} "
            f"objects of which {count - present.size} do not appear; a stray id or a mask that is not a map of "
            "ids? renumber the objects 1..K (0 background, 255 void)"
        )
    return count


def _colours_to_labels(rgb: np.ndarray, path: Path) -> np.ndarray:
    palette = davis_palette().astype(np.int64)
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    label_of_code = {int(code): label for label, code in enumerate(palette_codes)}
    unknown = [int(code) for code in unique_codes if int(code) not in label_of_code]
    if unknown:
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:3]]
        raise ValueError(
            f"{path}: RGB label image has colours {colours} that are not in the DAVIS palette; "
            "save labels as a palette (mode P) or greyscale PNG"
        )
    labels = np.array([label_of_code[int(code)] for code in unique_codes], dtype=np.uint8)
    return labels[inverse.reshape(codes.shape)]


def read_label_png(path: str | Path) -> np.ndarray:
    """Object ids of a label image as an (H, W) uint8 array (0 background, 255 void); see the module docstring."""
    path = Path(path)
    return labels_from_image(*open_label_image(path), path)


def labels_from_image(kind: str, pixels: np.ndarray, path: Path) -> np.ndarray:
    """What `read_label_png` makes of the `open_label_image` result ``(kind, pixels)`` of `path`."""
    # Unlike instance labels, VOS ids are 8-bit, a 0/255 grey mask is binary and colours follow the DAVIS palette.
    if kind == "index":
        return pixels.astype(np.uint8)
    if kind == "grey":
        return _grey_to_labels(pixels, path)
    return _colours_to_labels(pixels, path)


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write (H, W) integer object ids in 0..255 as a DAVIS-palette (mode P) PNG; parent folders are created."""
    path = Path(path)
    labels = check_label_map(path, labels, max_id=255)
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def frame_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image from its header alone (no pixel decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:
        raise ValueError(f"{path}: cannot decode as an image ({error})") from error
    return height, width


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight float64 (x0, y0, x1, y1) box of a boolean mask in pixel-edge coordinates: x1 / y1 are one past the last
    column / row (so x1 - x0 is the width, as `cv2.boundingRect` gives); None for an empty mask."""
    rows, columns = np.nonzero(mask)
    if not rows.size:
        return None
    return np.array([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1], dtype=np.float64)


def boxes_from_mask(labels: np.ndarray, object_ids: Iterable[int]) -> dict[int, np.ndarray]:
    """`mask_box` of each object present in `labels`; objects with no pixel are left out."""
    boxes = {int(object_id): mask_box(labels == object_id) for object_id in object_ids}
    return {object_id: box for object_id, box in boxes.items() if box is not None}


AnnotationDecoder = Callable[[tuple[Path, ...]], np.ndarray]


def _decode_single_png(files: tuple[Path, ...]) -> np.ndarray:
    (path,) = files
    return read_label_png(path)


class VideoSequence:
    """A lazily decoded video with sparse object annotations; nothing is read until a frame or mask is asked for.

    `frame(i)` is the RGB frame i, `mask(i)` its (H, W) uint8 object ids (0 background, 255 void) or None where frame
    i is not annotated. `object_ids` are the objects of the sequence: given by the reader (meta data, folders) or, when
    not given, 1..(largest id in the first annotated frame), the DAVIS 2017 convention under which an id absent from
    that frame is still an object (`objects_in_first_frame`, which refuses a largest id that leaves most ids absent).
    With `strict_ids`, an annotation holding an id outside `object_ids` is an error (the official DAVIS tool stops on
    such ids in the semi-supervised task).
    """

    def __init__(
        self,
        name: str,
        frame_paths: Sequence[Path],
        annotation_files: Mapping[int, Path | tuple[Path, ...]] | None = None,
        *,
        frame_names: Sequence[str] | None = None,
        object_ids: Sequence[int] | None = None,
        strict_ids: bool = False,
        decode_annotation: AnnotationDecoder = _decode_single_png,
        annotation_dir: Path | None = None,
        first_appearance: Mapping[int, int] | None = None,
        scribble_files: Mapping[int, Path] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.name = name
        self.frame_paths = [Path(path) for path in frame_paths]
        self.frame_names = list(frame_names) if frame_names is not None else [p.stem for p in self.frame_paths]
        if len(self.frame_names) != len(self.frame_paths):
            raise ValueError(f"{name}: {len(self.frame_names)} frame names for {len(self.frame_paths)} frames")
        self.annotation_files = {
            int(index): (files if isinstance(files, tuple) else (Path(files),))
            for index, files in sorted((annotation_files or {}).items())
        }
        for index, files in self.annotation_files.items():
            if not 0 <= index < len(self.frame_paths):
                raise ValueError(f"annotation {files[0]} belongs to frame {index}, but {name} has {len(self)} frames")
        self._object_ids = tuple(int(i) for i in object_ids) if object_ids is not None else None
        self.strict_ids = strict_ids
        self._decode_annotation = decode_annotation
        self.annotation_dir = annotation_dir
        self._first_appearance = dict(first_appearance) if first_appearance is not None else None
        self.scribble_files = dict(sorted((scribble_files or {}).items()))
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return (
            f"VideoSequence({self.name!r}, frames={len(self)}, annotated={len(self.annotation_files)}, "
            f"objects={list(self.object_ids)})"
        )

    def __len__(self) -> int:
        return len(self.frame_paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.frame(index), self.mask(index)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        return (self[index] for index in range(len(self)))

    def _check_index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: frame index {index} out of range for {len(self)} frames")
        return index % len(self)

    @property
    def annotated_frames(self) -> list[int]:
        """Indices of the frames that have an annotation, ascending."""
        return list(self.annotation_files)

    def frame(self, index: int) -> np.ndarray:
        path = self.frame_paths[self._check_index(index)]
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: frame {path} is missing")
        return read_rgb(path)

    def frame_size(self, index: int = 0) -> tuple[int, int]:
        """(H, W) of frame `index`, read from the file header."""
        path = self.frame_paths[self._check_index(index)]
        if not path.is_file():
            raise FileNotFoundError(f"{self.name}: frame {path} is missing")
        return frame_size(path)

    def has_mask(self, index: int) -> bool:
        return self._check_index(index) in self.annotation_files

    def mask(self, index: int) -> np.ndarray | None:
        index = self._check_index(index)
        files = self.annotation_files.get(index)
        if files is None:
            return None
        labels = self._decode_annotation(files)
        frame_path = self.frame_paths[index]
        if frame_path.is_file():
            expected = frame_size(frame_path)
            if labels.shape != expected:
                raise ValueError(
                    f"annotation {files[0]} is {labels.shape[0]}x{labels.shape[1]} (HxW) but frame {frame_path} is "
                    f"{expected[0]}x{expected[1]}; frames and annotations must come from the same resolution folder"
                )
        if self.strict_ids:
            self._check_ids(labels, files[0])
        return labels

    def require_mask(self, index: int) -> np.ndarray:
        """`mask(index)`, raising a FileNotFoundError that names the expected file where it is not annotated."""
        labels = self.mask(index)
        if labels is None:
            where = self.annotation_dir / self.frame_names[index % len(self)] if self.annotation_dir else "on disk"
            raise FileNotFoundError(
                f"{self.name}: frame {index} ({self.frame_names[index % len(self)]}) has no annotation "
                f"(expected {where}.*)"
            )
        return labels

    def _check_ids(self, labels: np.ndarray, path: Path) -> None:
        present = set(np.unique(labels).tolist()) - {0, VOID_LABEL}
        unknown = sorted(present - set(self.object_ids))
        if unknown:
            raise ValueError(
                f"annotation {path} holds object ids {unknown} that are not objects of sequence {self.name!r} "
                f"(objects {list(self.object_ids)}, from its first annotated frame / meta data)"
            )

    @property
    def object_ids(self) -> tuple[int, ...]:
        if self._object_ids is None:
            if not self.annotation_files:
                self._object_ids = ()
            else:
                files = self.annotation_files[self.annotated_frames[0]]
                count = objects_in_first_frame(self._decode_annotation(files), files[0])
                self._object_ids = tuple(range(1, count + 1))
        return self._object_ids

    def first_frame_mask(self) -> np.ndarray:
        """The annotation of frame 0 (semi-supervised input); a missing one is an error naming the expected file."""
        return self.require_mask(0)

    def first_frame_boxes(self) -> dict[int, np.ndarray]:
        """Per-object (x0, y0, x1, y1) boxes of the frame-0 annotation (box-initialised input), as
        `boxes_from_mask` gives them."""
        return boxes_from_mask(self.first_frame_mask(), self.object_ids)

    def first_appearance(self) -> dict[int, int]:
        """Frame index where each object is first annotated (YouTube-VOS objects may enter after frame 0)."""
        if self._first_appearance is None:
            found: dict[int, int] = {}
            for index in self.annotated_frames:
                present = set(np.unique(self.mask(index)).tolist())
                for object_id in self.object_ids:
                    if object_id in present and object_id not in found:
                        found[object_id] = index
                if len(found) == len(self.object_ids):
                    break
            self._first_appearance = found
        return dict(self._first_appearance)

    def initial_masks(self) -> dict[int, tuple[int, np.ndarray]]:
        """For each object, (frame index, boolean mask) at its first annotated appearance."""
        result = {}
        for object_id, index in self.first_appearance().items():
            result[object_id] = (index, self.require_mask(index) == object_id)
        return result

    def initial_boxes(self) -> dict[int, tuple[int, np.ndarray]]:
        """For each object, (frame index, box) at its first annotated appearance; boxes as in `boxes_from_mask`."""
        return {
            object_id: (index, boxes_from_mask(mask.astype(np.uint8), [1])[1])
            for object_id, (index, mask) in self.initial_masks().items()
            if mask.any()
        }

    def scribble(self, number: int = 1) -> dict:
        """The davis-interactive scribble dict `Scribbles/<seq>/<number:03d>.json`, checked against this sequence."""
        if number not in self.scribble_files:
            raise FileNotFoundError(
                f"{self.name}: no scribble file number {number} (available: {sorted(self.scribble_files)})"
            )
        return read_scribbles(self.scribble_files[number], sequence=self.name, num_frames=len(self))


class SequenceCollection(Sequence[VideoSequence]):
    """The sequences of one benchmark split, by position (in name order) or by name, and iterable.

    Subclasses fill `self._sequences` (name -> `VideoSequence`) and say in `_where()` where they read it from, which
    the KeyError of an unknown name quotes.
    """

    _sequences: dict[str, VideoSequence]
    _kind = "sequence"

    def _where(self) -> str:
        raise NotImplementedError

    @property
    def names(self) -> list[str]:
        return list(self._sequences)

    def __len__(self) -> int:
        return len(self._sequences)

    def __getitem__(self, key: int | str) -> VideoSequence:
        if isinstance(key, str):
            if key not in self._sequences:
                shown = ", ".join(self.names[:20]) + (f" and {len(self) - 20} more" if len(self) > 20 else "")
                raise KeyError(f"no {self._kind} {key!r} in {self._where()}; have {shown or 'none'}")
            return self._sequences[key]
        return list(self._sequences.values())[key]

    def __iter__(self) -> Iterator[VideoSequence]:
        return iter(self._sequences.values())


def read_scribbles(path: str | Path, sequence: str | None = None, num_frames: int | None = None) -> dict:
    """Load a davis-interactive scribble JSON: {"sequence": str, "scribbles": [[{"path": [[x, y], ...] (x, y in
    0..1 of width / height), "object_id": int, "start_time": float, "end_time": float}, ...] per frame]}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scribble file {path} does not exist")
    try:
        scribbles = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(scribbles, dict) or not isinstance(scribbles.get("scribbles"), list):
        raise ValueError(f"{path}: a scribble file is a JSON object with a 'scribbles' list (one entry per frame)")
    if sequence is not None and scribbles.get("sequence", sequence) != sequence:
        raise ValueError(f"{path}: scribbles are for sequence {scribbles['sequence']!r}, not {sequence!r}")
    if num_frames is not None and len(scribbles["scribbles"]) != num_frames:
        raise ValueError(
            f"{path}: scribbles cover {len(scribbles['scribbles'])} frames but the sequence has {num_frames}"
        )
    for frame_scribbles in scribbles["scribbles"]:
        for stroke in frame_scribbles:
            if not {"path", "object_id"} <= set(stroke):
                raise ValueError(f"{path}: every scribble needs 'path' and 'object_id', got keys {sorted(stroke)}")
    return scribbles


def write_scribbles(path: str | Path, scribbles: Mapping[str, Any]) -> None:
    """Write a davis-interactive scribble dict as JSON (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scribbles))

