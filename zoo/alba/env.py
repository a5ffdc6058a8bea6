"""ALBA's grouping process (Gowda, Eustratiadis et al., BMVC 2020, Sec. 3): slots, decisions, the greedy oracle and
the video reward, for one video at a time.

The process (Sec. 3.1, Eq. 1). Every frame t has proposals {p_i, f_i, b_i} (mask, 256-d appearance feature, box),
taken one by one in decreasing confidence of the proposal generator (`confidence_order`). For proposal i the selection
network accepts or rejects it; an accepted proposal is assigned by the assignment network to one of K_max = 20 object
slots or to a new object, p(m_i,t = k | M_<i,t, p_i,t, I_t, u_t, v_t, f_i,t, M_t-1) (Eq. 1), where M_<i,t are the
slot masks built so far in frame t and M_t-1 the slots' masks in frame t-1. After every decision M_<i,t is updated
(`step`); after the last proposal of the frame M_t is projected to a label map with ids 1..K_max and becomes M_t-1
of the next frame (`end_frame`). Identities persist: slot k is label k + 1 in every frame of the video.

Training targets (Sec. 3.2, `greedy_oracle`) and reward (Sec. 3.2, `frame_scores`, `video_return`,
`decision_returns`): R_v = sum_t gamma^t r_t, r_t = J&F-mean(M_t, GT_t), gamma = 0.99.

Actions, as the integers `step` takes (an action is also the index of the assignment network's logit):
- ``0 .. K-1``: slot k (only a slot already in use; `GroupingState.allowed`),
- ``K`` (= `NEW` for K = 20, `GroupingState.new` in general): a new object, which takes the lowest free slot,
- `REJECT` (-1): the proposal is dropped (the selection network's "reject"; also the oracle's "improves nothing").

Choices the paper leaves open, made here:
- Overlapping proposals: earlier decisions keep their pixels ("first wins"): an accepted proposal paints only pixels
  no slot holds yet in this frame. Proposals come in decreasing confidence, so the more confident proposal keeps a
  contested pixel (as panoptic merging does). It also keeps the slots disjoint, so M_<i,t is at every step exactly
  the one-hot of the label map the reward scores, and assigning a proposal to slot k never changes another slot:
  the oracle's per-object IoU gains are then the whole effect of a decision. (The paper's M_t in {0,1}^{w x h x K}
  could overlap; its "projection" to a 2D map is not specified.)
- "New object" is an action of its own (index K); it takes the lowest slot never used in this video. Slots are never
  freed (the DAVIS unsupervised task allows 20 ids per *sequence*), so once all K slots are in use "new" is not
  allowed (`allowed()[K]` is False, the assignment network masks it) and `step` treats a "new" decision as a reject
  (it returns None). An assignment to a slot not in use is an error (a new object must go through "new").
- A "new" decision marks its slot in use even when every pixel of the proposal was already taken.
- M_t-1 is the previous frame's output exactly (the paper's "IDs assigned to objects in the previous frame"): a slot
  with no pixel in frame t-1 has an empty M^k_t-1 but stays assignable.
- The oracle's selection target is mask IoU > 0.2 with some ground-truth object: the paper says "overlap ... more
  than 0.2", the authors' `supervised/prepare.py` uses IoU (seeds.md §3). `selection_rule="accepted"` also requires
  the oracle to accept the proposal, the authors' rule ("and it does not lower that object's IoU").
- The oracle's slots follow the order in which it first accepts a proposal of each ground-truth object (its "new"
  takes the lowest free slot like anyone's, so its decisions replay through `step`). The numbering does not change
  any score: the unsupervised evaluation matches ids to objects (Hungarian).
- Void pixels (255 in the ground truth) count nowhere in the oracle's IoUs, as in the unsupervised evaluation.
- The reward's matching of predicted ids to ground-truth objects is the official one, over the whole video
  (Hungarian on mean-over-frames J&F, `zoo.metrics.davis.evaluate_unsupervised`); r_t is the mean over the
  ground-truth objects of (J + F) / 2 in frame t under that fixed matching, so mean_t r_t is the video's J&F-Mean.
  The rewards are known only at the end of the video (the matching needs every frame); REINFORCE needs no earlier.
- Steps and decisions: every decision (selection or assignment) taken in frame t is credited with the return from
  frame t on, G_t = sum_{t' >= t} gamma^(t'-t) r_t' (the paper discounts per frame, not per proposal); the returns
  of an episode's decisions are normalised over those decisions (mean 0, population std 1), as the authors' code
  normalises its per-step returns per episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from zoo.metrics.davis import VOID_LABEL, evaluate_unsupervised
from zoo.rl.returns import discounted_returns

K_MAX = 20  # `config/model.py: max_objects` in the authors' code; the DAVIS unsupervised limit
REJECT = -1
NEW = K_MAX  # the "new object" action when K = K_MAX; `GroupingState.new` in general
IGNORE = -100  # assignment target of a proposal the oracle rejects (torch's cross-entropy ignore_index)
SELECT_IOU = 0.2  # Sec. 3.2
GAMMA = 0.99  # Sec. 3.2
SELECTION_RULES = ("overlap", "accepted")


# -- the grouping state ----------------------------------------------------------------------------------------------


@dataclass
class GroupingState:
    """One video's grouping so far.

    previous: (K, H, W) bool, M_t-1: slot k's pixels in the previous frame's output (empty in the first frame).
    current: (K, H, W) bool, M_<i,t: slot k's pixels among the decisions taken so far in frame t (disjoint).
    labels: (H, W) uint8, the projection of `current` (k + 1 where slot k holds the pixel, 0 elsewhere).
    in_use: (K,) bool, slots that hold an object of this video (never freed).
    frame: index of the frame being built; decisions: decisions taken in it so far.
    """

    previous: np.ndarray
    current: np.ndarray
    labels: np.ndarray
    in_use: np.ndarray
    frame: int = 0
    decisions: int = 0

    @classmethod
    def start(cls, height: int, width: int, max_objects: int = K_MAX) -> "GroupingState":
        if not 1 <= max_objects <= 254:
            raise ValueError(f"max_objects must lie in 1..254 (uint8 label ids), got {max_objects}")
        empty = np.zeros((max_objects, height, width), dtype=bool)
        return cls(empty, empty.copy(), np.zeros((height, width), np.uint8), np.zeros(max_objects, bool))

    @property
    def max_objects(self) -> int:
        return len(self.in_use)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @property
    def new(self) -> int:
        """The action (and assignment logit index) "new object"."""
        return self.max_objects

    def free_slot(self) -> int | None:
        """The slot a "new object" decision takes: the lowest one not in use; None when all are."""
        free = np.flatnonzero(~self.in_use)
        return int(free[0]) if free.size else None

    def allowed(self) -> np.ndarray:
        """(K + 1,) bool over the assignment actions: the slots in use, then "new" while a slot is free."""
        return np.append(self.in_use, self.free_slot() is not None)


def confidence_order(scores) -> np.ndarray:
    """Indices of a frame's proposals in decreasing confidence (Sec. 3.1), ties in their given order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def _as_mask(mask, state: GroupingState) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != state.shape:
        raise ValueError(f"proposal mask of shape {mask.shape} for frames of shape {state.shape}")
    return mask


def paintable(state: GroupingState, proposal_mask) -> np.ndarray:
    """The pixels an accepted proposal adds to its slot: those no slot holds yet in this frame (first wins)."""
    return _as_mask(proposal_mask, state) & (state.labels == 0)


def step(state: GroupingState, proposal_mask, action: int) -> int | None:
    """Apply one decision to the current frame (the transition of Sec. 3.2): M_<i+1,t from M_<i,t.

    `action`: `REJECT`, a slot in use (0..K-1) or `state.new`. Returns the slot the proposal went to, or None when it
    was rejected (also a "new" decision while every slot is in use). Updates `state` in place.
    """
    mask = _as_mask(proposal_mask, state)
    action = int(action)
    if action == REJECT:
        slot = None
    elif action == state.new:
        slot = state.free_slot()
    elif 0 <= action < state.max_objects:
        if not state.in_use[action]:
            raise ValueError(f"slot {action} is not in use; a new object is created by the action {state.new}")
        slot = action
    else:
        raise ValueError(f"action must be {REJECT} (reject), 0..{state.max_objects - 1} (a slot) or "
                         f"{state.new} (new object), got {action}")
    state.decisions += 1
    if slot is None:
        return None
    painted = mask & (state.labels == 0)
    state.current[slot] |= painted
    state.labels[painted] = slot + 1
    state.in_use[slot] = True
    return slot


def end_frame(state: GroupingState) -> np.ndarray:
    """Close frame t: return its (H, W) uint8 label map (ids 1..K, 0 background) and carry M_t to M_t-1."""
    labels = state.labels.copy()
    state.previous = state.current
    state.current = np.zeros_like(state.previous)
    state.labels = np.zeros_like(labels)
    state.frame += 1
    state.decisions = 0
    return labels


# -- scripted assignment rules (the baselines of Table 1) --------------------------------------------------------------


def rank_assignment(state: GroupingState, rank: int) -> int:
    """"A new object identity to each proposed mask" (Sec. 4.1): the frame's `rank`-th accepted proposal (0-based)
    gets id rank + 1 in every frame, so ids persist only through the detector's confidence ranking; beyond the K-th
    the proposal is rejected."""
    if rank >= state.max_objects:
        return REJECT
    return rank if state.in_use[rank] else state.new


def overlap_assignment(state: GroupingState, proposal_mask, threshold: float = SELECT_IOU) -> int:
    """The object whose previous-frame mask M^k_t-1 overlaps the proposal most (IoU > `threshold`), else a new object
    (the most-overlapping slot when none is free). A weight-free stand-in for the paper's pairwise network A."""
    mask = _as_mask(proposal_mask, state)
    in_use = np.flatnonzero(state.in_use)
    if len(in_use):
        previous = state.previous[in_use]
        intersection = (previous & mask).sum(axis=(1, 2))
        union = (previous | mask).sum(axis=(1, 2))
        ious = intersection / np.maximum(union, 1)
        best = int(np.argmax(ious))
        if ious[best] > threshold or state.free_slot() is None:
            return int(in_use[best])
    return state.new


# -- the greedy oracle (Sec. 3.2) ------------------------------------------------------------------------------------


@dataclass
class OracleResult:
    """The greedy oracle's targets and output for one video; lists hold one (N_t,) array per frame.

    select: bool, the selection network's target (mask IoU > 0.2 with some ground-truth object).
    assign: int64, the assignment network's target (a slot 0..K-1, or K = new object), `IGNORE` where the oracle
        rejects the proposal (not selected, or it raises no object's IoU).
    actions: int64, the oracle's decisions as `step` actions (`REJECT`, a slot, K); replaying them gives `labels`.
    gains: float64, the IoU gain of the chosen object (0 where rejected).
    labels: (T, H, W) uint8, the oracle's label maps (the upper bound of Sec. 4).
    slot_of_object: ground-truth id -> the oracle's slot (label id = slot + 1).
    """

    select: list[np.ndarray]
    assign: list[np.ndarray]
    actions: list[np.ndarray]
    gains: list[np.ndarray]
    labels: np.ndarray
    slot_of_object: dict[int, int] = field(default_factory=dict)


def _ratio(numerator, denominator):
    """IoU with the DAVIS convention: an empty union gives 1."""
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 1.0)


def greedy_oracle(
    proposals,
    gt_labels: np.ndarray,
    max_objects: int = K_MAX,
    threshold: float = SELECT_IOU,
    selection_rule: str = "overlap",
) -> OracleResult:
    """The greedy oracle of Sec. 3.2 over a whole video.

    proposals: one (N_t, H, W) bool array per frame, each already in processing order (`confidence_order`).
    gt_labels: (T, H, W) ground-truth ids (0 background, 255 void).

    For each proposal in order: selected iff its mask IoU with some ground-truth object exceeds `threshold`. A
    selected proposal is assigned to the object whose IoU with its slot's mask it raises the most (its slot if the
    object has one, else a new slot), counting only the pixels it would paint (`paintable`); it is rejected when it
    raises no object's IoU (a gain of exactly 0 is no raise; ties go to the lower ground-truth id). The decisions go
    through `step` / `end_frame`, so `labels` is what the process produces from them.
    """
    if selection_rule not in SELECTION_RULES:
        raise ValueError(f"selection_rule must be one of {SELECTION_RULES}, got {selection_rule!r}")
    gt = np.asarray(gt_labels)
    if gt.ndim != 3:
        raise ValueError(f"gt_labels must be (T, H, W), got shape {gt.shape}")
    if len(proposals) != len(gt):
        raise ValueError(f"{len(proposals)} frames of proposals for {len(gt)} ground-truth frames")
    gt = gt.astype(np.intp)
    _, height, width = gt.shape
    objects = [int(i) for i in np.unique(gt) if i not in (0, VOID_LABEL)]
    state = GroupingState.start(height, width, max_objects)
    slot_of: dict[int, int] = {}
    result = OracleResult([], [], [], [], np.zeros(gt.shape, np.uint8), slot_of)
    for t, frame_gt in enumerate(gt):
        masks = np.asarray(proposals[t], dtype=bool).reshape(-1, height, width)
        keep = frame_gt != VOID_LABEL
        gt_area = np.bincount(frame_gt[keep], minlength=256)
        counts = np.zeros((256, max_objects), np.int64)  # non-void pixels of each ground-truth id in each slot
        slot_area = np.zeros(max_objects, np.int64)
        select, assign, actions, gains = (np.zeros(len(masks), dtype) for dtype in (bool, np.int64, np.int64, float))
        for i, mask in enumerate(masks):
            inside = mask & keep
            intersection = np.bincount(frame_gt[inside], minlength=256)
            ious = _ratio(intersection, gt_area + inside.sum() - intersection)
            overlaps = any(gt_area[o] > 0 and ious[o] > threshold for o in objects)
            action, best, best_gain, added, n_added = REJECT, None, 0.0, None, 0
            if overlaps:
                new_pixels = paintable(state, mask) & keep
                added = np.bincount(frame_gt[new_pixels], minlength=256)
                n_added = int(new_pixels.sum())
                for obj in objects:
                    slot = slot_of.get(obj)
                    if slot is None and state.free_slot() is None:
                        continue
                    inter = counts[obj, slot] if slot is not None else 0
                    area = slot_area[slot] if slot is not None else 0
                    before = _ratio(inter, gt_area[obj] + area - inter)
                    after = _ratio(inter + added[obj], gt_area[obj] + area + n_added - inter - added[obj])
                    gain = float(after - before)
                    if gain > best_gain:
                        best, best_gain = obj, gain
                if best is not None:
                    action = slot_of.get(best, state.new)
            slot = step(state, mask, action)
            if slot is not None:
                slot_of.setdefault(best, slot)
                counts[:, slot] += added
                slot_area[slot] += n_added
            select[i] = overlaps if selection_rule == "overlap" else overlaps and slot is not None
            actions[i] = action
            assign[i] = action if action != REJECT else IGNORE
            gains[i] = best_gain if slot is not None else 0.0
        result.labels[t] = end_frame(state)
        for store, values in zip((result.select, result.assign, result.actions, result.gains),
                                 (select, assign, actions, gains)):
            store.append(values)
    return result


# -- reward and returns (Sec. 3.2) -----------------------------------------------------------------------------------


def frame_scores(pred_labels: np.ndarray, gt_labels: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """r_t for every frame: the mean over ground-truth objects of (J + F) / 2 in frame t, the predicted ids matched to
    the objects once for the whole video as the official unsupervised evaluation does. (T,) float64.

    The objects are those of `zoo.metrics.davis.evaluate_unsupervised` (ids 1..largest id of the first frame, the
    official convention); a video whose first frame has none raises ValueError.
    """
    result = evaluate_unsupervised(np.asarray(gt_labels), np.asarray(pred_labels), bound_th=bound_th)
    if not len(result.j):
        raise ValueError("the first ground-truth frame has no object, so the unsupervised evaluation scores nothing")
    return ((result.j + result.f) / 2).mean(axis=0)


def video_return(scores, gamma: float = GAMMA) -> float:
    """R_v = sum_t gamma^t r_t (Sec. 3.2)."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.sum(gamma ** np.arange(len(scores)) * scores))


def frame_returns(scores, gamma: float = GAMMA) -> torch.Tensor:
    """G_t = sum_{t' >= t} gamma^(t'-t) r_t' for every frame, (T,) float64 (G_0 = R_v)."""
    return discounted_returns(torch.as_tensor(np.asarray(scores, dtype=np.float64)), gamma)


def normalise_returns(returns: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(G - mean) / (population std + eps) over one episode; all-equal returns give zeros."""
    if returns.numel() == 0:
        return returns
    return (returns - returns.mean()) / (returns.std(correction=0) + eps)


def decision_returns(scores, decision_frames, gamma: float = GAMMA, normalise: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """The credit of each decision of an episode: G_t of the frame t it was taken in (`decision_frames[d] = t`),
    normalised over the episode's decisions unless `normalise=False`. (D,) float64."""
    returns = frame_returns(scores, gamma)
    frames = torch.as_tensor(np.asarray(decision_frames, dtype=np.int64).reshape(-1))
    if frames.numel() and (frames.min() < 0 or frames.max() >= len(returns)):
        raise ValueError(f"decision frames must lie in 0..{len(returns) - 1}")
    credits = returns[frames]
    return normalise_returns(credits, eps) if normalise else credits


def group_credits(scores, decision_frames, gamma: float = GAMMA, eps: float = 1e-8) -> list[torch.Tensor]:
    """Credits of R >= 2 rollouts of the same video (not the paper's; `ALBAModule(credit="group")`): a decision
    taken in frame t of rollout r gets (G^r_t - mean_r' G^r'_t) / (population std_r' G^r'_t + eps), the other
    rollouts' returns from the same frame as its baseline. Unlike the per-episode normalisation, a frame's credits
    sum to zero over the rollouts whatever the frame index, so early frames are not favoured and a decision is
    credited only by how its rollout did against the others on the same video.

    scores: R sequences of per-frame rewards (each (T,)); decision_frames: R sequences of frame indices.
    Returns R (D_r,) float64 tensors.
    """
    if len(scores) < 2 or len(scores) != len(decision_frames):
        raise ValueError(f"need the rewards and decision frames of at least 2 rollouts, got {len(scores)} and "
                         f"{len(decision_frames)}")
    returns = torch.stack([frame_returns(s, gamma) for s in scores])
    advantage = (returns - returns.mean(0)) / (returns.std(0, correction=0) + eps)
    out = []
    for row, frames in zip(advantage, decision_frames):
        frames = torch.as_tensor(np.asarray(frames, dtype=np.int64).reshape(-1))
        if frames.numel() and (frames.min() < 0 or frames.max() >= len(row)):
            raise ValueError(f"decision frames must lie in 0..{len(row) - 1}")
        out.append(row[frames])
    return out
