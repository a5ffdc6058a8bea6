"""IVOS-W's quality network (Sec. 3.2): the crop's geometry, the probability map's effect, Eq. 7, the training
module, and a small learning test on synthetic frames whose targets are a known function of the mask's overlap."""

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.backbones import BackboneWeightsUnavailable, create_backbone, pretrained_state
from zoo.ivosw.quality import (
    QualityDataset,
    QualityModule,
    QualityNetwork,
    QualitySample,
    frame_quality,
    pearson_and_mse,
    quality_crop,
    quality_roi,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HEIGHT, WIDTH = 80, 100


def coordinate_image() -> np.ndarray:
    """Red = 2·column, green = 3·row: a bilinear sample at continuous (x, y) reads 2(x − ½), 3(y − ½)."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return np.stack([2 * cols, 3 * rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def box_probability(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    probability = np.zeros((HEIGHT, WIDTH), np.float32)
    probability[y0:y1, x0:x1] = 0.9
    probability[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = np.maximum(probability[y0 - 2:y1 + 2, x0 - 2:x1 + 2], 0.3)  # < 0.5
    return probability


def test_roi_is_the_box_raised_to_min_side_then_enlarged_about_its_centre():
    probability = torch.from_numpy(box_probability(30, 20, 50, 30))  # 20 wide, 10 high, centre (40, 25)
    roi = quality_roi(probability, min_side=16)
    torch.testing.assert_close(roi, torch.tensor([40.0, 25.0, 20 * 1.5, 16 * 1.5]))
    empty = torch.zeros(HEIGHT, WIDTH)
    torch.testing.assert_close(quality_roi(empty, min_side=16), torch.tensor([WIDTH / 2, HEIGHT / 2, WIDTH, HEIGHT]))


def test_crop_samples_exactly_the_roi():
    size = 12
    crop = quality_crop(coordinate_image(), box_probability(30, 20, 50, 30), size=size, min_side=16)
    assert crop.shape == (4, size, size)
    centres = (torch.arange(size) + 0.5) / size - 0.5  # output pixel centres as fractions of the ROI, about its centre
    x = 40 + centres * 30  # ROI 30 × 24 px centred on (40, 25)
    y = 25 + centres * 24
    torch.testing.assert_close(crop[0], (2 * (x - 0.5) / 255).expand(size, size), atol=1e-4, rtol=0)
    torch.testing.assert_close(crop[1], (3 * (y - 0.5) / 255)[:, None].expand(size, size), atol=1e-4, rtol=0)


def test_probability_channel_lies_on_the_image_content_it_marks():
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[20:30, 30:50] = 255  # the object, exactly where the mask says
    crop = quality_crop(image, box_probability(30, 20, 50, 30), size=32, min_side=16)
    bright, marked = crop[0] > 0.5, crop[3] > 0.5
    assert marked.sum() > 100
    assert (bright & marked).sum() / (bright | marked).sum() > 0.95
    # The object fills the middle of the crop: 1/1.5 of its width, 10/24 of its height, centred.
    columns, rows = marked.any(0).nonzero().flatten(), marked.any(1).nonzero().flatten()
    assert (columns[0] + columns[-1] + 1) / 2 == pytest.approx(16, abs=0.5)
    assert (rows[0] + rows[-1] + 1) / 2 == pytest.approx(16, abs=0.5)
    assert len(columns) == pytest.approx(32 / 1.5, abs=1.5) and len(rows) == pytest.approx(32 * 10 / 24, abs=1.5)


def test_empty_probability_map_crops_the_whole_frame():
    crop = quality_crop(coordinate_image(), np.zeros((HEIGHT, WIDTH), np.float32), size=10, min_side=16)
    assert crop[3].abs().max() == 0
    x = (torch.arange(10) + 0.5) / 10 * WIDTH
    torch.testing.assert_close(crop[0, 5], 2 * (x - 0.5) / 255, atol=2e-3, rtol=0)  # edges: bilinear border reads


def random_network(**kwargs) -> QualityNetwork:
    return QualityNetwork(random_backbone=True, input_size=32, min_side=8, **kwargs).eval()


def test_output_shape_and_the_probability_map_changes_it():
    network = random_network()
    assert network.backbone_source == "random"
    crops = torch.rand(3, 4, 32, 32)
    with torch.no_grad():
        scores = network(crops)
        without_mask = network(torch.cat([crops[:, :3], torch.zeros(3, 1, 32, 32)], dim=1))
    assert scores.shape == (3,)
    assert (scores - without_mask).abs().min() > 1e-4


@pytest.mark.parametrize("switched_to_train", [False, True], ids=["as-built", "after-train()"])
def test_frozen_batch_norm_keeps_imagenet_statistics_in_train_mode(switched_to_train):
    network = QualityNetwork(random_backbone=True, input_size=32, min_side=8)
    if switched_to_train:
        network.eval().train()
    batch_norm = network.body.bn1
    before = batch_norm.running_mean.clone()
    network(torch.rand(2, 4, 32, 32))
    assert network.training and not batch_norm.training and not batch_norm.weight.requires_grad
    torch.testing.assert_close(batch_norm.running_mean, before)


def test_on_resnet50_the_probability_convolution_is_the_authors():
    network = QualityNetwork("resnet50", random_backbone=True, input_size=32, min_side=8)
    stem = network.body.conv1
    assert isinstance(stem.probability, torch.nn.Conv2d) and stem.rgb.in_channels == 3
    geometry = (stem.probability.in_channels, stem.probability.out_channels, stem.probability.kernel_size,
                stem.probability.stride, stem.probability.padding)
    assert geometry == (1, 64, (7, 7), (2, 2), (3, 3)) and network.head.in_features == 2048


def test_frame_quality_is_the_mean_over_objects():
    network = random_network().train()
    image = coordinate_image()
    objects = [box_probability(30, 20, 50, 30), box_probability(5, 5, 20, 60), box_probability(60, 40, 95, 75)]
    network.eval()
    with torch.no_grad():
        each = network(torch.stack([quality_crop(image, p, size=32, min_side=8) for p in objects]))
    network.train()
    assert each.max() - each.min() > 1e-3  # otherwise a wrong reduction could pass
    assert frame_quality(network, image, objects) == pytest.approx(each.mean().item(), abs=1e-5)
    assert network.training  # restored after the eval-mode forward


def test_dataset_mirrors_the_crop_left_right():
    sample = QualitySample(coordinate_image(), box_probability(30, 20, 50, 30), 0.625)
    plain = quality_crop(sample.image, sample.probability, size=16, min_side=8)
    crop, target = QualityDataset([sample], size=16, min_side=8, flip_probability=0.0)[0]
    torch.testing.assert_close(crop, plain)
    assert target.item() == 0.625
    crop, _ = QualityDataset([sample], size=16, min_side=8, flip_probability=1.0)[0]
    torch.testing.assert_close(crop, plain.flip(-1))


def test_pearson_and_mse_on_hand_computed_numbers():
    pcc, mse = pearson_and_mse([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert pcc == pytest.approx(1.0, abs=1e-6) and mse == pytest.approx(14 / 3)
    pcc, mse = pearson_and_mse([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 0.0])
    assert pcc == pytest.approx(-0.4, abs=1e-6) and mse == pytest.approx((0 + 1 + 1 + 16) / 4)


def test_optimiser_is_the_authors_sgd_with_exponential_decay_from_hparams():
    module = QualityModule(random_backbone=True, lr=0.25, momentum=0.5, weight_decay=0.125, lr_gamma=0.75)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and isinstance(scheduler, torch.optim.lr_scheduler.ExponentialLR)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], scheduler.gamma) == (0.25, 0.5, 0.125, 0.75)
    assert config["lr_scheduler"]["interval"] == "epoch"
    assert QualityModule.__init__.__defaults__[-5:] == (5e-6, 0.9, 5e-4, 0.95, 0)  # the authors' schedule


def offline_weights_or_skip():
    try:
        pretrained_state("tf_efficientnet_lite0")
    except BackboneWeightsUnavailable as error:
        pytest.skip(f"no ImageNet weights for the default backbone here: {error}")


def test_default_network_carries_imagenet_weights():
    offline_weights_or_skip()
    network = QualityNetwork()
    assert network.backbone_source != "random"
    state, _ = pretrained_state("tf_efficientnet_lite0")
    torch.testing.assert_close(network.body.conv_stem.rgb.weight, state["conv_stem.weight"])
    torch.testing.assert_close(network.body.blocks[6][0].conv_pwl.weight, state["blocks.6.0.conv_pwl.weight"])
    assert network.head.in_features == 1280 and network.input_size == 256 and network.min_side == 128
    # With an empty probability channel the network is the ImageNet model on its own input normalisation (Lite0:
    # mean = std = 0.5) followed by the linear head.
    imagenet, _ = create_backbone("tf_efficientnet_lite0", num_classes=0)
    crops = torch.cat([torch.rand(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)], dim=1)
    with torch.no_grad():
        expected = network.head(imagenet.eval()((crops[:, :3] - 0.5) / 0.5)).squeeze(1)
        torch.testing.assert_close(network.eval()(crops), expected, atol=1e-5, rtol=1e-4)


CANVAS = 64


def blob_samples(rng: np.random.Generator, count: int) -> list[QualitySample]:
    """A red disc on a noisy background; the mask a disc of another radius at another place; target = their IoU."""
    rows, cols = np.mgrid[:CANVAS, :CANVAS]
    samples = []
    for _ in range(count):
        radius, (centre_x, centre_y) = rng.uniform(8, 14), rng.uniform(18, 46, 2)
        drawn = (cols - centre_x) ** 2 + (rows - centre_y) ** 2 < radius ** 2
        image = rng.integers(0, 80, (CANVAS, CANVAS, 3)).astype(np.uint8)
        image[drawn] = (220, 60, 60)
        offset, angle = rng.uniform(0, 2.2 * radius), rng.uniform(0, 2 * np.pi)
        mask_radius = radius * rng.uniform(0.7, 1.3)
        mask = ((cols - centre_x - offset * np.cos(angle)) ** 2 + (rows - centre_y - offset * np.sin(angle)) ** 2
                < mask_radius ** 2)
        iou = (drawn & mask).sum() / (drawn | mask).sum()
        samples.append(QualitySample(image, mask.astype(np.float32), float(iou)))
    return samples


def held_out_metrics(train: list[QualitySample], held_out: list[QualitySample]) -> dict[str, float]:
    """Fit `QualityModule` (ImageNet Lite0, 32 px crops, 32 SGD steps of 16) and validate it: val_pcc, val_mse."""
    L.seed_everything(0, verbose=False)
    module = QualityModule(input_size=32, min_side=8, lr=1e-3, weight_decay=0.0)
    trainer = L.Trainer(max_steps=32, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(QualityDataset(train, size=32, min_side=8), batch_size=16, shuffle=True))
    held_out_loader = DataLoader(QualityDataset(held_out, size=32, min_side=8, flip_probability=0.0), batch_size=32)
    return trainer.validate(module, held_out_loader, verbose=False)[0]


def test_learns_mask_quality_on_held_out_frames_and_not_from_shuffled_targets():
    offline_weights_or_skip()
    rng = np.random.default_rng(0)
    train, held_out = blob_samples(rng, 256), blob_samples(rng, 64)
    target_variance = np.var([sample.quality for sample in held_out])
    assert target_variance > 0.15 ** 2  # the targets spread over good and bad masks

    def learned(metrics: dict[str, float]) -> bool:  # predicting the mean would score PCC 0, MSE = the variance
        return metrics["val_pcc"] > 0.7 and metrics["val_mse"] < target_variance / 2

    assert learned(held_out_metrics(train, held_out))
    # The control: the same training on targets shuffled across samples must not reach the bar. Its PCC alone is no
    # test (it ranged over -0.12..0.46 with the shuffle's seed: features can correlate with IoU by chance), so the
    # bar includes MSE, which shuffled targets cannot bring far below the variance (0.056..0.074 against 0.066).
    shuffled = rng.permutation([sample.quality for sample in train])
    train_shuffled = [QualitySample(s.image, s.probability, float(q)) for s, q in zip(train, shuffled)]
    assert not learned(held_out_metrics(train_shuffled, held_out))
