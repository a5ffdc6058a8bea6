"""Frames with class-agnostic instance masks, from every real source under `../shared/realdata` plus synthetic VOS
frames, for training and measuring the zoo's instance segmenter (`recipes.segmenter_vos`).

Sources (each read in its benchmark's own layout, see `../shared/realdata/MANIFEST.md`):
- ``davis2016``: DAVIS 2016 480p, one binary object per frame, every frame annotated;
- ``davis2017``: DAVIS 2017 palette annotations (ids 1..254 are objects, 255 void counts as background);
- ``coco128``: COCO128-seg YOLO polygon labels (class ignored: every polygon is an object);
- ``cvppp``: CVPPP A1 leaf label PNGs (every leaf an object);
- ``synthetic``: `datamodules.synthetic_vos.write_davis2017` frames (multi-object, textured).

Hold-out is by whole sequence (or image): the DAVIS 2016 ``val`` sequences (and their DAVIS 2017 copies, e.g.
blackswan) never enter training, so the VOS methods' checks on them stay honest; `held_out_split` adds a fixed share
of the DAVIS 2017 sequences and COCO images for a multi-object measurement.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning.pytorch as L
import numpy as np
import torch

from datamodules.image_io import read_rgb

SOURCES = ("davis2016", "davis2017", "coco128", "cvppp", "synthetic")
MIN_INSTANCE_PIXELS = 16


@dataclass(frozen=True)
class InstanceFrame:
    source: str
    group: str  # the unit of hold-out: a sequence, or an image where there is no video
    image: Path
    labels: Path

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        """The RGB frame and its instance masks (K, H, W) bool, empty and tiny instances dropped."""
        rgb = read_rgb(self.image)
        if self.source == "coco128":
            masks = coco_polygon_masks(self.labels, rgb.shape[:2])
        else:
            if self.source == "cvppp":
                from datamodules.instance_io import read_label_png
            else:
                from datamodules.vos_io import read_label_png
            labels = read_label_png(self.labels)
            if labels.shape != rgb.shape[:2]:
                raise ValueError(f"{self.labels} is {labels.shape} but {self.image} is {rgb.shape[:2]} (H, W)")
            ids = [int(i) for i in np.unique(labels) if i not in (0, 255)]
            masks = np.stack([labels == i for i in ids]) if ids else np.zeros((0, *labels.shape), bool)
        keep = masks.sum(axis=(1, 2)) >= MIN_INSTANCE_PIXELS
        return rgb, masks[keep]


def coco_polygon_masks(path: Path, size: tuple[int, int]) -> np.ndarray:
    """YOLO segmentation labels (``class x1 y1 x2 y2 ...`` normalised) rasterised at ``size`` (H, W)."""
    height, width = size
    masks = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        coordinates = np.asarray(values[1:], dtype=np.float64)
        if len(coordinates) < 6 or len(coordinates) % 2:
            raise ValueError(f"{path}:{number}: a polygon needs an even count of at least 6 coordinates")
        points = np.round(coordinates.reshape(-1, 2) * [width, height]).astype(np.int32)
        mask = np.zeros((height, width), np.uint8)
        cv2.fillPoly(mask, [points], 1)
        masks.append(mask.astype(bool))
    return np.stack(masks) if masks else np.zeros((0, height, width), bool)


def _davis_frames(root: Path, source: str, sequences: list[str]) -> list[InstanceFrame]:
    frames = []
    for sequence in sequences:
        for label_path in sorted((root / "Annotations" / "480p" / sequence).glob("*.png")):
            image = root / "JPEGImages" / "480p" / sequence / f"{label_path.stem}.jpg"
            if image.is_file():
                frames.append(InstanceFrame(source, sequence, image, label_path))
    return frames


def _sequence_names(root: Path) -> list[str]:
    folder = root / "Annotations" / "480p"
    return sorted(path.name for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def davis2016_val_sequences(root: Path) -> list[str]:
    """The DAVIS 2016 ``val`` sequences present (ImageSets/480p/val.txt lists frame pairs)."""
    listed = root / "ImageSets" / "480p" / "val.txt"
    if not listed.is_file():
        raise FileNotFoundError(f"{listed} is missing: the DAVIS 2016 val list decides what is held out")
    return sorted({line.split()[0].split("/")[3] for line in listed.read_text().splitlines() if line.strip()})


def real_frames(realdata: Path) -> list[InstanceFrame]:
    """Every annotated real frame under ``realdata`` (DAVIS 2016 and 2017, COCO128-seg, CVPPP A1)."""
    realdata = Path(realdata)
    frames = []
    davis2016 = realdata / "DAVIS2016"
    if davis2016.is_dir():
        frames += _davis_frames(davis2016, "davis2016", _sequence_names(davis2016))
    davis2017 = realdata / "DAVIS"
    if davis2017.is_dir():
        frames += _davis_frames(davis2017, "davis2017", _sequence_names(davis2017))
    coco = realdata / "COCO128-seg"
    for label in sorted((coco / "labels" / "train2017").glob("*.txt")):
        image = coco / "images" / "train2017" / f"{label.stem}.jpg"
        if image.is_file():  # two label files of the release have no image
            frames.append(InstanceFrame("coco128", label.stem, image, label))
    for label in sorted((realdata / "CVPPP" / "A1").glob("plant*_label.png")):
        image = label.with_name(label.name.replace("_label", "_rgb"))
        if image.is_file():
            frames.append(InstanceFrame("cvppp", label.stem.replace("_label", ""), image, label))
    return frames


def synthetic_frames(root: Path) -> list[InstanceFrame]:
    return _davis_frames(Path(root), "synthetic", _sequence_names(Path(root)))


def _hashed_fraction(name: str) -> float:
    return int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 16**8


def held_out_split(
    frames: list[InstanceFrame], realdata: Path, extra_fraction: float = 0.2
) -> tuple[list[InstanceFrame], list[InstanceFrame]]:
    """(train, held_out): DAVIS 2016 val sequences (in either DAVIS folder) are always held out; of the DAVIS 2017
    sequences and COCO images, a fixed ``extra_fraction`` (chosen by a hash of the name, so stable as data is added)
    is held out too. CVPPP and synthetic frames are training only."""
    val = set(davis2016_val_sequences(Path(realdata) / "DAVIS2016"))
    train, held_out = [], []
    for frame in frames:
        if frame.source in ("davis2016", "davis2017") and frame.group in val:
            held_out.append(frame)
        elif frame.source in ("davis2017", "coco128") and _hashed_fraction(frame.group) < extra_fraction:
            held_out.append(frame)
        else:
            train.append(frame)
    return train, held_out


def masks_to_target(masks: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision detection target: boxes x0 y0 x1 y1 (pixel edges), labels all 1 (object), uint8 masks."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for index, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        boxes[index] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(len(masks), dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }


class AugmentedInstanceFrames(torch.utils.data.Dataset):
    """Training samples with on-the-fly augmentation: resize so the shorter side is ``short_side`` × a random scale
    in ``scale_range``, a random crop of at most ``max_side`` on the longer side, horizontal flip, colour jitter
    (brightness, contrast, saturation). Instances cut below `MIN_INSTANCE_PIXELS` by the crop are dropped."""

    def __init__(self, frames: list[InstanceFrame], short_side: int = 384, max_side: int = 640,
                 scale_range: tuple[float, float] = (0.6, 1.3), seed: int = 0):
        if not frames:
            raise ValueError("no training frames: check that ../shared/realdata or the synthetic data was found")
        self.frames, self.short_side, self.max_side, self.scale_range, self.seed = frames, short_side, max_side, scale_range, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        rgb, masks = self.frames[index].read()
        height, width = rgb.shape[:2]
        scale = self.short_side * rng.uniform(*self.scale_range) / min(height, width)
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        masks = np.stack([cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks]) \
            if len(masks) else np.zeros((0, size[1], size[0]), np.uint8)
        top = int(rng.integers(0, max(1, size[1] - self.max_side + 1)))
        left = int(rng.integers(0, max(1, size[0] - self.max_side + 1)))
        rgb = rgb[top : top + self.max_side, left : left + self.max_side]
        masks = masks[:, top : top + self.max_side, left : left + self.max_side].astype(bool)
        if rng.random() < 0.5:
            rgb, masks = rgb[:, ::-1], masks[:, :, ::-1]
        masks = masks[masks.sum(axis=(1, 2)) >= MIN_INSTANCE_PIXELS]
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
        brightness, contrast, saturation = rng.uniform(0.75, 1.25, size=3)
        grey = image.mean(0, keepdim=True)
        image = (grey + (image - grey) * saturation)
        image = (image.mean() + (image - image.mean()) * contrast) * brightness
        return image.clamp(0, 1), masks_to_target(np.ascontiguousarray(masks))


def source_balanced_weights(frames: list[InstanceFrame], source_weights: dict[str, float]) -> list[float]:
    """Per-frame sampling weights so that each source is drawn with its share of ``source_weights``."""
    counts = {source: sum(frame.source == source for frame in frames) for source in SOURCES}
    return [source_weights.get(frame.source, 0.0) / counts[frame.source] for frame in frames]


def collate_detection(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


class InstanceFramesDataModule(L.LightningDataModule):
    """Source-balanced, augmented training batches; each DDP rank draws its own images (seed + 1000 × rank), decided
    when the loader is built inside the rank's process (so it holds for spawned processes too)."""

    def __init__(self, frames: list[InstanceFrame], source_weights: dict[str, float], batch_size: int,
                 samples_per_epoch: int, short_side: int = 384, seed: int = 0):
        super().__init__()
        self.frames, self.source_weights, self.batch_size = frames, source_weights, batch_size
        self.samples_per_epoch, self.short_side, self.seed = samples_per_epoch, short_side, seed

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        rank_seed = self.seed + 1000 * (self.trainer.global_rank if self.trainer is not None else 0)
        dataset = AugmentedInstanceFrames(self.frames, short_side=self.short_side, seed=rank_seed)
        sampler = torch.utils.data.WeightedRandomSampler(
            source_balanced_weights(self.frames, self.source_weights), self.samples_per_epoch, replacement=True,
            generator=torch.Generator().manual_seed(rank_seed))
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                                           collate_fn=collate_detection)
