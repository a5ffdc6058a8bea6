"""DRLT: REINFORCE gradient, baseline, rewards (Eq. 2 / Eq. 3), environment, tracker I/O, hub folder, exact resume."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from zoo.drlt.env import (
    TrackingEnvironment,
    TrainingVideo,
    distance_reward,
    iou_reward,
    normalized_to_otb,
    otb_to_normalized,
)
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule
from zoo.drlt.networks import GaussianLocationPolicy
from zoo.rl.policy_gradient import per_step_baseline, reinforce_loss, rewards_to_go

TINY = {"backbone": "mobilenetv3_small_050", "input_size": 64, "grid_size": 2, "hidden_size": 8}


# -- REINFORCE -------------------------------------------------------------------------------------------------------
def test_reinforce_gradient_matches_hand_computed_case():
    """Ascent direction = (1/N) Σ_i (l_i - μ)/σ² (R_i - b): worked out by hand for N = 2, σ = 0.1."""
    sigma = 0.1
    mu = torch.tensor([[0.5, 0.5, 0.2, 0.2]], requires_grad=True)  # (T=1, 4)
    actions = torch.stack([mu.detach() + torch.tensor([0.1, 0.0, 0.0, 0.0]),
                           mu.detach() + torch.tensor([-0.1, 0.2, 0.0, 0.0])])  # (N=2, T=1, 4)
    rewards = torch.tensor([[1.0], [0.0]])  # b = 0.5, advantages +0.5 / -0.5
    policy = GaussianLocationPolicy(sigma, seed=0)
    loss = reinforce_loss(policy.log_prob(mu, actions), rewards)["loss_actor"]
    loss.backward()
    # x: ½[(0.1/0.01)(0.5) + (-0.1/0.01)(-0.5)] = 5;  y: ½[0 + (0.2/0.01)(-0.5)] = -5;  w, h: 0
    torch.testing.assert_close(-mu.grad, torch.tensor([[5.0, -5.0, 0.0, 0.0]]))


def test_reinforce_gradient_equals_formula_on_random_case():
    generator = torch.Generator().manual_seed(3)
    sigma, episodes = 0.01, 5
    mu = torch.rand(2, 3, 4, generator=generator).requires_grad_(True)  # (B, T, 4)
    policy = GaussianLocationPolicy(sigma, seed=1)
    actions = policy.sample(mu, episodes)
    rewards = torch.rand(episodes, 2, 3, generator=generator)
    reinforce_loss(policy.log_prob(mu, actions), rewards)["loss_actor"].backward()
    advantage = rewards - rewards.mean(0, keepdim=True)
    # mean over the N episodes (Eq. 7) and over the B = 2 videos of the batch
    expected = ((actions - mu.detach()) / sigma**2 * advantage[..., None]).mean(0) / 2
    torch.testing.assert_close(-mu.grad, expected, rtol=1e-4, atol=1e-3)


def test_baseline_is_the_per_step_mean_over_episodes():
    rewards = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 0.5], [5.0, 2.0, 1.0]])  # (N=3, T=3)
    torch.testing.assert_close(per_step_baseline(rewards), torch.tensor([3.0, 2.0, 0.5]))
    out = reinforce_loss(torch.zeros(3, 3), rewards)
    torch.testing.assert_close(out["baseline"], torch.tensor([3.0, 2.0, 0.5]))
    # step 2 gave every episode the same reward: no advantage, so it cannot move the policy
    torch.testing.assert_close(out["advantage"][:, 1], torch.zeros(3))


def test_masked_steps_carry_no_gradient_and_rewards_to_go():
    log_probs = torch.zeros(2, 3, requires_grad=True)
    rewards = torch.tensor([[1.0, 5.0, 2.0], [0.0, -5.0, 1.0]])
    mask = torch.tensor([True, False, True])
    reinforce_loss(log_probs, rewards, mask)["loss_actor"].backward()
    assert log_probs.grad[:, 1].abs().sum() == 0 and log_probs.grad[:, 0].abs().sum() > 0
    torch.testing.assert_close(rewards_to_go(rewards, mask), torch.tensor([[3.0, 2.0, 2.0], [1.0, 1.0, 1.0]]))


def test_reinforce_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must match"):
        reinforce_loss(torch.zeros(5, 10), torch.zeros(5, 9))


# -- rewards and boxes ------------------------------------------------------------------------------------------------
def test_distance_reward_eq2_hand_computed():
    location = torch.tensor([0.5, 0.5, 0.2, 0.2])
    target = torch.tensor([0.6, 0.4, 0.2, 0.5])  # |l - g| = (0.1, 0.1, 0, 0.3): mean 0.125, max 0.3
    assert distance_reward(location, target).item() == pytest.approx(-0.425)
    assert distance_reward(target, target).item() == 0.0


def test_iou_reward_eq3_hand_computed():
    location = torch.tensor([0.5, 0.5, 0.2, 0.2])  # [0.4, 0.6] × [0.4, 0.6]
    shifted = torch.tensor([0.6, 0.5, 0.2, 0.2])  # [0.5, 0.7] × [0.4, 0.6]: ∩ 0.02, ∪ 0.06
    far = torch.tensor([0.9, 0.9, 0.1, 0.1])
    assert iou_reward(location, shifted).item() == pytest.approx(1 / 3)
    assert iou_reward(location, location).item() == pytest.approx(1.0)
    assert iou_reward(location, far).item() == 0.0
    assert iou_reward(torch.tensor([0.5, 0.5, -0.1, 0.2]), location).item() == 0.0


def test_iou_reward_equals_otb_overlap_on_pixel_boxes():
    from zoo.metrics.otb import overlap_ratio

    rng = np.random.default_rng(0)
    image_size = (240, 320)
    pred = np.column_stack([rng.uniform(1, 200, 20), rng.uniform(1, 150, 20), rng.uniform(5, 100, 20),
                            rng.uniform(5, 80, 20)])
    gt = pred + rng.normal(0, 15, pred.shape)
    gt[:, 2:] = np.abs(gt[:, 2:]) + 1
    ours = iou_reward(otb_to_normalized(pred, image_size), otb_to_normalized(gt, image_size)).numpy()
    np.testing.assert_allclose(ours, overlap_ratio(pred, gt), atol=1e-5)


def test_box_conversion_hand_computed_and_round_trip():
    image_size = (100, 200)  # height, width
    location = otb_to_normalized(np.array([1.0, 1.0, 10.0, 20.0]), image_size)
    torch.testing.assert_close(location, torch.tensor([0.025, 0.1, 0.05, 0.2]))
    boxes = np.array([[12.5, 40.0, 33.0, 17.0], [1.0, 1.0, 200.0, 100.0]])
    np.testing.assert_allclose(normalized_to_otb(otb_to_normalized(boxes, image_size), image_size), boxes, atol=1e-4)


# -- environment ------------------------------------------------------------------------------------------------------
def _video(name: str, frames: int, dim: int = 3) -> TrainingVideo:
    locations = torch.linspace(0.1, 0.9, frames)[:, None].repeat(1, 4)
    features = torch.arange(frames, dtype=torch.float32)[:, None].repeat(1, dim)
    return TrainingVideo(name, features, locations)


def test_environment_hands_out_consecutive_chunks_and_restarts():
    short, long = _video("short", 4), _video("long", 7)
    long.locations[5] = float("nan")  # a frame without ground truth
    env = TrackingEnvironment([short, long], steps_per_chunk=3)
    assert env.chunks_per_epoch == 3
    first = env.next_chunk()
    assert first.restart.tolist() == [True, True]
    torch.testing.assert_close(first.location_inputs[:, 0], torch.stack([short.locations[0], long.locations[0]]))
    assert first.location_inputs[:, 1:].abs().sum() == 0  # s_t = 0 after the first frame
    second = env.next_chunk()
    assert second.restart.tolist() == [False, False]
    assert second.features[0, :, 0].tolist() == [3.0, 0.0, 0.0] and second.valid[0].tolist() == [True, False, False]
    assert second.valid[1].tolist() == [True, True, False]  # frame 5 has no box
    third = env.next_chunk()
    assert third.restart.tolist() == [True, False]  # "short" is used up and starts again
    assert third.features[1, 0, 0].item() == 6.0


def test_environment_rejects_bad_videos():
    with pytest.raises(ValueError, match="first frame"):
        TrainingVideo("v", torch.zeros(3, 2), torch.tensor([[float("nan")] * 4, [0.5] * 4, [0.5] * 4]))
    with pytest.raises(ValueError, match="no frames"):
        TrainingVideo("v", torch.zeros(0, 2), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="at least one"):
        TrackingEnvironment([])


# -- tracker I/O ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tracker() -> DRLTTracker:
    torch.manual_seed(0)
    return DRLTTracker(**TINY).eval()


def _frames(count: int, size=(48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(count)]


def test_track_returns_one_otb_box_per_frame(tiny_tracker):
    boxes = tiny_tracker.track(_frames(6), [10, 12, 20, 15])
    assert boxes.shape == (6, 4) and boxes.dtype == np.float64
    np.testing.assert_array_equal(boxes[0], [10, 12, 20, 15])
    assert np.isfinite(boxes).all()


def test_track_from_paths_equals_track_from_arrays(tiny_tracker, tmp_path):
    import cv2

    frames = _frames(4)
    paths = []
    for index, frame in enumerate(frames):
        path = tmp_path / f"{index + 1:04d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        paths.append(path)
    np.testing.assert_allclose(tiny_tracker.track(paths, [5, 5, 10, 10]), tiny_tracker.track(frames, [5, 5, 10, 10]))


def test_track_rejects_frames_of_different_sizes(tiny_tracker):
    frames = _frames(3) + _frames(1, size=(50, 64))
    with pytest.raises(ValueError, match="frame 3 is 64×50 but frame 0 is 64×48"):
        tiny_tracker.track(frames, [10, 12, 20, 15])


@pytest.mark.parametrize("box", [[70, 10, 5, 5], [-30, 10, 20, 20], [10, 60, 5, 5], [10, 10, 0, 5], [np.nan, 1, 2, 3]])
def test_track_rejects_initial_box_outside_image(tiny_tracker, box):
    with pytest.raises(ValueError, match="outside|non-positive|finite"):
        tiny_tracker.track(_frames(2), box)


def test_track_rejects_empty_video(tiny_tracker):
    with pytest.raises(ValueError, match="empty"):
        tiny_tracker.track([], [1, 1, 5, 5])
    with pytest.raises(ValueError, match="empty"):
        tiny_tracker.track_features(torch.zeros(0, tiny_tracker.feature_dim), [1, 1, 5, 5], (48, 64))


def test_track_rejects_non_rgb_frames(tiny_tracker):
    with pytest.raises(ValueError, match="uint8 RGB"):
        tiny_tracker.track([np.zeros((48, 64), np.uint8)], [1, 1, 5, 5])


def test_hub_folder_round_trip_is_strict_and_exact(tiny_tracker, tmp_path):
    from zoo.hub import load_folder

    tiny_tracker.save_pretrained(tmp_path)
    loaded = load_folder(tmp_path, expected_type="drlt")
    frames = _frames(5)
    np.testing.assert_array_equal(loaded.track(frames, [10, 12, 20, 15]), tiny_tracker.track(frames, [10, 12, 20, 15]))


def test_published_configuration_fits_20_mb():
    tracker = DRLTTracker()  # the defaults are the published configuration
    size = sum(t.numel() * t.element_size() for t in tracker.state_dict().values())
    assert size <= 20e6, f"{size / 1e6:.1f} MB"


def test_feature_cache_reads_back_what_it_wrote(tiny_tracker, tmp_path, monkeypatch):
    import cv2

    from zoo.drlt.features import FeatureCache

    paths = []
    for index, frame in enumerate(_frames(3)):
        paths.append(tmp_path / f"{index:04d}.png")
        cv2.imwrite(str(paths[-1]), frame)
    cache = FeatureCache(tmp_path / "cache", tiny_tracker)
    first = cache.features("Seq", paths)
    monkeypatch.setattr(tiny_tracker, "encode", lambda frames: pytest.fail("cache miss on the second read"))
    torch.testing.assert_close(cache.features("Seq", paths), first)
    assert len(list((tmp_path / "cache").glob("Seq-*.npy"))) == 1


# -- Lightning module: counters, phases, exact resume ------------------------------------------------------------------
def _module(total_updates: int, videos, **overrides) -> DRLTModule:
    torch.manual_seed(0)
    settings = dict(updates_per_epoch=2, total_updates=total_updates, steps_per_chunk=3, episodes=4, sigma=0.05,
                    lr_start=1e-2, lr_end=1e-3, eq2_fraction=0.75, seed=7)
    settings.update(overrides)
    return DRLTModule(TINY, videos=videos, **settings)


def _tiny_videos(dim: int) -> list[TrainingVideo]:
    generator = torch.Generator().manual_seed(0)
    return [TrainingVideo(f"v{i}", torch.randn(5, dim, generator=generator),
                          0.3 + 0.4 * torch.rand(5, 4, generator=generator)) for i in range(2)]


def _trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path, **kwargs)


def test_counters_schedule_and_exact_resume(tmp_path):
    dim = DRLTTracker(**TINY).feature_dim
    videos = _tiny_videos(dim)

    straight = _module(8, videos)
    _trainer(tmp_path / "a", 4).fit(straight)
    assert int(straight.updates) == 8 and straight.reward_phase == "eq3"
    assert int(straight.env_steps) == 2 * 5 * 4  # 2 videos × 5 frames × 4 epochs (padding is not a step)
    lr = straight.optimizers().param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3, rel=1e-5)  # annealed exponentially all the way to lr_end

    first_half = _module(8, videos)
    checkpoint = tmp_path / "half.ckpt"
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(first_half)
    assert first_half.reward_phase == "eq2" and int(first_half.updates) == 4
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)  # extra state must be weights_only-safe
    assert "drlt_rollout_state" in saved

    resumed = _module(8, videos)
    _trainer(tmp_path / "c", 4).fit(resumed, ckpt_path=checkpoint)
    assert int(resumed.updates) == 8 and resumed.reward_phase == "eq3"
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, msg=f"{name} differs after resume")


def test_module_checkpoint_loads_for_inference(tmp_path):
    dim = DRLTTracker(**TINY).feature_dim
    module = _module(2, _tiny_videos(dim))
    trainer = _trainer(tmp_path, 1)
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DRLTModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    features = torch.randn(4, dim)
    init = torch.tensor([0.5, 0.5, 0.2, 0.2])
    torch.testing.assert_close(loaded.tracker.predict_locations(features, init),
                               module.tracker.predict_locations(features, init))
    assert math.isclose(loaded.hparams.sigma, 0.05)
