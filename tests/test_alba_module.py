"""ALBA's LightningModule: the REINFORCE loss on a hand-computed episode, the warm-up's teacher-forced oracle targets
and losses, one training step per mode and trained policy (only the trained network moves), the mode check on
resume, seeded (resumable) sampling, and the greedy policy's ids (at most 20, stable across frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.alba.env import IGNORE, K_MAX, frame_scores, greedy_oracle
from zoo.alba.module import ALBAModule, Decision, Episode, Frame, reinforce_loss, teacher_forced
from zoo.alba.networks import ACCEPT_LOGIT

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = {"width": 1 / 64, "size": 80, "feature_dim": 8}
H = W = 24


def box(rows, columns, shape=(H, W)):
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], columns[0]:columns[1]] = True
    return mask


def two_object_episode(frames: int = 3, seed: int = 0) -> Episode:
    """Two objects drifting right; proposals per frame: object 1, a distractor, object 2, half of object 1."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(frames):
        a, b = box((2, 10), (2 + t, 10 + t)), box((14, 22), (4 + t, 14 + t))
        labels = np.zeros((H, W), np.uint8)
        labels[a], labels[b] = 1, 2
        masks = np.stack([a, box((0, 4), (18, 24)), b, box((2, 6), (2 + t, 10 + t))])
        flow = rng.normal(size=(H, W, 2)).astype(np.float32)
        flow[a | b] += 3.0
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        out.append(Frame(masks, rng.normal(size=(len(masks), 8)), flow, image, labels))
    return Episode(out, "two")


def test_reinforce_loss_on_a_hand_computed_two_decision_episode():
    log_probs = torch.tensor([math.log(0.5), math.log(0.25)], requires_grad=True)
    credits = torch.tensor([1.0, -1.0])
    loss = reinforce_loss(log_probs, credits)
    assert loss.item() == pytest.approx(-(math.log(0.5) * 1 + math.log(0.25) * -1))  # = -log 2
    loss.backward()
    # descending the loss raises log π of the positively credited decision and lowers the other one
    assert log_probs.grad.tolist() == pytest.approx([-1.0, 1.0])
    with pytest.raises(ValueError, match="must match"):
        reinforce_loss(log_probs, torch.ones(3))


def test_module_log_probs_of_a_hand_built_two_decision_episode_and_the_loss_gradient():
    """One selection (accept, p = 3/4) and one assignment (slot 1 among slots 0, 1 and "new": p = 2/4; the logits of
    unused slots are masked even when the network gives them a value); credits +1 and -1."""
    module = ALBAModule(net=TINY, mode="rl", rl_policies="both")
    theta = torch.tensor(math.log(3.0), requires_grad=True)
    k, size = module.config.max_objects, module.config.size
    module.selection.forward = lambda inputs, features: torch.stack([torch.zeros(()), theta]).repeat(len(inputs), 1)
    fixed = torch.zeros(k + 1)
    fixed[[0, 1, k]] = torch.tensor([0.0, math.log(2.0), 0.0])
    fixed[5] = 50.0  # slot 5 is not in use
    module.assignment.forward = lambda base, slots, features, available, new_allowed: fixed.repeat(len(base), 1)
    zeros = torch.zeros(module.config.base_channels, size, size)
    decisions = [
        Decision("selection", 0, ACCEPT_LOGIT, {"inputs": zeros, "features": torch.zeros(8)}),
        Decision("assignment", 1, 1, {"base": zeros, "used": torch.tensor([0, 1]), "features": torch.zeros(8),
                                      "slots": torch.zeros(2, 2, size, size, dtype=torch.uint8),
                                      "new_allowed": torch.tensor(True)}),
    ]
    log_probs = module.log_probs(decisions)
    torch.testing.assert_close(log_probs, torch.tensor([math.log(0.75), math.log(0.5)]))
    loss = reinforce_loss(log_probs, torch.tensor([1.0, -1.0]))
    assert loss.item() == pytest.approx(-(math.log(0.75) - math.log(0.5)))
    loss.backward()
    assert theta.grad.item() == pytest.approx(-(1 - 0.75))  # descent raises the accept logit of a credited accept


def test_warmup_targets_are_the_oracles_with_teacher_forced_slots_and_the_weighted_losses():
    episode = two_object_episode()
    module = ALBAModule(net=TINY, mode="warmup")
    data = teacher_forced(episode, module.config)
    oracle = greedy_oracle([f.masks for f in episode.frames], episode.ground_truth())
    np.testing.assert_array_equal(data["selection"]["targets"].numpy(), np.concatenate(oracle.select).astype(int))
    assign = np.concatenate(oracle.assign)
    np.testing.assert_array_equal(data["assign_targets"].numpy(), assign[assign != IGNORE])
    assert data["selection"]["targets"].tolist()[:4] == [1, 0, 1, 1]  # the distractor overlaps no object
    assert data["assign_targets"].tolist()[:2] == [K_MAX, K_MAX]  # two new objects in the first frame
    assert data["assign_targets"].tolist()[-2:] == [0, 1]  # then their slots in the third frame
    # teacher forcing: the last assignment input (object 2, third frame) sees slots 0 and 1 in use, slot 1 in
    # frame t-1 under the proposal, and M^1_<i,t still empty
    last = data["assignment"][-1]
    assert last["used"].tolist() == [0, 1] and bool(last["new_allowed"])
    assert last["slots"][1, 0].sum() > 0 and last["slots"][1, 1].sum() == 0

    loss, logged, taken = module.warmup_loss([episode])
    with torch.no_grad():
        sel = module.selection(data["selection"]["inputs"], data["selection"]["features"])
        expected = F.cross_entropy(sel, data["selection"]["targets"], weight=torch.tensor([1.0, 4.0]))
        expected = expected + F.cross_entropy(module.assignment_logits(data["assignment"]), data["assign_targets"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert taken == 12 + len(data["assignment"])


def _fit_one_step(module, episodes):
    import lightning.pytorch as pl

    loader = torch.utils.data.DataLoader(episodes, batch_size=len(episodes), collate_fn=list)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)


def _snapshot(net):
    return [p.detach().clone() for p in net.parameters()]


def _changed(net, before):
    return any(not torch.equal(p, q) for p, q in zip(net.parameters(), before))


@pytest.mark.parametrize("mode, policies", [("warmup", "assignment"), ("rl", "assignment"), ("rl", "selection")])
def test_one_training_step_moves_the_trained_policy_only(mode, policies):
    module = ALBAModule(net=TINY, mode=mode, rl_policies=policies, seed=1)
    assert module.hparams.lr == (1e-4 if mode == "warmup" else 1e-5)
    with torch.no_grad():  # accept nearly every proposal, so the assignment network decides too
        module.selection.head[-1].bias.copy_(torch.tensor([-4.0, 4.0]))
    selection, assignment = _snapshot(module.selection), _snapshot(module.assignment)
    _fit_one_step(module, [two_object_episode(seed=0), two_object_episode(seed=1)])
    assert int(module.updates) == 1 and int(module.decisions) > 12
    moved_selection, moved_assignment = _changed(module.selection, selection), _changed(module.assignment, assignment)
    if mode == "warmup":
        assert moved_selection and moved_assignment
    else:
        assert (moved_selection, moved_assignment) == (policies == "selection", policies == "assignment")


def test_checkpoint_of_one_mode_refuses_to_resume_in_the_other():
    checkpoint = {"hyper_parameters": {"mode": "warmup"}}
    ALBAModule(net=TINY, mode="warmup").on_load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="trained in mode 'warmup'"):
        ALBAModule(net=TINY, mode="rl").on_load_checkpoint(checkpoint)
    warm = ALBAModule(net=TINY, mode="warmup", seed=3)
    rl = ALBAModule(net=TINY, mode="rl", seed=4)
    rl.load_networks({"state_dict": warm.state_dict()})  # warm start: weights only
    torch.testing.assert_close(rl.assignment.head[0].weight, warm.assignment.head[0].weight)


def test_sampling_is_reproducible_from_its_seed():
    module = ALBAModule(net=TINY, mode="rl", seed=0)
    with torch.no_grad():
        module.selection.head[-1].bias.copy_(torch.tensor([-1.0, 1.0]))
    episode = two_object_episode()
    runs = [module.rollout(episode, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    actions = [[(d.kind, d.frame, d.action) for d in run.decisions] for run in runs]
    assert actions[0] == actions[1]
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    assert any(a != b for a, b in zip(actions[0], actions[2])) or len(actions[0]) != len(actions[2])


def _force_slot_of_object(module):
    """Selection accepts everything; the assignment picks slot k for object k (features[:, 0] = k) when that slot is
    in use, else "new"."""
    k = module.config.max_objects

    def selection(inputs, features):
        return torch.tensor([[0.0, 1.0]]).repeat(len(inputs), 1)

    def assignment(base, slots, features, available, new_allowed):
        logits = torch.zeros(len(base), k + 1)
        for row, obj in enumerate(features[:, 0].round().long().tolist()):
            target = obj if obj < k and available[row, obj] else k
            logits[row, target] = 10.0
        return logits

    module.selection.forward = selection
    module.assignment.forward = assignment


def test_greedy_act_keeps_identities_across_frames_and_at_most_twenty_ids():
    module = ALBAModule(net=TINY, mode="rl")
    _force_slot_of_object(module)
    a, b = box((2, 10), (2, 10)), box((14, 22), (4, 14))
    shifted_a, shifted_b = box((2, 10), (4, 12)), box((14, 22), (6, 16))
    flow = np.zeros((H, W, 2), np.float32)
    image = np.zeros((H, W, 3), np.uint8)
    features = lambda ids: np.stack([np.eye(8)[0] * i for i in ids])  # noqa: E731
    episode = Episode([Frame(np.stack([a, b]), features([0, 1]), flow, image),
                       Frame(np.stack([shifted_b, shifted_a]), features([1, 0]), flow, image)])  # new order
    labels = module.act(episode)
    assert labels.shape == (2, H, W) and labels.dtype == np.uint8
    assert (labels[0][a] == 1).all() and (labels[0][b] == 2).all()
    assert (labels[1][shifted_a] == 1).all() and (labels[1][shifted_b] == 2).all()  # same ids in the next frame
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    empty = Frame(np.zeros((0, H, W), bool), np.zeros((0, 8)), flow, image)  # a frame without proposals
    gap = module.act(Episode([episode.frames[0], empty, episode.frames[1]]))
    assert not gap[1].any() and (gap[2][shifted_a] == 1).all() and (gap[2][shifted_b] == 2).all()

    # 25 one-pixel objects, each asking for a new slot: only 20 ids exist
    masks = np.zeros((25, H, W), bool)
    for i in range(25):
        masks[i, i // 5, i % 5] = True
    many = Episode([Frame(masks, np.stack([np.eye(8)[0] * 30] * 25), flow, image)])  # 30: never a slot -> "new"
    ids = np.unique(module.act(many))
    assert ids.max() <= K_MAX and len(ids[ids > 0]) == K_MAX


def test_group_credit_passes_each_rollouts_rewards_and_decision_frames(monkeypatch):
    """rl_loss with credit="group": R rollouts of each episode, credited by `group_credits` with every rollout's own
    per-frame rewards and the frames its trained decisions were taken in; the loss averages over episodes x rollouts."""
    import zoo.alba.module as module_code
    from zoo.alba.env import group_credits

    seen = []

    def spy(scores, frames, gamma):
        seen.append((scores, frames))
        return group_credits(scores, frames, gamma)

    monkeypatch.setattr(module_code, "group_credits", spy)
    module = ALBAModule(net=TINY, mode="rl", rl_policies="both", credit="group", rollouts=3, seed=0)
    episode = two_object_episode(frames=3)
    recorded = []

    def recording(self, *args, **kwargs):
        recorded.append(module_code.GroupingPolicy.rollout(self, *args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(ALBAModule, "rollout", recording)
    module.rl_loss([episode], torch.Generator().manual_seed(0))
    (scores, frames), = seen
    assert len(scores) == len(frames) == len(recorded) == 3
    for run, rewards, decision_frames in zip(recorded, scores, frames):
        np.testing.assert_allclose(rewards, frame_scores(run.labels, episode.ground_truth()))
        assert decision_frames == [d.frame for d in run.decisions]
    with pytest.raises(ValueError, match="rollouts"):
        ALBAModule(net=TINY, mode="rl", credit="group", rollouts=1)


def test_pairwise_assignment_loss_and_decision_on_hand_computed_logits():
    """Row A: each slot's logit is a same-object probability on its own. Slots 0 and 2 in use (1 unused, masked)."""
    from zoo.alba.module import pairwise_decision, pairwise_loss

    low = torch.finfo(torch.float32).min
    logits = torch.tensor([[2.0, low, -1.0, 0.5], [-3.0, low, -0.5, 0.0]])
    targets = torch.tensor([0, 3])  # proposal 1 -> slot 0; proposal 2 -> a new object (no slot is "same")
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, -3.0, -0.5]), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(pairwise_loss(logits, targets), expected)
    assert pairwise_decision(logits[0]) == 0  # sigmoid(2) > 0.5
    assert pairwise_decision(logits[1]) == 3  # no slot above 0.5: new
    full = torch.tensor([-3.0, -0.5, low])  # no slot above 0.5 but no free slot: the most likely slot
    assert pairwise_decision(full) == 1


def test_rollout_with_the_pairwise_rule_reads_slot_scores_on_their_own(monkeypatch):
    """Logits where "new" is the arg-max but slot 0 is a confident "same object": the relational policy opens a new
    object, row A joins slot 0."""
    module = ALBAModule(net=TINY, mode="warmup", seed=0)
    low = torch.finfo(torch.float32).min

    def fixed(compact):
        logits = torch.full((len(compact), K_MAX + 1), low)
        for row, c in enumerate(compact):
            logits[row, c["used"]] = 1.0
            logits[row, K_MAX] = 5.0 if bool(c["new_allowed"]) else low
        return logits

    monkeypatch.setattr(module, "assignment_logits", fixed)
    episode = two_object_episode(frames=2)
    with torch.no_grad():
        module.selection.head[-1].bias.copy_(torch.tensor([-50.0, 50.0]))  # accept every proposal
    relational = module.rollout(episode).labels
    pairwise = module.rollout(episode, assign="pairwise").labels
    assert len(np.setdiff1d(np.unique(relational), [0])) > 1  # "new" for every proposal
    assert set(np.unique(pairwise)) == {0, 1}  # everything joins the first object
