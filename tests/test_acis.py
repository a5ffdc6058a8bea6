"""ACIS: potential/reward (Eq. 4-5), discounted critic targets, gradient paths, termination, checkpoints,
the inference network's input handling."""

from __future__ import annotations

import math
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.acis.env import angle_targets, episode_rewards, potential, transition
from zoo.acis.model import ACISSegmenter, labels_from_masks
from zoo.acis.module import ActorCriticModule, prepare_batch
from zoo.acis.networks import ACISConfig, state_pyramid
from zoo.rl.returns import discounted_returns

TINY = ACISConfig(
    height=32, width=32, latent_size=4, preproc_widths=[4, 4, 4, 4, 4], preproc_fc=8,
    encoder_widths=[4, 4, 4, 4, 8], bottleneck=16, rnn_size=16, feature_size=8, latent_channels=4,
    decoder_widths=[8, 8, 4, 4, 4], critic_widths=[4, 4, 4, 4, 8], critic_fc=[16, 16, 8], control_size=8,
)


def strip(*spans, width=20):
    """Masks on a 1 x width image, each covering [start, stop)."""
    masks = np.zeros((len(spans), 1, width), dtype=bool)
    for k, (start, stop) in enumerate(spans):
        masks[k, 0, start:stop] = True
    return masks


def test_potential_and_reward_follow_the_reordered_max_matching():
    gt = strip((0, 10), (10, 20))  # a | b
    first = strip((4, 14))  # Dice 0.6 with a, 0.4 with b
    both = np.concatenate([first, strip((0, 10))])  # the second prediction is exactly a
    assert potential(first, gt, "dice") == pytest.approx(0.6)
    # the second prediction takes a, so the matching moves the first one to b: 0.4 + 1.0
    assert potential(both, gt, "dice") == pytest.approx(1.4)
    np.testing.assert_allclose(episode_rewards(both, gt, "dice"), [0.6, 0.8])
    # with IoU: first = 6/14 with a, 4/16 with b; re-ordered = 4/16 + 1
    np.testing.assert_allclose(episode_rewards(both, gt, "iou"), [6 / 14, 0.25 + 1 - 6 / 14])


def test_potential_of_no_prediction_or_no_ground_truth_is_zero():
    gt = strip((0, 10))
    assert potential(np.zeros((0, 1, 20), bool), gt) == 0.0
    np.testing.assert_allclose(episode_rewards(strip((0, 5), (5, 9)), np.zeros((0, 1, 20), bool)), [0.0, 0.0])


def test_transition_is_a_pixelwise_max():
    accumulated = torch.tensor([[0.0, 0.7, 1.0]])
    mask = torch.tensor([[0.5, 0.2, 0.0]])
    assert torch.equal(transition(accumulated, mask), torch.tensor([[0.5, 0.7, 1.0]]))


def test_discounted_returns_match_hand_computed_targets():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 9.0]])
    in_episode = torch.tensor([[True, True, True], [True, True, False]])
    returns = discounted_returns(rewards, 0.9, in_episode)
    expected = torch.tensor([[1 + 0.81 * 2, 0.9 * 2, 2.0], [0.5 + 0.45, 0.5, 0.0]])
    torch.testing.assert_close(returns, expected)
    with pytest.raises(ValueError):
        discounted_returns(rewards, 1.5)


def test_angle_targets_bin_the_direction_from_the_centroid():
    masks = torch.zeros(1, 9, 9, dtype=torch.bool)
    masks[0, 2:7, 2:7] = True  # centroid (4, 4)
    classes = angle_targets(masks)
    assert classes[0, 0] == -1  # background
    # atan2(0, +2) = 0, shifted by pi/8 -> bin floor((pi/8 + pi) * 8 / 2pi) = 4
    assert classes[4, 6] == 4
    # straight left: atan2(0, -2) = pi -> + pi/8 wraps to -7pi/8 -> bin 0
    assert classes[4, 2] == 0
    assert set(classes[masks[0]].tolist()) == set(range(8))


def tiny_batch(batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(batch_size, 32, 32, dtype=torch.long)
    labels[:, 4:14, 4:14] = 1
    labels[:, 18:28, 16:30] = 2
    labels[-1, 2:8, 20:30] = 3
    image = torch.rand(batch_size, 3, 32, 32, generator=generator) * 0.3
    image[:, 1] += 0.6 * (labels > 0)
    return {"image": image, "labels": labels}


def tiny_module(**kwargs) -> ActorCriticModule:
    torch.manual_seed(0)
    return ActorCriticModule(TINY.to_dict(), **{"critic_warmup": 0, "critic_iter": 1, "curriculum": [[0, 3]], **kwargs})


def test_actor_gradient_reaches_the_encoder_through_the_frozen_decoder_only():
    module = tiny_module()
    batch = tiny_batch()
    image = batch["image"]
    aux = module.preproc.channels(image)
    policy, _, _ = module.actor(image, torch.zeros_like(image[:, :1]), aux)
    mask = torch.sigmoid(module.decoder(policy.rsample(), state_pyramid(image, aux, TINY.levels)))
    (-module.critic(image, torch.zeros_like(mask), mask, aux).sum()).backward()
    assert all(p.grad is None for p in module.decoder.parameters())
    assert all(p.grad is None for p in module.preproc.parameters())
    head_grad = module.actor.head.net[0].weight.grad
    trunk_grad = module.actor.trunk[0].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0
    assert trunk_grad is not None and trunk_grad.abs().sum() > 0


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def fit_one_batch(module, batches=1, **trainer_kwargs):
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, **trainer_kwargs)
    trainer.fit(module, DataLoader([tiny_batch(seed=i) for i in range(batches)], batch_size=None))
    return trainer


def test_actor_critic_update_moves_actor_and_critic_but_not_the_decoder():
    module = tiny_module()
    decoder, actor, critic = snapshot(module.decoder), snapshot(module.actor), snapshot(module.critic)
    trainer = fit_one_batch(module)
    assert trainer.global_step == 2  # one actor and one critic optimizer step (manual optimisation)
    assert all(torch.equal(p, decoder[n]) for n, p in module.decoder.named_parameters())
    assert any(not torch.equal(p, actor[n]) for n, p in module.actor.named_parameters())
    assert any(not torch.equal(p, critic[n]) for n, p in module.critic.named_parameters())


@pytest.mark.parametrize("mode", [{"mode": "AC"}, {"mode": "BL-Trunc", "sampled_states": True, "curriculum": [[0, 1]]}])
def test_training_logs_losses_without_converting_tensors_that_require_grad(mode):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*requires_grad=True to a scalar")
        fit_one_batch(tiny_module(**mode))


def test_critic_warmup_keeps_the_actor_still():
    module = tiny_module(critic_warmup=5)
    actor = snapshot(module.actor)
    trainer = fit_one_batch(module, batches=2)
    assert trainer.global_step == 2  # critic steps only
    assert all(torch.equal(p, actor[n]) for n, p in module.actor.named_parameters())


def test_termination_loss_uses_the_ground_truth_count():
    logits = torch.tensor([0.3, -1.2])
    counts = torch.tensor([2, 0])
    bce = lambda x, y: -(y * math.log(torch.sigmoid(x)) + (1 - y) * math.log(1 - torch.sigmoid(x)))  # noqa: E731
    # step 0: the first image continues, the empty one stops
    expected = bce(logits[0], 1.0) + bce(logits[1], 0.0)
    assert float(ActorCriticModule.termination_loss(logits, 0, counts)) == pytest.approx(float(expected), rel=1e-5)
    # step 2: the first image stops; the second is past its episode and is ignored
    assert float(ActorCriticModule.termination_loss(logits, 2, counts)) == pytest.approx(float(bce(logits[0], 0.0)), rel=1e-5)


def segmenter_with_control_bias(bias: float, max_steps=21) -> ACISSegmenter:
    torch.manual_seed(0)
    segmenter = ACISSegmenter.from_config(TINY, max_steps=max_steps).eval()
    with torch.no_grad():
        segmenter.actor.control[-1].weight.zero_()
        segmenter.actor.control[-1].bias.fill_(bias)
    return segmenter


def test_inference_stops_on_the_termination_unit():
    image = torch.rand(1, 3, 32, 32)
    assert len(segmenter_with_control_bias(-5.0).predict_masks(image)) == 0  # P(stop) > 0.7 at once
    assert len(segmenter_with_control_bias(5.0, max_steps=7).predict_masks(image)) == 7  # never stops


def test_segment_returns_consecutive_ids_in_prediction_order_at_input_size():
    segmenter = segmenter_with_control_bias(5.0, max_steps=4)
    labels, order = segmenter.segment(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    assert labels.shape == (50, 70)
    assert order == list(range(1, len(order) + 1))
    assert set(np.unique(labels)) - {0} == set(order)


def test_labels_from_masks_keeps_order_gives_pixels_to_the_first_mask_and_drops_empty_ones():
    probabilities = np.zeros((4, 4, 4), dtype=np.float32)
    probabilities[0, :2] = 0.9
    probabilities[1, :2] = 0.95  # a repeat of the first mask: owns no pixel, dropped
    probabilities[2, 1:] = 0.8  # overlaps the first mask on row 1, which stays the first mask's
    probabilities[3] = 0.2  # below the threshold: dropped
    labels, order = labels_from_masks(probabilities, (4, 4), threshold=0.3)
    assert order == [1, 2]
    assert (labels[:2] == 1).all() and (labels[2:] == 2).all()


def test_segment_refuses_bad_images_clearly():
    segmenter = segmenter_with_control_bias(5.0, max_steps=2)
    with pytest.raises(ValueError, match="alpha"):
        segmenter.segment(np.zeros((40, 40, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        segmenter.segment(np.zeros((40, 40, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="16-bit"):
        segmenter.segment(np.zeros((40, 40, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match="H x W x 3"):
        segmenter.segment(np.zeros((40, 40), dtype=np.uint8))


def test_image_without_leaves_gives_an_empty_label_map_when_the_model_stops():
    labels, order = segmenter_with_control_bias(-5.0).segment(np.full((60, 60, 3), 90, dtype=np.uint8))
    assert order == [] and labels.shape == (60, 60) and not labels.any()


def test_hub_folder_round_trip_is_strict_and_exact(tmp_path):
    from zoo.hub import load_folder

    segmenter = segmenter_with_control_bias(1.0)
    segmenter.save_pretrained(tmp_path)
    loaded = load_folder(tmp_path, expected_type="acis")
    assert loaded.config == TINY
    image = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded.predict_masks(image), segmenter.predict_masks(image))


def test_float16_storage_halves_the_file_and_loads_back_into_float32_within_rounding(tmp_path):
    from safetensors import safe_open

    from zoo.hub import load_folder

    segmenter = segmenter_with_control_bias(1.0)
    segmenter.save_pretrained(tmp_path / "float32")
    half = ACISSegmenter.from_config(TINY, storage_dtype="float16")
    half.load_state_dict(segmenter.state_dict())
    half.save_pretrained(tmp_path / "float16")
    sizes = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in ("float32", "float16")}
    assert sizes["float16"] < 0.6 * sizes["float32"]
    with safe_open(str(tmp_path / "float16" / "model.safetensors"), "pt") as stored:
        assert stored.get_tensor("decoder.out.weight").dtype == torch.float16
    loaded = load_folder(tmp_path / "float16", expected_type="acis")
    assert loaded.storage_dtype == "float16" and loaded.decoder.out.weight.dtype == torch.float32
    for name, value in segmenter.state_dict().items():
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        torch.testing.assert_close(loaded.state_dict()[name], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="storage_dtype"):
        ACISSegmenter.from_config(TINY, storage_dtype="int8")


def test_checkpoint_is_weights_only_safe_and_restores_curriculum(tmp_path):
    # the RNG state saved with it comes back only when a Trainer resumes (tests/test_acis_defects.py)
    module = tiny_module(curriculum=[[0, 2], [2, 3]])
    trainer = fit_one_batch(module, batches=3)
    assert module.sequence_length() == 3
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert int(checkpoint["state_dict"]["updates"]) == 3
    restored = ActorCriticModule.load_from_checkpoint(path, weights_only=True)
    assert restored.sequence_length() == 3 and restored.hparams.mode == "AC"


def test_critic_learns_the_returns_of_a_fixed_batch():
    """Fast sanity check of the policy-evaluation half: the critic's regression error falls."""
    module = tiny_module(critic_warmup=10_000, lr=3e-3)
    # one epoch over 30 copies of the batch: 30 epochs of one batch spent most of a minute in per-epoch overhead
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(trainer.callback_metrics["train/loss_value"]))

    trainer.callbacks.append(Record())
    torch.manual_seed(0)
    trainer.fit(module, DataLoader([tiny_batch()] * 30, batch_size=None))
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.slow
def test_actor_critic_training_raises_sbd_above_the_pretrained_actor(tmp_path):
    """The recipe at a reduced schedule: the AC stage must beat the actor it starts from on held-out rosettes."""
    import json

    from recipes.acis_cvppp import main

    main(["--run-dir", str(tmp_path), "--epochs-scale", "0.6"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["SBD"] > metrics["before_train_stage"]["SBD"]


def test_next_leaf_target_skips_covered_leaves_and_stops_when_all_are_covered():
    from zoo.acis.module import next_leaf_target

    gt = torch.zeros(3, 8, 8, dtype=torch.bool)
    gt[0, :4, :4] = True  # 16 px
    gt[1, 4:, 4:] = True  # 16 px
    gt[2, :2, 6:] = True  # 4 px
    nothing = torch.zeros(8, 8, dtype=torch.bool)
    # the prediction overlaps leaf 0 best, but leaf 0 is covered: the best remaining match is leaf 2
    probability = (gt[0] | gt[2]).float()
    assert next_leaf_target(gt, gt[0], probability) == 2
    assert next_leaf_target(gt, nothing, probability) == 0
    # no Dice reaches 0.2: the largest uncovered leaf; "size" order always takes the largest
    assert next_leaf_target(gt, gt[0], torch.zeros(8, 8)) == 1
    assert next_leaf_target(gt, nothing, gt[2].float(), order="size") == 0
    # a leaf counts as covered when more than half of it lies in the region
    mostly_covered = gt[0] | gt[1] | gt[2]
    mostly_covered[:2, 6] = False  # half of leaf 2 stays uncovered: still a candidate
    assert next_leaf_target(gt, mostly_covered, probability) == 2
    assert next_leaf_target(gt, gt.any(0), probability) is None
    assert next_leaf_target(gt[:0], nothing, probability) is None
    # a leaf already trained towards in this episode is done, however faint its mask in M_t
    assert next_leaf_target(gt, nothing, probability, assigned=torch.tensor([True, False, False])) == 2
    assert next_leaf_target(gt, nothing, torch.zeros(8, 8), assigned=torch.tensor([False, True, False])) == 0
    assert next_leaf_target(gt, nothing, probability, assigned=torch.ones(3, dtype=torch.bool)) is None


def test_the_init_rollout_never_trains_two_steps_of_an_episode_towards_the_same_leaf(monkeypatch):
    """From M_1 = 0 the untrained decoder's masks are faint (bias -4), so no leaf ever becomes half covered: only the
    episode's record of its targets keeps the rollout from training the largest leaf at every step."""
    import zoo.acis.module as acis_module

    calls = []
    choose = acis_module.next_leaf_target

    def recording(gt, covered, probability, order="dice", assigned=None):
        target = choose(gt, covered, probability, order, assigned)
        calls.append((len(gt), target))
        return target

    monkeypatch.setattr(acis_module, "next_leaf_target", recording)
    module = tiny_module(mode="BL-Trunc", sampled_states=True, rollout=3, rollout_fraction=1.0)
    module.optimizers = lambda: torch.optim.SGD(module.actor.parameters(), lr=0.0)
    module.manual_backward = lambda loss: loss.backward()
    module.clip_gradients = lambda *args, **kwargs: None
    image, gts = acis_module.prepare_batch(tiny_batch(), module.config)
    aux = module.preproc.channels(image)
    module.sampled_state_update(image, aux, acis_module.state_pyramid(image, aux, module.config.levels), gts)
    per_image = [[target for _, target in calls[i::len(gts)]] for i in range(len(gts))]
    for gt, targets in zip(gts, per_image):
        chosen = [t for t in targets if t is not None]
        assert len(chosen) == len(set(chosen)) == min(3, len(gt))


def test_sampled_state_init_step_moves_the_actor_only():
    module = tiny_module(mode="BL-Trunc", sampled_states=True, curriculum=[[0, 1]])
    before_actor = [p.detach().clone() for p in module.actor.parameters()]
    before_decoder = [p.detach().clone() for p in module.decoder.parameters()]
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, DataLoader([tiny_batch()] * 2, batch_size=None))
    assert any(not torch.equal(a, b) for a, b in zip(before_actor, module.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before_decoder, module.decoder.parameters()))
    assert torch.isfinite(trainer.callback_metrics["train/termination"])


def test_init_rollout_feeds_the_actor_its_own_accumulated_masks_and_ends_after_the_stop_step():
    module = tiny_module(mode="BL-Trunc", sampled_states=True, curriculum=[[0, 1]], rollout=6, rollout_fraction=1.0)
    batch = tiny_batch(batch_size=1)
    image, gts = prepare_batch(batch, module.config)
    aux = module.preproc.channels(image)
    pyramid = state_pyramid(image, aux, TINY.levels)
    seen, actor_forward = [], module.actor.forward

    def recording_actor(image, accumulated, aux, hidden=None):
        seen.append((accumulated.detach().clone(), hidden))
        return actor_forward(image, accumulated, aux, hidden)

    module.actor.forward = recording_actor
    module.optimizers = lambda: torch.optim.SGD(module.actor.parameters(), lr=0.0)
    module.manual_backward = lambda loss: loss.backward()
    module.clip_gradients = lambda *args, **kwargs: None
    # the decoder paints each of the three leaves in turn, in the order the targets take them (the tiny module orders
    # by size: 140, 100, 60 pixels), so the episode stops at step 4
    leaves = gts[0].float()
    decoded = iter([leaves[1], leaves[0], leaves[2], leaves[2], leaves[2]])
    module.decoder.forward = lambda action, pyramid: torch.logit(next(decoded).clamp(1e-4, 1 - 1e-4))[None, None]
    module.sampled_state_update(image, aux, pyramid, gts)
    assert len(leaves) == 3 and len(seen) == 4  # three leaves, then the stop step; no step after it
    assert torch.equal(seen[0][0], torch.zeros_like(seen[0][0])) and seen[0][1] is None  # rollout_fraction 1: empty start
    assert torch.allclose(seen[1][0][0, 0], leaves[1], atol=1e-3)  # M_2 = max(M_1, D(mu_1))
    assert torch.allclose(seen[3][0][0, 0], leaves.amax(0), atol=1e-3)
    assert seen[3][1] is not None  # the LSTM state is carried along the rollout
