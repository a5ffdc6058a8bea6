"""Overlap matrices between instance masks: the building block of the CVPPP and KITTI metrics and of ACIS's reward.

Every function accepts numpy arrays or torch tensors and answers in the same kind (a torch input keeps its
device; matrices are float64 either way). Masks may be bool or numeric: numeric values are used as they are, so
soft masks in [0, 1] give the soft overlap `sum(a*b)` that a differentiable surrogate needs.

Two empty masks score 0 for both IoU and Dice. This is the convention of both references these metrics follow
(the CVPPP organisers' `Dice` and Ren & Zemel's `f_iou` divide by `union + [union == 0]`), and it is what makes
an unused id inside the CVPPP label range count as a leaf that was missed.
"""

from __future__ import annotations

import numpy as np
import torch


def instance_masks(labels, background: int = 0, ids=None):
    """Split an (H, W) instance label map into `(ids, masks)`: the sorted ids other than `background` that occur
    in it (or the given `ids`, which may name absent, hence empty, instances) and a bool (K, H, W) stack."""
    is_torch = isinstance(labels, torch.Tensor)
    if labels.ndim != 2:
        raise ValueError(f"instance_masks expects an (H, W) label map, got shape {tuple(labels.shape)}")
    if is_torch:
        if ids is None:
            ids = torch.unique(labels)
            ids = ids[ids != background]
        else:
            ids = torch.as_tensor(ids, dtype=labels.dtype, device=labels.device)
        return ids, labels.unsqueeze(0) == ids.view(-1, 1, 1)
    labels = np.asarray(labels)
    if ids is None:
        ids = np.unique(labels)
        ids = ids[ids != background]
    else:
        ids = np.asarray(ids, dtype=labels.dtype)
    return ids, labels[None] == ids.reshape(-1, 1, 1)


def _flat_float64(masks, like):
    if isinstance(like, torch.Tensor):
        masks = torch.as_tensor(masks, device=like.device)
        return masks.reshape(masks.shape[0], int(np.prod(masks.shape[1:]))).to(torch.float64)
    masks = np.asarray(masks)
    return masks.reshape(masks.shape[0], int(np.prod(masks.shape[1:]))).astype(np.float64)


def _overlaps(pred_masks, gt_masks):
    """(intersection (P, G), pred sizes (P, 1), gt sizes (1, G)) in float64."""
    if pred_masks.ndim != 3 or gt_masks.ndim != 3 or tuple(pred_masks.shape[1:]) != tuple(gt_masks.shape[1:]):
        raise ValueError(
            "pairwise overlaps need (P, H, W) and (G, H, W) masks of one size, got "
            f"{tuple(pred_masks.shape)} and {tuple(gt_masks.shape)}"
        )
    pred = _flat_float64(pred_masks, pred_masks)
    gt = _flat_float64(gt_masks, pred_masks)
    intersection = pred @ gt.T
    return intersection, pred.sum(1)[:, None], gt.sum(1)[None, :]


def _safe_ratio(numerator, denominator):
    # x / (d + [d == 0]) is exactly 0 where d == 0 (the numerator is 0 there too)
    return numerator / (denominator + (denominator == 0))


def pairwise_iou(pred_masks, gt_masks):
    """(P, G) float64 matrix of IoU = |A∩B| / |A∪B| between every predicted and every ground-truth mask."""
    intersection, pred_size, gt_size = _overlaps(pred_masks, gt_masks)
    return _safe_ratio(intersection, pred_size + gt_size - intersection)


def pairwise_dice(pred_masks, gt_masks):
    """(P, G) float64 matrix of Dice = 2|A∩B| / (|A| + |B|) between every predicted and every ground-truth mask."""
    intersection, pred_size, gt_size = _overlaps(pred_masks, gt_masks)
    return _safe_ratio(2 * intersection, pred_size + gt_size)


def label_map_pair(pred_labels, gt_labels) -> tuple[np.ndarray, np.ndarray]:
    """A predicted and a ground-truth (H, W) label map (numpy or torch) as int64 numpy arrays of one size."""
    pred = _as_label_map(pred_labels, "the predicted labels")
    gt = _as_label_map(gt_labels, "the ground-truth labels")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return pred, gt


def _as_label_map(labels, what: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{what} must be an (H, W) label map, got shape {labels.shape}")
    return labels.astype(np.int64)
