import numpy as np
import pytest
import torch

from datamodules.image_io import read_rgb
from datamodules.instance_io import InstanceDataError, read_label_png, write_label_png
from datamodules.kitti_instances import KITTIInstances, KITTIInstancesDataModule, read_split_ids
from datamodules.synthetic_kitti import write_synthetic_kitti


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_kitti(tmp_path_factory.mktemp("kitti"), num_images=6, seed=1)


def test_writer_uses_ren_and_zemels_layout(synthetic_root):
    assert read_split_ids(synthetic_root / "train.txt") == ["000000", "000001", "000002", "000003"]
    assert read_split_ids(synthetic_root / "valid_man.txt") == ["000004"]
    assert read_split_ids(synthetic_root / "test_man.txt") == ["000005"]
    assert (synthetic_root / "gt" / "000000.png").exists() and (synthetic_root / "gt_man" / "000005.png").exists()
    assert read_rgb(synthetic_root / "images" / "000000.png").shape == (375, 1242, 3)
    labels = [read_label_png(synthetic_root / "gt" / f"00000{i}.png") for i in range(4)]
    assert all(np.array_equal(np.unique(l), np.arange(l.max() + 1)) for l in labels)
    assert sum(l.max() for l in labels) >= 4  # cars are there


def test_colour_coded_labels_read_back_as_the_written_ids(tmp_path):
    from datamodules.instance_io import write_colour_coded_png

    labels = np.zeros((5, 7), np.int64)
    labels[1:3, 1:3], labels[3:5, 4:7], labels[0, 6] = 1, 2, 3
    write_colour_coded_png(tmp_path / "gt.png", labels)
    assert np.array_equal(read_label_png(tmp_path / "gt.png"), labels)


def test_items_resize_or_crop_to_256_by_768(synthetic_root):
    val = KITTIInstances(synthetic_root, "val")
    item = val[0]
    assert item["image"].shape == (3, 256, 768) and item["labels"].shape == (256, 768)
    assert item["image"].dtype == torch.float32 and item["labels"].dtype == torch.int64 and item["name"] == "000004"
    full = read_label_png(synthetic_root / "gt_man" / "000004.png")
    assert item["labels"].max().item() == full.max()  # the resize keeps every car
    train = KITTIInstances(synthetic_root, "train", augment=True)
    torch.manual_seed(0)
    crops = [train[0] for _ in range(4)]
    assert all(c["image"].shape == (3, 256, 768) for c in crops)
    assert not all(torch.equal(crops[0]["image"], c["image"]) for c in crops[1:])  # random crops and flips
    assert len(KITTIInstances(synthetic_root, "valid_man")) == 1  # Ren & Zemel's split names work too


def test_missing_split_file_and_mismatched_label_are_refused(synthetic_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="train.txt"):
        KITTIInstances(tmp_path, "train")
    (tmp_path / "train.txt").write_text("7\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "000007.png").write_bytes((synthetic_root / "images" / "000000.png").read_bytes())
    write_label_png(tmp_path / "gt" / "000007.png", np.zeros((370, 1242), np.uint8))
    with pytest.raises(InstanceDataError, match="000007.png.*must have the size"):
        KITTIInstances(tmp_path, "train")[0]
    (tmp_path / "train.txt").write_text("7\nseven\n")
    with pytest.raises(InstanceDataError, match="train.txt:2"):
        KITTIInstances(tmp_path, "train")


def test_datamodule_batches(synthetic_root):
    datamodule = KITTIInstancesDataModule(synthetic_root, batch_size=2)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (2, 3, 256, 768) and batch["labels"].shape == (2, 256, 768)
    datamodule.setup("test")
    assert len(datamodule.test_set) == 1
