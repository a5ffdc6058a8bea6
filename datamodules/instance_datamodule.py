"""`InstanceDataModule`: the Lightning loaders shared by the instance segmentation benchmarks (CVPPP, KITTI)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset


class InstanceDataModule(L.LightningDataModule):
    """Train (shuffled), val and test / predict loaders of `hparams.batch_size` items with `hparams.num_workers`.

    Subclasses call `save_hyperparameters()` (with at least `batch_size` and `num_workers`) and build each dataset in
    `make_dataset(role)`, role being "train", "val" or "test"; `setup` builds only those its stage needs.
    """

    def __init__(self, data_dir):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.train_set = self.val_set = self.test_set = None

    def make_dataset(self, role: str) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if stage in (None, "fit"):
            self.train_set = self.make_dataset("train")
        if stage in (None, "fit", "validate"):
            self.val_set = self.make_dataset("val")
        if stage in (None, "test", "predict"):
            self.test_set = self.make_dataset("test")

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self):
        return self._loader(self.test_set, shuffle=False)
