import numpy as np
import pytest
import torch

from zoo.metrics.instances import instance_masks, pairwise_dice, pairwise_iou


def _boxes(*boxes, size=(6, 8)):
    masks = np.zeros((len(boxes),) + size, dtype=bool)
    for mask, (top, left, bottom, right) in zip(masks, boxes):
        mask[top:bottom, left:right] = True
    return masks


def test_pairwise_iou_and_dice_on_hand_built_masks():
    pred = _boxes((0, 0, 2, 2), (0, 0, 2, 4), (4, 4, 6, 8))  # areas 4, 8, 8
    gt = _boxes((0, 0, 2, 2), (4, 6, 6, 8))  # areas 4, 4
    iou = pairwise_iou(pred, gt)
    dice = pairwise_dice(pred, gt)
    assert iou.dtype == np.float64 and iou.shape == (3, 2)
    np.testing.assert_allclose(iou, [[1, 0], [4 / 8, 0], [0, 4 / 8]])
    np.testing.assert_allclose(dice, [[1, 0], [8 / 12, 0], [0, 8 / 12]])


def test_two_empty_masks_score_zero_and_empty_sets_give_empty_matrices():
    empty = np.zeros((1, 4, 4), dtype=bool)
    assert pairwise_iou(empty, empty)[0, 0] == 0.0
    assert pairwise_dice(empty, empty)[0, 0] == 0.0
    assert pairwise_iou(np.zeros((0, 4, 4), bool), empty).shape == (0, 1)
    assert pairwise_dice(empty, np.zeros((0, 4, 4), bool)).shape == (1, 0)


def test_torch_inputs_answer_in_torch_with_the_numpy_values():
    pred = _boxes((0, 0, 3, 3), (2, 2, 6, 8))
    gt = _boxes((1, 1, 4, 4), (0, 0, 6, 8))
    for function in (pairwise_iou, pairwise_dice):
        result = function(torch.from_numpy(pred), torch.from_numpy(gt))
        assert isinstance(result, torch.Tensor) and result.dtype == torch.float64
        np.testing.assert_allclose(result.numpy(), function(pred, gt))


def test_soft_masks_give_soft_overlaps():
    soft = np.full((1, 2, 2), 0.5)
    hard = np.ones((1, 2, 2))
    assert pairwise_dice(soft, hard)[0, 0] == pytest.approx(2 * 2.0 / (2.0 + 4.0))


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError, match="one size"):
        pairwise_iou(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))


def test_instance_masks_lists_present_ids_or_the_requested_ones():
    labels = np.array([[0, 3, 3], [7, 0, 3]])
    ids, masks = instance_masks(labels)
    assert ids.tolist() == [3, 7] and masks.dtype == bool and masks.sum(axis=(1, 2)).tolist() == [3, 1]
    ids, masks = instance_masks(labels, ids=[1, 3])  # an absent id is an empty mask
    assert masks.sum(axis=(1, 2)).tolist() == [0, 3]
    ids, masks = instance_masks(torch.from_numpy(labels), background=3)
    assert ids.tolist() == [0, 7] and isinstance(masks, torch.Tensor)
