"""CVPPP leaf segmentation challenge, A1 (Arabidopsis, 128 training and 33 test images of about 530×500).

Two on-disk layouts are read, whichever `data_dir` holds (the PNG folder wins when both are there):

1. The LSC PNG release. Training: `A1/plantNNN_rgb.png`, `A1/plantNNN_label.png` (palette PNG, index = leaf id,
   0 = background), `A1/plantNNN_fg.png` (not needed: the foreground is `label > 0`), under `data_dir`,
   `data_dir/training` or `data_dir/CVPPP2017_LSC_training/training`; `data_dir` may also be the A1 folder itself.
   Test: `plantNNN_rgb.png` in `testing/A1`, `A1_test` or `CVPPP2017_LSC_testing/testing/A1`.
2. The CVPPP 2017 HDF5 release (needs `h5py`, the `hdf5` extra): `CVPPP2017_training_images.h5` with datasets
   `A1/<plant>/rgb` (H×W×4 RGBA, alpha opaque) and `A1/<plant>/fg`; `CVPPP2017_training_truth.h5` with
   `A1/<plant>/label` (H×W ids) and `A1/<plant>/count`; `CVPPP2017_testing_images.h5` like the training images.

Items follow the paper (§6.1): the image is downscaled ×2 and centre-cropped to 224×224. With `augment`, a random
rotation by a multiple of 90° plus a small angle (bilinear for the image, nearest for the labels) and random
horizontal / vertical flips are drawn on the fly, before the crop, instead of the authors' 80 GB of pre-generated
copies. Leaf ids are renumbered 1..K after the crop, so leaves cut away by it leave no gap (the CVPPP evaluator
counts a gap as a missed leaf). The authors' code instead scales the shorter side to 224 (`t.Scale`) and rotates by
up to ±180°; the paper's ×2 is followed here.

`geometry` picks how an item is framed: "crop" (the paper's ×2 downscale and 224 centre crop, the default),
"whole" (the whole plant resized to `crop_size`², squashing the 500×530 aspect by 6 %, exactly what
`ACISSegmenter.segment` does to a full image, so training sees what inference sees and no border leaf is cut), or
"original" (the release's full-resolution image and labels, for evaluation at the benchmark's own resolution).

Splits: "ablation-train" / "ablation-val" (103 / 25 of the 128, a fixed permutation of the sorted names with `seed`;
on a set of another size the validation share stays 25/128), "all" (every training image), "test" (the 33 test
images, no labels: items then have no "labels" key).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.image_io import read_rgb
from datamodules.instance_datamodule import InstanceDataModule
from datamodules.instance_io import InstanceDataError, read_label_png, relabel_consecutive

CROP_SIZE = 224
DOWNSCALE = 2
ABLATION_VAL_SHARE = 25 / 128
SPLITS = ("ablation-train", "ablation-val", "all", "test")
GEOMETRIES = ("crop", "whole", "original")
H5_TRAIN_IMAGES = "CVPPP2017_training_images.h5"
H5_TRAIN_TRUTH = "CVPPP2017_training_truth.h5"
H5_TEST_IMAGES = "CVPPP2017_testing_images.h5"
TRAIN_DIRS = ("A1", "training/A1", "CVPPP2017_LSC_training/training/A1", ".")
TEST_DIRS = ("testing/A1", "A1_test", "CVPPP2017_LSC_testing/testing/A1", "test/A1")


def _import_h5py():
    try:
        import h5py
    except ImportError as error:
        raise ImportError(
            "reading the CVPPP 2017 HDF5 release needs h5py: pip install 'rl-vision-zoo[hdf5]' (or pip install h5py), "
            "or convert it to the A1 PNG layout"
        ) from error
    return h5py


def split_names(names: list[str], split: str, seed: int = 0) -> list[str]:
    """The plants of an ablation split: a fixed permutation of the sorted names, the first 25/128 for validation."""
    names = sorted(names)
    if split == "all":
        return names
    permutation = np.random.default_rng(seed).permutation(len(names))
    num_val = int(round(len(names) * ABLATION_VAL_SHARE))
    chosen = permutation[:num_val] if split == "ablation-val" else permutation[num_val:]
    return sorted(names[i] for i in chosen)


class _PngSource:
    def __init__(self, folder: Path, with_labels: bool):
        self.folder, self.with_labels = folder, with_labels
        self.names = sorted(p.name[: -len("_rgb.png")] for p in folder.glob("plant*_rgb.png"))

    def load(self, name: str):
        rgb_path = self.folder / f"{name}_rgb.png"
        image = read_rgb(rgb_path)
        if not self.with_labels:
            return image, None
        label_path = self.folder / f"{name}_label.png"
        if not label_path.exists():
            raise InstanceDataError(
                f"{label_path}: missing; every training plant needs its label image beside {rgb_path.name}"
            )
        labels = read_label_png(label_path)
        if labels.shape != image.shape[:2]:
            raise InstanceDataError(
                f"{label_path}: label image is {labels.shape[1]}×{labels.shape[0]} (W×H) but {rgb_path.name} is "
                f"{image.shape[1]}×{image.shape[0]}; the label image must have the size of its RGB image"
            )
        return image, labels


class _Hdf5Source:
    def __init__(self, images_path: Path, truth_path: Path | None):
        h5py = _import_h5py()
        self.images_path, self.truth_path = images_path, truth_path
        with h5py.File(images_path, "r") as images:
            if "A1" not in images:
                raise InstanceDataError(f"{images_path}: no 'A1' group; expected the CVPPP 2017 layout A1/<plant>/rgb")
            self.names = sorted(images["A1"].keys())

    def load(self, name: str):
        h5py = _import_h5py()
        with h5py.File(self.images_path, "r") as images:
            rgb = np.asarray(images["A1"][name]["rgb"])
        where = f"{self.images_path}:A1/{name}/rgb"
        if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
            raise InstanceDataError(f"{where}: expected an H×W×3 or H×W×4 image, got shape {rgb.shape}")
        if rgb.shape[2] == 4 and rgb[..., 3].min() < 255:
            warnings.warn(f"{where}: the alpha channel is not opaque; it is ignored and the RGB values are used")
        image = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
        if self.truth_path is None:
            return image, None
        with h5py.File(self.truth_path, "r") as truth:
            if name not in truth.get("A1", {}):
                raise InstanceDataError(f"{self.truth_path}: no A1/{name}/label for the image {name}")
            labels = np.asarray(truth["A1"][name]["label"]).astype(np.int64)
        if labels.shape != image.shape[:2]:
            raise InstanceDataError(
                f"{self.truth_path}:A1/{name}/label is {labels.shape} but its image is {image.shape[:2]}; "
                "the label map must have the size of its RGB image"
            )
        return image, labels


def _find_source(data_dir: Path, test: bool):
    for relative in TEST_DIRS if test else TRAIN_DIRS:
        folder = data_dir / relative
        if folder.is_dir() and any(folder.glob("plant*_rgb.png")):
            return _PngSource(folder, with_labels=not test)
    images = data_dir / (H5_TEST_IMAGES if test else H5_TRAIN_IMAGES)
    if images.exists():
        truth = None if test else data_dir / H5_TRAIN_TRUTH
        if truth is not None and not truth.exists():
            raise FileNotFoundError(f"{images} found but not its labels {truth}")
        return _Hdf5Source(images, truth)
    tried = ", ".join(str(data_dir / d) for d in (TEST_DIRS if test else TRAIN_DIRS))
    raise FileNotFoundError(
        f"no CVPPP A1 {'test' if test else 'training'} data under {data_dir}: looked for plant*_rgb.png in {tried} "
        f"and for {images.name}; see datamodules/cvppp.py for the layouts"
    )


def _rotate(array: np.ndarray, angle_deg: float, interpolation: int) -> np.ndarray:
    height, width = array.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle_deg, 1.0)
    border = cv2.BORDER_REFLECT_101 if interpolation != cv2.INTER_NEAREST else cv2.BORDER_CONSTANT
    return cv2.warpAffine(array, matrix, (width, height), flags=interpolation, borderMode=border, borderValue=0)


def centre_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to height×width, zero-padding (background) any side that is too short."""
    pad_y, pad_x = max(0, height - array.shape[0]), max(0, width - array.shape[1])
    if pad_y or pad_x:
        padding = [(pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, padding)
    top, left = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
    return array[top: top + height, left: left + width]


class CVPPPLeaves(Dataset):
    """CVPPP A1 plants as {"image": float32 (3, 224, 224) in [0, 1], "labels": int64 (224, 224), "name": str}."""

    def __init__(self, data_dir, split: str = "ablation-train", augment: bool = False, seed: int = 0,
                 max_small_angle: float = 15.0, crop_size: int = CROP_SIZE, downscale: int = DOWNSCALE,
                 geometry: str = "crop"):
        if split not in SPLITS:
            raise ValueError(f"unknown CVPPP split {split!r}; choose one of {SPLITS}")
        if geometry not in GEOMETRIES:
            raise ValueError(f"unknown CVPPP item geometry {geometry!r}; choose one of {GEOMETRIES}")
        self.geometry = geometry
        self.data_dir = Path(data_dir)
        self.split, self.augment, self.max_small_angle = split, augment, max_small_angle
        self.crop_size, self.downscale = crop_size, downscale
        self.source = _find_source(self.data_dir, test=split == "test")
        self.names = self.source.names if split == "test" else split_names(self.source.names, split, seed)
        if not self.names:
            raise FileNotFoundError(f"the CVPPP split {split!r} under {self.data_dir} is empty")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return len(self.names)

    def _downscaled(self, name: str):
        # a few MB for all of A1 (about 100 MB at full resolution), so each worker keeps what it has decoded
        if name not in self._cache:
            image, labels = self.source.load(name)
            if self.geometry != "crop":
                self._cache[name] = (image, labels)
                return self._cache[name]
            size = (max(1, round(image.shape[1] / self.downscale)), max(1, round(image.shape[0] / self.downscale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            if labels is not None:
                labels = cv2.resize(labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
            self._cache[name] = (image, labels)
        return self._cache[name]

    def _augment(self, image: np.ndarray, labels: np.ndarray | None):
        quarter_turns = int(torch.randint(4, ()).item())
        angle = (torch.rand(()).item() * 2 - 1) * self.max_small_angle
        image = np.rot90(image, quarter_turns)
        image = _rotate(np.ascontiguousarray(image), angle, cv2.INTER_LINEAR)
        if labels is not None:
            labels = np.ascontiguousarray(np.rot90(labels, quarter_turns)).astype(np.float32)
            labels = _rotate(labels, angle, cv2.INTER_NEAREST).astype(np.int64)  # float32 holds ids exactly
        for axis in (0, 1):
            if torch.rand(()).item() < 0.5:
                image = np.flip(image, axis)
                labels = None if labels is None else np.flip(labels, axis)
        return image, labels

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image, labels = self._downscaled(name)
        if self.augment:
            image, labels = self._augment(image, labels)
        if self.geometry == "crop":
            image = centre_crop(image, self.crop_size, self.crop_size)
            labels = None if labels is None else centre_crop(labels, self.crop_size, self.crop_size)
        elif self.geometry == "whole":
            size = (self.crop_size, self.crop_size)
            image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
            if labels is not None:
                labels = cv2.resize(np.ascontiguousarray(labels).astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1)).float().div_(255),
                "name": name}
        if labels is not None:
            labels = relabel_consecutive(np.ascontiguousarray(labels))
            item["labels"] = torch.from_numpy(labels)
        return item


class CVPPPDataModule(InstanceDataModule):
    """Train / val / test loaders over `CVPPPLeaves`. `train_split` "ablation-train" (paper §6.1) or "all" (§6.2);
    validation always uses "ablation-val" (with "all" it overlaps training: a sanity check, not a measurement)."""

    def __init__(self, data_dir, train_split: str = "ablation-train", val_split: str = "ablation-val",
                 batch_size: int = 4, num_workers: int = 0, augment: bool = True, seed: int = 0,
                 geometry: str = "crop", crop_size: int = CROP_SIZE):
        super().__init__(data_dir)
        self.save_hyperparameters()

    def make_dataset(self, role: str) -> CVPPPLeaves:
        hp = self.hparams
        framing = {"geometry": hp.geometry, "crop_size": hp.crop_size}
        if role == "train":
            return CVPPPLeaves(self.data_dir, hp.train_split, augment=hp.augment, seed=hp.seed, **framing)
        if role == "val":
            return CVPPPLeaves(self.data_dir, hp.val_split, augment=False, seed=hp.seed, **framing)
        return CVPPPLeaves(self.data_dir, "test", **framing)
