import sys

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.cvppp import CVPPPDataModule, CVPPPLeaves, split_names
from datamodules.image_io import read_rgb, write_rgb
from datamodules.instance_io import InstanceDataError, read_label_png, write_label_png
from datamodules.synthetic_cvppp import write_cvppp_hdf5, write_synthetic_cvppp


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return write_synthetic_cvppp(tmp_path_factory.mktemp("cvppp"), num_images=8, seed=3, num_test=2)


def test_writer_uses_the_lsc_layout_and_is_deterministic(synthetic_root, tmp_path):
    a1 = synthetic_root / "A1"
    assert sorted(p.name for p in a1.iterdir())[:3] == ["plant001_fg.png", "plant001_label.png", "plant001_rgb.png"]
    assert Image.open(a1 / "plant001_label.png").mode == "P"  # palette labels as in the release
    counts = [read_label_png(a1 / f"plant{i:03d}_label.png").max() for i in range(1, 9)]
    assert all(1 <= c <= 25 for c in counts) and len(set(counts)) > 1
    labels = read_label_png(a1 / "plant002_label.png")
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # consecutive ids
    assert read_rgb(a1 / "plant002_rgb.png").shape == (530, 500, 3)
    again = write_synthetic_cvppp(tmp_path, num_images=2, seed=3)
    assert np.array_equal(read_rgb(again / "A1" / "plant002_rgb.png"), read_rgb(a1 / "plant002_rgb.png"))
    assert sorted(p.name for p in (synthetic_root / "testing" / "A1").glob("*_rgb.png")) == [
        "plant001_rgb.png", "plant002_rgb.png"]


def test_items_follow_the_paper_preprocessing(synthetic_root):
    dataset = CVPPPLeaves(synthetic_root, "all")
    item = dataset[0]
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["labels"].shape == (224, 224) and item["labels"].dtype == torch.int64
    # ×2 downscale, centre crop: a 224² crop of the 265×250 image, leaves renumbered 1..K
    full = read_label_png(synthetic_root / "A1" / "plant001_label.png")
    assert item["name"] == "plant001"
    ids = torch.unique(item["labels"]).tolist()
    assert ids == list(range(len(ids))) and len(ids) - 1 == full.max()
    foreground = item["labels"].gt(0).float().mean().item()
    assert foreground == pytest.approx((full > 0).sum() / 4 / 224**2, rel=0.05)


def test_ablation_split_is_103_25_fixed_and_disjoint():
    names = [f"plant{i:03d}" for i in range(1, 129)]
    train, val = split_names(names, "ablation-train"), split_names(names, "ablation-val")
    assert len(train) == 103 and len(val) == 25 and not set(train) & set(val)
    assert split_names(names, "ablation-val") == val and split_names(names, "ablation-val", seed=1) != val
    assert split_names(names, "all") == names


def test_splits_on_the_synthetic_tree(synthetic_root):
    train = CVPPPLeaves(synthetic_root, "ablation-train")
    val = CVPPPLeaves(synthetic_root, "ablation-val")
    assert len(train) + len(val) == 8 and not set(train.names) & set(val.names)
    test = CVPPPLeaves(synthetic_root, "test")
    assert len(test) == 2 and "labels" not in test[0] and test[0]["image"].shape == (3, 224, 224)
    with pytest.raises(ValueError, match="unknown CVPPP split"):
        CVPPPLeaves(synthetic_root, "validation")


def test_augmentation_keeps_image_and_labels_aligned(tmp_path):
    # colour every leaf by its id, so that a misaligned rotation or flip shows as mixed colours inside a leaf
    labels = np.zeros((530, 500), np.uint8)
    for leaf, (top, left) in enumerate([(150, 140), (150, 260), (280, 140), (280, 260)], start=1):
        labels[top: top + 100, left: left + 100] = leaf
    image = np.stack([labels * 50, np.full_like(labels, 30), 255 - labels * 50], axis=2)
    write_rgb(tmp_path / "A1" / "plant001_rgb.png", image)
    write_label_png(tmp_path / "A1" / "plant001_label.png", labels)
    dataset = CVPPPLeaves(tmp_path, "all", augment=True)
    torch.manual_seed(0)
    changed = 0
    for _ in range(6):
        item = dataset[0]
        red = item["image"][0].numpy() * 255
        for leaf in range(1, int(item["labels"].max()) + 1):
            inside = red[item["labels"].numpy() == leaf]
            assert np.median(np.abs(inside - np.median(inside))) < 3
        changed += not torch.equal(item["labels"], CVPPPLeaves(tmp_path, "all")[0]["labels"])
    assert changed >= 4


def test_hdf5_release_reads_like_the_png_folder(synthetic_root, tmp_path):
    write_cvppp_hdf5(synthetic_root / "A1", tmp_path)
    write_cvppp_hdf5(synthetic_root / "testing" / "A1", tmp_path, testing=True)
    from_png, from_h5 = CVPPPLeaves(synthetic_root, "all"), CVPPPLeaves(tmp_path, "all")
    assert from_png.names == from_h5.names
    for index in (0, 5):
        assert torch.equal(from_png[index]["labels"], from_h5[index]["labels"])
        assert torch.equal(from_png[index]["image"], from_h5[index]["image"])
    assert len(CVPPPLeaves(tmp_path, "test")) == 2


def test_hdf5_without_h5py_names_the_fix(synthetic_root, tmp_path, monkeypatch):
    write_cvppp_hdf5(synthetic_root / "A1", tmp_path)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match="pip install"):
        CVPPPLeaves(tmp_path, "all")


def _one_plant(folder, image, labels):
    write_rgb(folder / "A1" / "plant001_rgb.png", image)
    write_label_png(folder / "A1" / "plant001_label.png", labels)


def test_label_of_another_size_is_refused_naming_the_file(tmp_path):
    _one_plant(tmp_path, np.zeros((530, 500, 3), np.uint8), np.zeros((520, 500), np.uint8))
    with pytest.raises(InstanceDataError, match="plant001_label.png.*must have the size"):
        CVPPPLeaves(tmp_path, "all")[0]


def test_rgba_image_drops_an_opaque_alpha_and_warns_about_a_transparent_one(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (530, 500, 3), dtype=np.uint8)
    labels = np.zeros((530, 500), np.uint8)
    labels[200:300, 200:300] = 1
    _one_plant(tmp_path, rgb, labels)
    reference = CVPPPLeaves(tmp_path, "all")[0]["image"]
    rgba = np.concatenate([rgb, np.full((530, 500, 1), 255, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "A1" / "plant001_rgb.png")
    assert torch.equal(CVPPPLeaves(tmp_path, "all")[0]["image"], reference)
    rgba[..., 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "A1" / "plant001_rgb.png")
    with pytest.warns(UserWarning, match="plant001_rgb.png.*alpha"):
        image = CVPPPLeaves(tmp_path, "all")[0]["image"]
    assert torch.equal(image, reference)


def test_16_bit_labels_are_read_when_they_are_ids_and_refused_otherwise(tmp_path):
    labels = np.zeros((530, 500), np.uint16)
    labels[100:200, 100:200], labels[250:350, 250:350] = 300, 1000  # ids above 255 need 16 bits
    _one_plant(tmp_path, np.zeros((530, 500, 3), np.uint8), np.zeros((530, 500), np.uint8))
    Image.fromarray(labels).save(tmp_path / "A1" / "plant001_label.png")
    assert Image.open(tmp_path / "A1" / "plant001_label.png").mode.startswith("I;16")
    assert torch.unique(CVPPPLeaves(tmp_path, "all")[0]["labels"]).tolist() == [0, 1, 2]
    intensities = np.arange(530 * 500, dtype=np.uint32).reshape(530, 500) % 60000
    Image.fromarray(intensities.astype(np.uint16)).save(tmp_path / "A1" / "plant001_label.png")
    with pytest.raises(InstanceDataError, match="plant001_label.png.*16-bit"):
        CVPPPLeaves(tmp_path, "all")[0]


def test_image_without_leaves_gives_empty_labels(tmp_path):
    _one_plant(tmp_path, np.full((530, 500, 3), 90, np.uint8), np.zeros((530, 500), np.uint8))
    item = CVPPPLeaves(tmp_path, "all", augment=True)[0]
    assert item["labels"].shape == (224, 224) and item["labels"].max() == 0


def test_missing_data_names_the_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="plant\\*_rgb.png.*CVPPP2017_training_images.h5"):
        CVPPPLeaves(tmp_path, "all")


def test_datamodule_batches(synthetic_root):
    datamodule = CVPPPDataModule(synthetic_root, batch_size=3)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (3, 3, 224, 224) and batch["labels"].shape == (3, 224, 224)
    assert len(batch["name"]) == 3 and len(datamodule.val_set) == 2
