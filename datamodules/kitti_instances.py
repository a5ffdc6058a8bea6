"""KITTI car instances in the layout of Ren & Zemel's release (`rec-attend-public`, `data_api/kitti.py`), which ACIS
used (3712 train / 144 val / 120 test images of about 375×1242):

    data_dir/
      images/NNNNNN.png      RGB photographs, ids zero-padded to 6 digits
      gt/NNNNNN.png          training annotations (coarse: derived from boxes for > 95 % of them)
      gt_man/NNNNNN.png      the manual annotations of the validation and test images
      train.txt              one integer id per line: 3712 ids
      valid_man.txt          144 ids
      test_man.txt           120 ids

A label PNG may be colour-coded (every distinct non-black colour is one car, as Ren & Zemel's `sep_labels.py`
reads it), palette-indexed or grayscale (value = id); see `datamodules/instance_io.py`.

Items: {"image": float32 (3, 256, 768) in [0, 1], "labels": int64 (256, 768), "name": "NNNNNN"}. Following the
ACIS code (`datasets/kitti.lua`): with `augment`, a random 256×768 crop and a horizontal flip with probability 0.5;
without, the whole image resized to 768×256 (bilinear; nearest for the labels). Car ids are renumbered 1..K after
the crop or resize.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.image_io import read_rgb
from datamodules.instance_datamodule import InstanceDataModule
from datamodules.instance_io import InstanceDataError, read_label_png, relabel_consecutive

CROP_HEIGHT, CROP_WIDTH = 256, 768
# decoded images are kept in memory up to this many bytes per dataset (per loader worker): the PNG decode of a
# full-size KITTI frame costs more than a training step of the CPU-sized nets; the whole real train split
# (~5 GB decoded) does not fit, so the first images up to the limit are kept and the rest re-read
DEFAULT_CACHE_BYTES = 1 << 30
# split name -> (id list file, annotation folder)
SPLITS = {
    "train": ("train.txt", "gt"),
    "val": ("valid_man.txt", "gt_man"),
    "test": ("test_man.txt", "gt_man"),
}
SPLIT_ALIASES = {"valid_man": "val", "test_man": "test", "valid": "val"}
PAPER_SPLIT_SIZES = {"train": 3712, "val": 144, "test": 120}


def read_split_ids(path: Path) -> list[str]:
    """Six-digit image names from a split file of integer ids (blank lines ignored)."""
    names = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not line.isdigit():
            raise InstanceDataError(f"{path}:{number}: {line!r} is not an integer image id")
        names.append(f"{int(line):06d}")
    return names


class KITTIInstances(Dataset):
    """KITTI car instance images of one split; see the module docstring for the layout and the items."""

    def __init__(self, data_dir, split: str = "train", augment: bool = False,
                 crop_size: tuple[int, int] = (CROP_HEIGHT, CROP_WIDTH), cache_bytes: int = DEFAULT_CACHE_BYTES):
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"unknown KITTI split {split!r}; choose one of {sorted(SPLITS)}")
        self.data_dir = Path(data_dir)
        self.split, self.augment, self.crop_size = split, augment, crop_size
        list_name, gt_folder = SPLITS[split]
        split_file = self.data_dir / list_name
        if not split_file.exists():
            raise FileNotFoundError(
                f"{split_file}: missing; a KITTI instance folder holds images/, gt/, gt_man/ and the split files "
                "train.txt, valid_man.txt, test_man.txt (see datamodules/kitti_instances.py)"
            )
        self.names = read_split_ids(split_file)
        if not self.names:
            raise FileNotFoundError(f"{split_file}: lists no image")
        self.image_dir, self.gt_dir = self.data_dir / "images", self.data_dir / gt_folder
        self.cache_bytes = cache_bytes
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.names)

    def load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The full-size (H, W, 3) uint8 image and (H, W) int64 car ids of one image (read-only arrays, cached)."""
        if name in self._cache:
            return self._cache[name]
        image, labels = self._read(name)
        size = image.nbytes + labels.nbytes
        if self._cached_bytes + size <= self.cache_bytes:
            image.setflags(write=False)
            labels.setflags(write=False)
            self._cache[name] = (image, labels)
            self._cached_bytes += size
        return image, labels

    def _read(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.image_dir / f"{name}.png", self.gt_dir / f"{name}.png"
        for path in (image_path, label_path):
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing (listed in {SPLITS[self.split][0]})")
        image, labels = read_rgb(image_path), read_label_png(label_path)
        if labels.shape != image.shape[:2]:
            raise InstanceDataError(
                f"{label_path}: label image is {labels.shape[1]}×{labels.shape[0]} (W×H) but {image_path} is "
                f"{image.shape[1]}×{image.shape[0]}; the label image must have the size of its RGB image"
            )
        return image, labels

    def _random_crop(self, image: np.ndarray, labels: np.ndarray):
        height, width = self.crop_size
        pad_y, pad_x = max(0, height - image.shape[0]), max(0, width - image.shape[1])
        if pad_y or pad_x:
            image = np.pad(image, [(0, pad_y), (0, pad_x), (0, 0)])
            labels = np.pad(labels, [(0, pad_y), (0, pad_x)])
        top = int(torch.randint(image.shape[0] - height + 1, ()).item())
        left = int(torch.randint(image.shape[1] - width + 1, ()).item())
        image, labels = image[top: top + height, left: left + width], labels[top: top + height, left: left + width]
        if torch.rand(()).item() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        return image, labels

    def _resize(self, image: np.ndarray, labels: np.ndarray):
        height, width = self.crop_size
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
        return image, labels.astype(np.int64)

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image, labels = self.load(name)
        image, labels = self._random_crop(image, labels) if self.augment else self._resize(image, labels)
        return {
            "image": torch.from_numpy(np.array(image).transpose(2, 0, 1)).float().div_(255),
            "labels": torch.from_numpy(relabel_consecutive(np.array(labels))),
            "name": name,
        }


class KITTIInstancesDataModule(InstanceDataModule):
    """Loaders over `KITTIInstances`: train (augmented when `augment`), val = valid_man, test = test_man."""

    def __init__(self, data_dir, batch_size: int = 4, num_workers: int = 0, augment: bool = True):
        super().__init__(data_dir)
        self.save_hyperparameters()

    def make_dataset(self, role: str) -> KITTIInstances:
        if role == "train":
            return KITTIInstances(self.data_dir, "train", augment=self.hparams.augment)
        return KITTIInstances(self.data_dir, role)
