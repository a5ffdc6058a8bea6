"""`critic_repeats`: the critic also regresses the re-take of an earlier mask, whose outcome Eq. 3 makes exact."""

from __future__ import annotations

import math

import pytest
import torch

from test_acis import tiny_batch, tiny_module
from test_acis_defects import inputs, painting, without_trainer
from zoo.acis.module import repeat_action_targets

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def two_leaves():
    leaf_a = torch.zeros(8, 8, dtype=torch.bool)
    leaf_a[:, :4] = True
    return torch.stack([leaf_a, ~leaf_a])


def test_a_true_duplicate_is_worth_gamma_times_the_return_from_the_unchanged_state():
    gt = two_leaves()
    targets = repeat_action_targets(gt.clone(), gt, torch.tensor([1.9, 1.0]), [0, 0], gamma=0.9)
    assert math.isnan(targets[0])  # nothing to repeat at the first step
    assert float(targets[1]) == pytest.approx(0.9 * 1.0)


def test_a_repeat_that_raises_the_matching_adds_that_change_to_the_target():
    gt = two_leaves()
    both = gt.any(0)  # one mask over both leaves: Dice 2/3 with each
    predictions = torch.stack([both, torch.zeros_like(both)])
    targets = repeat_action_targets(predictions, gt, torch.tensor([0.5, 0.25]), [0, 0], gamma=0.9)
    # before: the one mask matches one leaf (2/3); with its copy both leaves are matched (4/3)
    assert float(targets[1]) == pytest.approx(2 / 3 + 0.9 * 0.25)


def test_the_critic_regresses_earlier_masks_at_the_later_states_with_their_targets():
    module = without_trainer(tiny_module(critic_warmup=10_000, critic_repeats=True))
    image, aux, pyramid, gts = inputs(module, tiny_batch(batch_size=1))  # 3 leaves, painted in turn: rewards 1, 1, 1
    leaves = gts[0]
    module.decoder.forward = painting(list(leaves))
    asked, losses = [], []

    def critic(image, accumulated, mask, aux):
        asked.append((accumulated.clone(), mask.clone()))
        return torch.zeros(len(image), requires_grad=True)

    module.critic.forward = critic
    module.manual_backward = lambda loss: losses.append(float(loss.detach()))
    torch.manual_seed(0)
    module.actor_critic_update(image, aux, pyramid, gts, torch.tensor([3]), 3)
    # step 0: its own mask only; steps 1 and 2: own mask, then a re-taken earlier leaf at the same state
    assert len(asked) == 5
    for (state, own), (same_state, repeated) in ((asked[1], asked[2]), (asked[3], asked[4])):
        torch.testing.assert_close(state, same_state)
        assert not torch.equal(own, repeated)
        assert any(torch.equal(repeated[0, 0] > 0.5, leaf) for leaf in leaves)
        assert bool((repeated <= state + 1e-6).all())  # inside M_t: Eq. 3 leaves the state as it is
    gamma, returns = 0.9, [1 + 0.9 + 0.81, 1 + 0.9, 1.0]
    expected = [returns[0] ** 2 / 3, (returns[1] ** 2 + (gamma * returns[1]) ** 2) / 3,
                (returns[2] ** 2 + (gamma * returns[2]) ** 2) / 3]
    assert losses == pytest.approx(expected, rel=1e-5)


def test_without_the_option_the_critic_sees_only_the_actors_masks():
    module = without_trainer(tiny_module(critic_warmup=10_000))
    image, aux, pyramid, gts = inputs(module, tiny_batch(batch_size=1))
    module.decoder.forward = painting(list(gts[0]))
    calls = []
    module.critic.forward = lambda image, accumulated, mask, aux: calls.append(1) or torch.zeros(1, requires_grad=True)
    module.manual_backward = lambda loss: None
    module.actor_critic_update(image, aux, pyramid, gts, torch.tensor([3]), 3)
    assert len(calls) == 3
