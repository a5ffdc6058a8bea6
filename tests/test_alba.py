"""ALBA: the grouping process (slots, first-wins painting, identities across frames, the 20-id limit), the greedy
oracle, the per-frame J&F reward and the normalised returns, the PUV encoder and the selection / assignment
networks (shapes and the masking of slots not in use)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from zoo.alba.env import (
    IGNORE, K_MAX, NEW, REJECT, GroupingState, confidence_order, decision_returns, end_frame, frame_returns,
    frame_scores, greedy_oracle, group_credits, normalise_returns, overlap_assignment, rank_assignment, step,
    video_return,
)
from zoo.alba.networks import (
    ALBANetConfig, AssignmentNetwork, PUVEncoder, SelectionNetwork, assignment_inputs, context_box, crop_inputs,
    encoder_output_size, selection_inputs, standardise_flow,
)
from zoo.metrics.davis import evaluate_unsupervised, f_measure, jaccard

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def box_mask(shape, rows, columns):
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], columns[0]:columns[1]] = True
    return mask


# -- the grouping process --------------------------------------------------------------------------------------------


def test_step_updates_the_slots_after_each_decision_first_wins_and_end_frame_carries_identities():
    state = GroupingState.start(10, 10)
    assert state.allowed().tolist() == [False] * K_MAX + [True]  # only "new" at the start
    top = box_mask((10, 10), (0, 5), (0, 10))
    assert step(state, top, NEW) == 0
    np.testing.assert_array_equal(state.current[0], top)  # M_<i,t updated at once
    assert state.allowed()[[0, 1, K_MAX]].tolist() == [True, False, True]

    middle = box_mask((10, 10), (3, 8), (0, 10))  # overlaps the first proposal on rows 3..4
    assert step(state, middle, NEW) == 1
    np.testing.assert_array_equal(state.current[1], box_mask((10, 10), (5, 8), (0, 10)))  # the earlier one kept them
    np.testing.assert_array_equal(state.current[0], top)

    bottom = box_mask((10, 10), (8, 10), (0, 10))
    assert step(state, bottom, 0) == 0  # joins the first object
    np.testing.assert_array_equal(state.current[0], top | bottom)
    before = state.current.copy()
    assert step(state, box_mask((10, 10), (0, 10), (0, 10)), REJECT) is None
    np.testing.assert_array_equal(state.current, before)
    assert state.decisions == 4
    assert not (state.current[0] & state.current[1]).any()
    with pytest.raises(ValueError, match="not in use"):
        step(state, bottom, 5)

    labels = end_frame(state)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.where(top | bottom, 1, np.where(state.previous[1], 2, 0)))
    np.testing.assert_array_equal(state.previous[0], top | bottom)  # M_t -> M_t-1
    np.testing.assert_array_equal(state.previous[1], box_mask((10, 10), (5, 8), (0, 10)))
    assert not state.current.any() and not state.labels.any() and state.frame == 1 and state.decisions == 0

    # Next frame: the second object moved; assigned to its slot it keeps its id, and "new" opens slot 2.
    moved = box_mask((10, 10), (6, 9), (0, 10))
    assert step(state, moved, 1) == 1
    assert step(state, box_mask((10, 10), (0, 2), (0, 2)), NEW) == 2
    labels = end_frame(state)
    assert set(np.unique(labels[moved])) == {2}
    assert labels[0, 0] == 3 and state.in_use[:3].all() and not state.in_use[3:].any()


def test_at_most_twenty_ids():
    state = GroupingState.start(2, 21)
    slots = [step(state, box_mask((2, 21), (0, 2), (k, k + 1)), NEW) for k in range(21)]
    assert slots == list(range(20)) + [None]  # the 21st "new" is a reject
    assert not state.allowed()[K_MAX] and state.allowed()[:K_MAX].all()
    labels = end_frame(state)
    assert labels.max() == 20 and not labels[:, 20].any()

    gt = np.arange(1, 22, dtype=np.uint8)[None, None].repeat(2, axis=1)  # 21 objects, one column each
    proposals = [np.stack([gt[0] == k for k in range(1, 22)])]
    oracle = greedy_oracle(proposals, gt)
    assert oracle.actions[0].tolist() == [NEW] * 20 + [REJECT]
    assert oracle.labels.max() == 20 and len(oracle.slot_of_object) == 20


# -- the greedy oracle -----------------------------------------------------------------------------------------------


def oracle_video():
    shape = (20, 20)
    first = np.zeros(shape, np.uint8)
    first[2:8, 2:8] = 1  # 36 px
    first[10:18, 10:18] = 2  # 64 px
    second = np.roll(first, 1, axis=1)
    gt = np.stack([first, second])
    frame0 = [
        first == 1,  # object 1 exactly: a new object
        box_mask(shape, (0, 10), (0, 10)),  # IoU 0.36 with object 1, but would lower its IoU from 1 to 0.36
        box_mask(shape, (10, 18), (10, 14)),  # left half of object 2: a new object (IoU 0.5)
        box_mask(shape, (10, 18), (14, 18)),  # right half: improves object 2 from 0.5 to 1
        box_mask(shape, (0, 2), (18, 20)),  # background: not selected
        box_mask(shape, (12, 14), (12, 14)),  # inside object 2 but IoU 4 / 64: not selected (IoU, not coverage)
    ]
    frame1 = [second == 2, second == 1]  # the objects in the other order
    return gt, [np.stack(frame0), np.stack(frame1)]


def test_greedy_oracle_rejects_an_iou_lowering_proposal_and_improves_the_second_object():
    gt, proposals = oracle_video()
    oracle = greedy_oracle(proposals, gt)
    assert oracle.select[0].tolist() == [True, True, True, True, False, False]  # IoU > 0.2
    assert oracle.actions[0].tolist() == [NEW, REJECT, NEW, 1, REJECT, REJECT]
    assert oracle.assign[0].tolist() == [NEW, IGNORE, NEW, 1, IGNORE, IGNORE]
    np.testing.assert_allclose(oracle.gains[0], [1.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    assert oracle.slot_of_object == {1: 0, 2: 1}
    assert oracle.actions[1].tolist() == [1, 0]  # the same slots on the next frame, whatever the order
    np.testing.assert_array_equal(oracle.labels, gt)  # object k is slot k - 1 here
    np.testing.assert_allclose(frame_scores(oracle.labels, gt), [1.0, 1.0])  # the upper bound

    strict = greedy_oracle(proposals, gt, selection_rule="accepted")  # the authors' labels
    assert strict.select[0].tolist() == [True, False, True, True, False, False]

    # Replaying the oracle's actions through `step` gives its label maps.
    state = GroupingState.start(20, 20)
    for frame_proposals, actions, labels in zip(proposals, oracle.actions, oracle.labels):
        for mask, action in zip(frame_proposals, actions):
            step(state, mask, action)
        np.testing.assert_array_equal(end_frame(state), labels)


def test_oracle_ignores_void_and_absent_objects():
    gt, proposals = oracle_video()
    gt = gt.copy()
    gt[0][0:2, 0:10] = 255  # void on part of the big proposal: still not an improvement of object 1
    oracle = greedy_oracle(proposals, gt)
    assert oracle.actions[0].tolist() == [NEW, REJECT, NEW, 1, REJECT, REJECT]
    empty = greedy_oracle([np.zeros((1, 20, 20), bool)] * 2, gt)
    assert empty.actions[0].tolist() == [REJECT] and not empty.labels.any()
    assert confidence_order([0.1, 0.9, 0.5, 0.9]).tolist() == [1, 3, 2, 0]


# -- reward and returns ----------------------------------------------------------------------------------------------


def test_frame_scores_use_one_hungarian_matching_and_average_to_the_video_score():
    gt, _ = oracle_video()
    gt = np.concatenate([gt, gt[1:]])  # 3 frames
    swapped = np.where(gt == 1, 2, np.where(gt == 2, 1, 0)).astype(np.uint8)
    np.testing.assert_allclose(frame_scores(swapped, gt), [1.0, 1.0, 1.0])
    missing = gt.copy()
    missing[2][missing[2] == 2] = 0
    scores = frame_scores(missing, gt)
    np.testing.assert_allclose(scores, [1.0, 1.0, 0.5])  # object 2: J = F = 0 in frame 2
    missing[1][2:5, 3:9] = 0  # object 1 loses its top half in frame 1: J and F below 1 and different
    j, f = jaccard(missing[1] == 1, gt[1] == 1), f_measure(missing[1] == 1, gt[1] == 1)
    assert j < 1 and f < 1 and j != f
    scores = frame_scores(missing, gt)
    np.testing.assert_allclose(scores, [1.0, ((j + f) / 2 + 1) / 2, 0.5])
    statistics = evaluate_unsupervised(gt, missing).statistics()
    assert scores.mean() == pytest.approx(((statistics[:, 0] + statistics[:, 3]) / 2).mean())


def test_discounted_normalised_returns_on_a_hand_computed_episode():
    scores = [1.0, 0.5, 0.0]
    assert video_return(scores, gamma=0.5) == pytest.approx(1.0 + 0.25)
    assert video_return([1.0, 1.0]) == pytest.approx(1.99)  # gamma = 0.99 by default
    torch.testing.assert_close(frame_returns(scores, 0.5), torch.tensor([1.25, 0.5, 0.0], dtype=torch.float64))
    # Decisions: two in frame 0, one in frame 1, one in frame 2.
    raw = decision_returns(scores, [0, 0, 1, 2], gamma=0.5, normalise=False)
    torch.testing.assert_close(raw, torch.tensor([1.25, 1.25, 0.5, 0.0], dtype=torch.float64))
    std = math.sqrt((0.5**2 + 0.5**2 + 0.25**2 + 0.75**2) / 4)  # around the mean 0.75
    expected = torch.tensor([0.5, 0.5, -0.25, -0.75], dtype=torch.float64) / std
    normalised = decision_returns(scores, [0, 0, 1, 2], gamma=0.5)
    torch.testing.assert_close(normalised, expected)
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert normalised.std(correction=0).item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(normalise_returns(torch.tensor([2.0, 2.0])), torch.zeros(2))
    with pytest.raises(ValueError):
        decision_returns(scores, [3])


def test_group_credits_compare_each_frame_return_with_the_other_rollouts_of_the_same_video():
    """Two rollouts, gamma 0.5: G = [1.25, 0.5] and [0.5, 1.0]; per frame the mean is [0.875, 0.75] and the
    population std [0.375, 0.25], so the advantages are [+1, -1] and [-1, +1]."""
    scores = [[1.0, 0.5], [0.0, 1.0]]
    credits = group_credits(scores, [[0, 1, 1], [1]], gamma=0.5)
    torch.testing.assert_close(credits[0], torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(credits[1], torch.tensor([1.0], dtype=torch.float64))
    # equal rollouts teach nothing, whatever the frame (no bias towards early frames as per-episode normalisation has)
    same = group_credits([[1.0, 0.2], [1.0, 0.2]], [[0, 1], [0, 1]])
    assert all(torch.equal(c, torch.zeros(2, dtype=torch.float64)) for c in same)
    with pytest.raises(ValueError, match="at least 2"):
        group_credits([[1.0]], [[0]])
    with pytest.raises(ValueError, match="decision frames"):
        group_credits(scores, [[2], [0]])


def test_scripted_assignments_of_the_table_1_baselines():
    state = GroupingState.start(8, 8, max_objects=2)
    left, right = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    left[:, :3], right[:, 5:] = True, True
    assert rank_assignment(state, 0) == state.new  # no slot yet: the first accepted proposal opens slot 0
    step(state, left, rank_assignment(state, 0))
    assert rank_assignment(state, 0) == 0 and rank_assignment(state, 1) == state.new
    assert rank_assignment(state, 2) == REJECT  # beyond K
    step(state, right, state.new)
    end_frame(state)
    moved = np.roll(right, -1, axis=1)
    assert overlap_assignment(state, moved) == 1  # the object whose previous mask it overlaps
    assert overlap_assignment(state, moved, threshold=0.9) == 1  # no free slot: the best overlap anyway
    wide = GroupingState.start(8, 8, max_objects=3)
    step(wide, left, wide.new)
    end_frame(wide)
    assert overlap_assignment(wide, right) == wide.new  # no overlap and a free slot: a new object


# -- networks --------------------------------------------------------------------------------------------------------


def test_puv_encoder_sizes_at_256_and_channel_counts():
    assert encoder_output_size(256) == 12 and encoder_output_size(80) == 1 and encoder_output_size(79) == 0
    encoder = PUVEncoder(6)
    assert sum(isinstance(m, nn.Conv2d) for m in encoder.modules()) == 9
    assert sum(isinstance(m, nn.MaxPool2d) for m in encoder.modules()) == 4
    assert all(m.padding == (0, 0) and m.kernel_size == (3, 3) for m in encoder.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        assert encoder(torch.zeros(1, 6, 256, 256)).shape == (1, 64, 12, 12)  # 9216 flattened, as the authors'
        assert PUVEncoder(8, width=0.25)(torch.zeros(2, 8, 256, 256)).shape == (2, 16, 12, 12)
    assert ALBANetConfig().base_channels == 6 and ALBANetConfig().assignment_channels == 8  # RGB + u, v + masks
    assert ALBANetConfig(rgb=False).base_channels == 3 and ALBANetConfig(rgb=False).assignment_channels == 5
    assert SelectionNetwork(ALBANetConfig(width=0.125, pooling="flatten")).fused_dim == 8 * 12 * 12 + 256
    assert SelectionNetwork(ALBANetConfig(width=0.125)).fused_dim == 8 + 256
    with pytest.raises(ValueError):
        ALBANetConfig(size=64)


SMALL = ALBANetConfig(width=0.125, size=96)


def test_selection_network_shape():
    torch.manual_seed(0)
    net = SelectionNetwork(SMALL)
    logits = net(torch.randn(3, SMALL.base_channels, 96, 96), torch.randn(3, 256))
    assert logits.shape == (3, 2)
    assert sum(isinstance(m, nn.Linear) for m in net.head) == 5


def test_assignment_softmax_over_slots_and_new_masks_unused_slots():
    torch.manual_seed(0)
    net = AssignmentNetwork(SMALL).eval()
    k, size = SMALL.max_objects, SMALL.size
    base = torch.randn(3, SMALL.base_channels, size, size)
    slots = (torch.rand(3, k, 2, size, size) > 0.5).float()
    features = torch.randn(3, 256)
    available = torch.zeros(3, k, dtype=torch.bool)
    available[0, :2] = True  # two objects so far
    available[2] = True  # all slots in use
    new_allowed = torch.tensor([True, True, False])
    with torch.no_grad():
        logits = net(base, slots, features, available, new_allowed)
        assert logits.shape == (3, k + 1)
        probs = logits.softmax(-1)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3))
        assert (probs[0, :2] > 0).all() and (probs[0, 2:k] == 0).all() and probs[0, k] > 0
        assert probs[1, k] == 1  # no object yet: only "new"
        assert (probs[2, :k] > 0).all() and probs[2, k] == 0  # all 20 in use: no "new"
        # An unused slot's inputs change nothing; the shared (Siamese) encoder: swapping slots swaps their logits.
        changed = slots.clone()
        changed[0, 5:] = 1 - changed[0, 5:]
        torch.testing.assert_close(net(base, changed, features, available, new_allowed), logits)
        swapped = slots.clone()
        swapped[0, [0, 1]] = slots[0, [1, 0]]
        again = net(base, swapped, features, available, new_allowed)
        torch.testing.assert_close(again[0, [0, 1, k]], logits[0, [1, 0, k]])


def test_crop_inputs_and_the_inputs_built_from_a_grouping_state():
    assert context_box((10, 10, 30, 20), 0.25, 40, 60) == (5, 7, 35, 23)
    assert context_box((0, 0, 10, 10), 0.25, 40, 60) == (0, 0, 13, 13)  # clipped to the frame
    assert context_box((50, 30, 51, 31), 0.0, 40, 60, min_size=8) == (46, 26, 55, 35)
    image = np.full((40, 60, 3), 128, np.uint8)
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.0, -2.0
    mask = box_mask((40, 60), (10, 20), (10, 30))
    crop = crop_inputs(image, flow, np.stack([mask, ~mask]), (10, 10, 30, 20), size=32)
    assert crop.shape == (3 + 2 + 2, 32, 32) and crop.dtype == torch.float32
    torch.testing.assert_close(crop[3], torch.ones(32, 32))
    torch.testing.assert_close(crop[4], torch.full((32, 32), -2.0))
    assert set(crop[5:].unique().tolist()) == {0.0, 1.0}
    assert crop[5].mean().item() == pytest.approx(200 / (30 * 16), abs=0.05)  # the box inside its context
    assert crop[5, 16, 16] == 1 and crop[5, 0, 0] == 0
    torch.testing.assert_close(crop[5] + crop[6], torch.ones(32, 32))
    assert crop_inputs(None, flow, mask, (10, 10, 30, 20), size=32).shape == (3, 32, 32)
    standard = standardise_flow(np.random.default_rng(0).normal(3, 5, (40, 60, 2)))
    np.testing.assert_allclose(standard.mean((0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(standard.std((0, 1)), 1, atol=1e-4)

    state = GroupingState.start(40, 60)
    assert step(state, mask, NEW) == 0
    end_frame(state)
    step(state, box_mask((40, 60), (12, 18), (12, 20)), 0)
    inputs = assignment_inputs(image, flow, mask, (10, 10, 30, 20), state, SMALL)
    assert inputs["base"].shape == (6, 96, 96) and inputs["slots"].shape == (20, 2, 96, 96)
    assert inputs["available"].tolist() == [True] + [False] * 19 and bool(inputs["new_allowed"])
    torch.testing.assert_close(inputs["slots"][0, 0], inputs["base"][5])  # M^0_t-1 is the proposal's mask here
    assert 0 < inputs["slots"][0, 1].sum() < inputs["slots"][0, 0].sum()  # M^0_<i,t: the smaller current part
    assert not inputs["slots"][1:].any()
    assert selection_inputs(image, flow, mask, (10, 10, 30, 20), SMALL).shape == (6, 96, 96)
    with torch.no_grad():
        logits = AssignmentNetwork(SMALL)(
            inputs["base"][None], inputs["slots"][None], torch.zeros(1, 256), inputs["available"][None],
            inputs["new_allowed"][None],
        )
    assert (logits.softmax(-1)[0, 1:K_MAX] == 0).all()


def test_mask_crops_by_index_equal_torch_nearest_exact_resampling():
    """`crop_inputs` resamples boolean masks by indexing (`nearest_exact_indices`) instead of F.interpolate on floats;
    the two must agree pixel for pixel, including scales whose float32 rounding differs from float64."""
    from zoo.alba.networks import nearest_exact_indices

    rng = np.random.default_rng(0)
    shapes = [(248, 248, 220), *((int(h), int(w), int(s)) for h, w, s in zip(
        rng.integers(1, 500, 150), rng.integers(1, 500, 150), rng.integers(80, 260, 150)))]
    for height, width, size in shapes:
        mask = rng.random((height, width)) > 0.5
        expected = torch.nn.functional.interpolate(torch.from_numpy(mask).float()[None, None], size=(size, size),
                                                   mode="nearest-exact")[0, 0].numpy()
        indexed = mask[nearest_exact_indices(height, size)][:, nearest_exact_indices(width, size)]
        assert np.array_equal(expected, indexed.astype(np.float32)), (height, width, size)
