"""The ACIS decision process (Araslanov et al., CVPR 2019, Sec. 4): state, transition, potential, reward.

- State s_t = (I, M_t): the image with its pre-processing channels and the accumulated mask M_t.
- Action a_t: a latent code of the cVAE; the frozen decoder D expands it to a mask m_t = D(a_t).
- Transition (Eq. 3): M_{t+1} = max(M_t, D(a_t)), pixelwise.
- Potential (Eq. 4): phi_t = max over assignments of sum_i F(S_i, T_k(i)), the Kuhn-Munkres max-matching
  of the t predictions so far to the N ground-truth masks, F = Dice (CVPPP) or IoU (KITTI).
- Reward (Eq. 5): r_t = phi(s_{t+1}) - phi(s_t). A new prediction may re-order the optimal assignment,
  so r_t measures the improvement of the whole set, not of one fixed pairing.

Also here: the 8-bin instance-angle quantisation targets of the pre-processing network (Uhrig et al.,
as built by the authors' `utils/instance_map.lua: get_orientation`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zoo.metrics.instances import pairwise_dice, pairwise_iou

SCORES = {"dice": pairwise_dice, "iou": pairwise_iou}
ANGLE_BINS = 8


def transition(accumulated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 3: integrate the decoded mask into the accumulated mask by a pixelwise max."""
    return torch.maximum(accumulated, mask)


def score_matrix(pred_masks, gt_masks, score: str = "dice") -> np.ndarray:
    """F between every prediction (P,H,W) and every ground truth (G,H,W) as a (P,G) float array."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {sorted(SCORES)}, got {score!r}")
    pred = _as_bool_numpy(pred_masks)
    gt = _as_bool_numpy(gt_masks)
    if pred.shape[0] == 0 or gt.shape[0] == 0:
        return np.zeros((pred.shape[0], gt.shape[0]), dtype=np.float64)
    return np.asarray(SCORES[score](pred, gt), dtype=np.float64)


def matched_potential(scores: np.ndarray) -> float:
    """Eq. 4 on a precomputed (t, N) score matrix: the Hungarian max-matching sum."""
    if scores.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return float(scores[rows, cols].sum())


def potential(pred_masks, gt_masks, score: str = "dice") -> float:
    """phi(s) of Eq. 4 for the predictions made so far (P,H,W) against the ground truth (N,H,W)."""
    return matched_potential(score_matrix(pred_masks, gt_masks, score))


def episode_rewards(pred_masks, gt_masks, score: str = "dice") -> np.ndarray:
    """r_t = phi(s_{t+1}) - phi(s_t) (Eq. 5) for the T predictions of one episode, phi(s_1) = 0.

    The (T, N) score matrix is computed once; phi_{t+1} is the matching restricted to its first t+1 rows.
    """
    scores = score_matrix(pred_masks, gt_masks, score)
    potentials = [0.0] + [matched_potential(scores[: t + 1]) for t in range(scores.shape[0])]
    return np.diff(np.asarray(potentials, dtype=np.float64))


def hungarian_assignment(scores: np.ndarray) -> dict[int, int]:
    """prediction index -> ground-truth index of the max-matching, for the baselines' BCE (Sec. 6.1)."""
    if scores.size == 0:
        return {}
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def soft_dice_matrix(probabilities, gt_masks) -> np.ndarray:
    """Soft Dice 2 sum(p g) / (sum p + sum g) between every probability map (P,H,W) and ground truth (G,H,W).

    For choosing BCE targets only: early in training the masks stay below 0.5 everywhere, so `score_matrix`
    (binarised) scores every pair 0 and the assignment falls back to the label order. The reward keeps the
    binary F of Eq. 4.
    """
    p = _as_numpy(probabilities).astype(np.float64)
    g = _as_numpy(gt_masks).astype(np.float64)
    if p.shape[0] == 0 or g.shape[0] == 0:
        return np.zeros((p.shape[0], g.shape[0]), dtype=np.float64)
    p, g = p.reshape(len(p), -1), g.reshape(len(g), -1)
    overlap = p @ g.T
    return 2 * overlap / np.maximum(p.sum(1)[:, None] + g.sum(1)[None, :], 1e-6)


def bce_assignment(probabilities, gt_masks, floor: float = 0.2, tie: float = 1e-6) -> dict[int, int]:
    """step -> ground-truth index for the baselines' BCE (Sec. 6.1: "Dice-based max-matching as a heuristic for
    assigning the ground truth"): the max-matching of `soft_dice_matrix` on the probabilities (P,H,W).

    Scores below `floor` count as ties, and ties go to the larger leaf, an earlier step to a larger one (a bonus of at
    most `tie` per pair, which only decides between matchings whose soft Dice sums agree to within P * tie). The same
    rule as `next_leaf_target`: averaging the BCE over equally bad leaves drove the actor to empty masks.
    """
    scores = soft_dice_matrix(probabilities, gt_masks)
    if scores.size == 0:
        return {}
    steps = scores.shape[0]
    area = _as_numpy(gt_masks).reshape(scores.shape[1], -1).sum(1).astype(np.float64)
    scores = np.where(scores < floor, 0.0, scores)
    # by the rearrangement inequality the bonus sum is largest when step order follows decreasing area
    scores += tie * ((steps - np.arange(steps)) / steps)[:, None] * (area / max(area.max(), 1.0))[None, :]
    return hungarian_assignment(scores)


def angle_targets(instance_masks: torch.Tensor) -> torch.Tensor:
    """8-bin angle class per pixel (-1 on background) from instance masks (K,H,W) bool.

    For each instance: the unit vector from its centroid to the pixel, its angle offset by pi/8, then
    class = floor((angle + pi) * 8 / 2pi) mod 8, as `get_orientation` of the authors' code. The authors
    recover the angle with asin and a quadrant correction; atan2 gives the same angle directly. Where
    instances overlap (never in CVPPP label maps) the later one wins.
    """
    K, H, W = instance_masks.shape
    classes = torch.full((H, W), -1, dtype=torch.long)
    if K == 0:
        return classes
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    for mask in instance_masks.bool():
        if not mask.any():
            continue
        cy, cx = ys[mask].mean(), xs[mask].mean()
        angle = torch.atan2(ys[mask] - cy, xs[mask] - cx) + math.pi / ANGLE_BINS
        angle = torch.remainder(angle + math.pi, 2 * math.pi) - math.pi
        classes[mask] = torch.floor((angle + math.pi) * ANGLE_BINS / (2 * math.pi)).long() % ANGLE_BINS
    return classes


def _as_numpy(masks) -> np.ndarray:
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (K, H, W), got {masks.shape}")
    return masks


def _as_bool_numpy(masks) -> np.ndarray:
    masks = _as_numpy(masks)
    return masks if masks.dtype == bool else masks > 0.5
