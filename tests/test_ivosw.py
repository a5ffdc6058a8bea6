"""IVOS-W's first pieces: the Brain (shared-cell bidirectional LSTM), the double-DQN target and the target-network
updates, the ε schedule, the replay buffer, and the MDP's state, rewards and loss (Eqs. 1-6) on hand-computed
numbers."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from zoo.ivosw.env import (
    RandomPolicyStatistics, agent_loss, auxiliary_reward, episode_transitions, goal_reward, recommendation_counts,
    state,
)
from zoo.ivosw.networks import Brain
from zoo.rl.dqn import (
    double_dqn_targets, epsilon_greedy, epsilon_schedule, hard_update, stochastic_hard_update, td_loss,
)
from zoo.rl.replay import ReplayBuffer

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- Brain ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [25, 100])
def test_brain_gives_one_q_value_per_frame(frames):
    torch.manual_seed(0)
    brain = Brain()
    states = torch.rand(3, frames, 2)
    q = brain(states)
    assert q.shape == (3, frames) and torch.isfinite(q).all()
    assert brain.recommend(states).shape == (3,)
    # each row is computed on its own: a batch of one gives the same Q
    torch.testing.assert_close(brain(states[1:2])[0], q[1], rtol=1e-5, atol=1e-6)


def test_brain_runs_one_shared_cell_both_ways():
    torch.manual_seed(0)
    brain = Brain()
    assert sum(isinstance(m, (nn.LSTMCell, nn.LSTM)) for m in brain.modules()) == 1
    # encoder 2·128+128 + 128·128+128, one bias-free LSTMCell 2·(4·128·128), head 256·128+128 + 128+1
    assert sum(p.numel() for p in brain.parameters()) == 16_896 + 131_072 + 33_025
    # the same function as running brain.cell forwards, then the very same cell backwards, one frame at a time
    states = torch.rand(2, 7, 2)
    features = brain.encoder(states)
    fw, bw, state_fw, state_bw = [], [None] * 7, None, None
    for n in range(7):
        state_fw = brain.cell(features[:, n], state_fw)
        state_bw = brain.cell(features[:, 6 - n], state_bw)
        fw.append(state_fw[0])
        bw[6 - n] = state_bw[0]
    expected = brain.head(torch.cat([torch.stack(fw, 1), torch.stack(bw, 1)], -1)).squeeze(-1)
    torch.testing.assert_close(brain(states), expected)
    # and so are its gradients (the fused C++ loop trains the same cell)
    fused = torch.autograd.grad(brain(states).square().sum(), brain.cell.weight_hh)[0]
    reference = torch.autograd.grad(expected.square().sum(), brain.cell.weight_hh)[0]
    torch.testing.assert_close(fused, reference)
    # with a head symmetric in its two halves, reversing time reverses the Q-values: true only if the backward
    # direction is the forward cell run on the reversed frames
    with torch.no_grad():
        brain.head[1].weight[:, 128:] = brain.head[1].weight[:, :128]
    torch.testing.assert_close(brain(states.flip(1)), brain(states).flip(1), rtol=1e-5, atol=1e-6)


def test_brain_recommend_is_the_argmax_and_honours_a_mask():
    torch.manual_seed(0)
    brain = Brain()
    states = torch.rand(4, 25, 2)
    q = brain(states)
    assert torch.equal(brain.recommend(states), q.argmax(1))
    valid = torch.ones(4, 25, dtype=torch.bool)
    valid[torch.arange(4), q.argmax(1)] = False
    masked = brain.recommend(states, valid)
    assert valid[torch.arange(4), masked].all()
    assert torch.equal(masked, q.masked_fill(~valid, -math.inf).argmax(1))


# -- double DQN -------------------------------------------------------------------------------------------------------


def test_double_dqn_target_online_net_picks_target_net_values():
    rewards = torch.tensor([1.0, 2.0, 0.5])
    online = torch.tensor([[1.0, 3.0, 2.0], [0.0, 1.0, 0.0], [4.0, 0.0, 1.0]], requires_grad=True)
    target = torch.tensor([[5.0, 0.0, 7.0], [9.0, 9.0, 9.0], [2.0, 8.0, 3.0]], requires_grad=True)
    done = torch.tensor([False, True, False])
    # row 0: online argmax 1, target value 0 (the target's own argmax would give 7); row 1 terminal; row 2: online
    # argmax 0, target value 2 (not 8)
    y = double_dqn_targets(rewards, online, target, done, gamma=0.5)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 0.0, 2.0, 0.5 + 0.5 * 2.0]))
    assert not y.requires_grad
    valid = torch.tensor([[True, False, True], [False, False, False], [False, True, True]])
    y = double_dqn_targets(rewards, online, target, done, 0.5, valid_actions=valid)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 7.0, 2.0, 0.5 + 0.5 * 3.0]))
    with pytest.raises(ValueError, match="no valid action"):
        double_dqn_targets(rewards, online, target, torch.zeros(3, dtype=torch.bool), 0.5, valid_actions=valid)


def test_td_loss_kinds():
    q = torch.tensor([0.0, 3.0], requires_grad=True)
    y = torch.tensor([0.5, 0.0])
    assert td_loss(q, y).item() == pytest.approx((0.25 + 9.0) / 2)
    assert td_loss(q, y, "huber").item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)
    assert td_loss(q, y, weights=torch.tensor([1.0, 0.0])).item() == pytest.approx(0.25 / 2)


def test_epsilon_schedule_exponential_as_paper_and_code():
    assert epsilon_schedule(0) == pytest.approx(0.7)
    assert epsilon_schedule(2500) == pytest.approx(0.25 + 0.45 * math.exp(-2.5))
    assert epsilon_schedule(5000) == pytest.approx(0.25 + 0.45 * math.exp(-5.0))  # 0.2530
    assert 0.25 <= epsilon_schedule(100_000) < 0.25 + 1e-9  # beyond: settles at the end value
    for step in (1, 10, 700, 4321):  # the authors' ε = 0.25 + 0.45·exp(−0.5·step/500)
        assert epsilon_schedule(step) == pytest.approx(0.25 + 0.45 * math.exp(-0.5 * step / 500))
    values = [epsilon_schedule(s) for s in range(0, 7_000, 250)]
    assert all(a > b for a, b in zip(values, values[1:]))  # decays, from start towards end
    assert epsilon_schedule(0, kind="linear") == pytest.approx(0.7)
    assert epsilon_schedule(2500, kind="linear") == pytest.approx(0.475)
    assert epsilon_schedule(5000, kind="linear") == pytest.approx(0.25)
    assert epsilon_schedule(9000, kind="linear") == pytest.approx(0.25)


def test_epsilon_greedy_explores_valid_frames_and_is_reproducible():
    q = torch.tensor([[0.0, 5.0, 1.0, 2.0]]).repeat(500, 1)
    assert (epsilon_greedy(q, 0.0, torch.Generator().manual_seed(0)) == 1).all()
    valid = torch.tensor([True, False, True, False]).repeat(500, 1)
    explored = epsilon_greedy(q, 1.0, torch.Generator().manual_seed(0), valid)
    assert set(explored.tolist()) == {0, 2}
    a = epsilon_greedy(q, 0.3, torch.Generator().manual_seed(3))
    b = epsilon_greedy(q, 0.3, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and 0.1 < (a != 1).float().mean() < 0.4  # ≈ 0.3 · 3/4 explored elsewhere


def test_target_updates_hard_and_stochastic():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    hard_update(target, online)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))
    generator = torch.Generator().manual_seed(0)
    copies = [stochastic_hard_update(target, online, 0.05, generator) for _ in range(4000)]
    assert 0.035 < sum(copies) / len(copies) < 0.065
    replay = torch.Generator().manual_seed(0)
    assert copies[:200] == [stochastic_hard_update(target, online, 0.05, replay) for _ in range(200)]
    with torch.no_grad():
        online.weight.add_(1.0)
    assert not stochastic_hard_update(target, online, 0.0, generator)
    assert not torch.equal(target.weight, online.weight)
    assert stochastic_hard_update(target, online, 1.0, generator)
    assert torch.equal(target.weight, online.weight)


# -- replay buffer ----------------------------------------------------------------------------------------------------


def transition(i: int) -> dict[str, torch.Tensor]:
    return {"state": torch.full((4, 2), float(i)), "action": torch.tensor(i), "done": torch.tensor(i % 2 == 0)}


def test_replay_buffer_samples_uniformly_from_the_filled_part():
    buffer = ReplayBuffer(5)
    for i in range(3):
        buffer.push(transition(i))
    assert len(buffer) == 3 and buffer.storage["state"].shape == (5, 4, 2)
    assert buffer.storage["done"].dtype == torch.bool
    counts = torch.bincount(buffer.sample_indices(3000, torch.Generator().manual_seed(0), replacement=True),
                            minlength=5)
    assert counts[3:].sum() == 0 and counts[:3].min() > 850  # 1000 expected each, σ ≈ 26
    batch = buffer.sample(3, torch.Generator().manual_seed(1))
    assert sorted(batch["action"].tolist()) == [0, 1, 2]  # without replacement: all three
    torch.testing.assert_close(batch["state"][:, 0, 0], batch["action"].float())  # entries stay aligned
    with pytest.raises(ValueError):
        buffer.sample(4, torch.Generator())
    with pytest.raises(ValueError):
        buffer.push({"state": torch.zeros(5, 2), "action": torch.tensor(0), "done": torch.tensor(False)})


def test_replay_buffer_wraps_and_extend_matches_pushes():
    buffer = ReplayBuffer(5)
    for i in range(7):
        buffer.push(transition(i))
    assert len(buffer) == 5 and buffer.position == 2
    assert buffer.storage["action"].tolist() == [5, 6, 2, 3, 4]  # 0 and 1 overwritten, oldest first
    other = ReplayBuffer(5)
    other.extend({key: torch.stack([transition(i)[key] for i in range(3)]) for key in ("state", "action", "done")})
    other.extend({key: torch.stack([transition(i)[key] for i in range(3, 7)]) for key in ("state", "action", "done")})
    assert other.position == 2 and all(torch.equal(other.storage[k], buffer.storage[k]) for k in buffer.storage)
    long = ReplayBuffer(5)
    long.extend({key: torch.stack([transition(i)[key] for i in range(7)]) for key in ("state", "action", "done")})
    assert long.position == 2 and torch.equal(long.storage["action"], buffer.storage["action"])


def test_replay_buffer_state_dict_resumes_contents_position_and_samples():
    buffer = ReplayBuffer(5)
    for i in range(7):
        buffer.push(transition(i))
    saved = io.BytesIO()
    torch.save(buffer.state_dict(), saved)
    saved.seek(0)
    resumed = ReplayBuffer(5)
    resumed.load_state_dict(torch.load(saved))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for step in range(3):
        buffer.push(transition(10 + step))
        resumed.push(transition(10 + step))
        a, b = buffer.sample(4, g1), resumed.sample(4, g2)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.position == buffer.position == 0 and resumed.storage["action"].tolist() == [5, 6, 10, 11, 12]
    half = ReplayBuffer(5)
    half.push(transition(0))
    empty = ReplayBuffer(5)
    empty.load_state_dict(half.state_dict())
    assert len(empty) == 1 and empty.position == 1 and empty.storage["state"].shape == (5, 4, 2)
    with pytest.raises(ValueError):
        ReplayBuffer(4).load_state_dict(buffer.state_dict())


# -- the MDP: state, rewards, loss (Eqs. 1-6) -------------------------------------------------------------------------


def test_state_eq1_concatenates_quality_and_counts():
    counts = recommendation_counts([1, 1, 2], 3)
    assert counts.tolist() == [0.0, 2.0, 1.0]
    s = state(torch.tensor([0.5, 0.9, 0.2]), counts)
    assert s.shape == (3, 2) and s.dtype == torch.float32
    torch.testing.assert_close(s, torch.tensor([[0.5, 0.0], [0.9, 2.0], [0.2, 1.0]]))
    assert state(torch.rand(2, 25), torch.zeros(2, 25)).shape == (2, 25, 2)
    with pytest.raises(ValueError):
        recommendation_counts([3], 3)


def test_goal_reward_eq2_and_eq3():
    assert goal_reward(0.80, 0.70, 0.05).item() == pytest.approx(1.0)  # (0.80 − 0.75) / 0.05
    assert goal_reward(0.80, 0.70, 0.05, margin=False).item() == pytest.approx(2.0)  # (0.80 − 0.70) / 0.05
    torch.testing.assert_close(goal_reward(torch.tensor([0.72, 0.75]), 0.70, 0.05), torch.tensor([-0.6, 0.0]))
    with pytest.raises(ValueError):
        goal_reward(0.8, 0.7, 0.0)


def test_random_policy_statistics_per_key_sample_std():
    stats = RandomPolicyStatistics()
    for p in (0.6, 0.7, 0.8):
        stats.add(("bike", 1, 2), p)
    stats.add(("bike", 1, 3), 0.9)
    stats.add(("bike", 2, 2), 0.1)
    stats.add(("bike", 2, 2), 0.3)
    mean, std = stats[("bike", 1, 2)]
    assert mean == pytest.approx(0.7) and std == pytest.approx(0.1)  # ddof = 1 (ddof = 0 would give 0.0816)
    assert stats.mean_std(("bike", 2, 2)) == pytest.approx((0.2, math.sqrt(0.02)))
    assert ("bike", 1, 3) not in stats and stats.count(("bike", 1, 3)) == 1
    with pytest.raises(KeyError):
        stats.mean_std(("bike", 1, 3))
    copy = RandomPolicyStatistics()
    copy.load_state_dict(stats.state_dict())
    assert copy[("bike", 1, 2)] == stats[("bike", 1, 2)]


def test_auxiliary_reward_eq4_ties_count_as_fewest():
    counts = torch.tensor([1.0, 0.0, 0.0, 2.0]).repeat(4, 1)
    torch.testing.assert_close(auxiliary_reward(counts, torch.tensor([1, 2, 0, 3])),
                               torch.tensor([1.0, 1.0, -1.0, -1.0]))


def test_episode_transitions_judge_each_action_against_the_history_before_it():
    quality = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 0.9, 0.9, 0.9]])
    out = episode_transitions(quality, [2, 0, 0])  # round 1: the user's frame 2; then frames 0 and 0
    torch.testing.assert_close(out["state"][:, :, 1], torch.tensor([[0.0, 0, 1, 0], [1, 0, 1, 0]]))
    torch.testing.assert_close(out["next_state"][:, :, 1], torch.tensor([[1.0, 0, 1, 0], [2, 0, 1, 0]]))
    torch.testing.assert_close(out["state"][:, :, 0], quality[:2])
    torch.testing.assert_close(out["next_state"][:, :, 0], quality[1:])
    assert out["action"].tolist() == [0, 0] and out["round"].tolist() == [2, 3]
    assert out["aux_reward"].tolist() == [1.0, -1.0] and out["done"].tolist() == [False, True]
    assert episode_transitions(quality, [2, 0, 0], complete=False)["done"].tolist() == [False, False]


def loss_batch():
    q = torch.tensor([[0.2, 0.5, -0.1], [0.3, 0.0, 0.4]], requires_grad=True)
    return dict(
        q_values=q,
        actions=torch.tensor([1, 2]),
        next_q_online=torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0]]),
        next_q_target=torch.tensor([[5.0, 2.0, 7.0], [9.0, 9.0, 9.0]]),
        aux_rewards=torch.tensor([1.0, -1.0]),
        goal_rewards=torch.tensor([2.0, -0.5]),
        done=torch.tensor([False, True]),
    )


def test_eq5_targets_and_eq6_loss_without_decomposition():
    batch = loss_batch()
    out = agent_loss(**batch, gamma=0.95, delta=0.1, decomposition=False)
    # row 0 (t < T): y = 0.1·1 + 0.95·Q_T(s', argmax Q_P(s') = 1) = 0.1 + 0.95·2 = 2.0 (target's argmax: 0.1 + 6.65)
    # row 1 (t = T): y = 0.1·(−0.5) = −0.05, no bootstrap, no r_aux
    assert out["target_step"][0].item() == pytest.approx(2.0)
    assert out["target_done"].tolist() == pytest.approx([0.2, -0.05])
    assert out["loss"].item() == pytest.approx(((0.5 - 2.0) ** 2 + (0.4 + 0.05) ** 2) / 2)  # 1.22625
    out["loss"].backward()
    grad = batch["q_values"].grad
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.5 - 2.0, 0.0], [0.0, 0.0, 0.4 + 0.05]]))


def test_task_decomposition_adds_the_terminal_term_of_every_non_terminal_step():
    plain = agent_loss(**loss_batch(), decomposition=False)
    batch = loss_batch()
    decomposed = agent_loss(**batch, decomposition=True)
    # row 0 is also the last step of the sub-task T' = t: + (Q − δ·r_goal)² = (0.5 − 0.2)² over B = 2
    assert decomposed["loss"].item() - plain["loss"].item() == pytest.approx((0.5 - 0.2) ** 2 / 2)  # 0.045
    assert decomposed["loss"].item() == pytest.approx(1.27125)
    assert decomposed["loss_done"].item() == pytest.approx(((0.5 - 0.2) ** 2 + (0.4 + 0.05) ** 2) / 2)
    assert decomposed["loss_step"].item() == pytest.approx((0.5 - 2.0) ** 2 / 2)  # terminal row: no step term
    decomposed["loss"].backward()
    assert batch["q_values"].grad[0, 1].item() == pytest.approx((0.5 - 2.0) + (0.5 - 0.2))  # −1.2
