"""DRLT: REINFORCE gradient, baseline, rewards (Eq. 2 / Eq. 3), boxes, tracker I/O, hub folder, feature cache, and
the Lightning module: counters, the T curriculum, the Eq. 2 -> Eq. 3 switch, validation, exact resume.

The environment's episodes and the observation's use of s_1 are tested in tests/test_drlt_tracking.py."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from zoo.drlt.env import (
    TrackingEnvironment,
    TrainingTrack,
    distance_reward,
    iou_reward,
    normalized_to_otb,
    otb_to_normalized,
)
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule
from zoo.drlt.networks import GaussianLocationPolicy
from zoo.metrics.otb import SUCCESS_THRESHOLDS
from zoo.rl.policy_gradient import per_step_baseline, reinforce_loss, rewards_to_go

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# A random backbone (backbone_weights left at its default): stage 3 of MobileNetV3-small-0.5 at 64 px is 24x4x4.
TINY = {"backbone": "mobilenetv3_small_050", "input_size": 64, "grid_size": 2, "hidden_size": 8, "feature_stage": 3,
        "observation": "template", "location_scale": 5.0}
TINY_PAPER = {**TINY, "observation": "paper", "feature_stage": -1, "location_scale": 1.0}  # last stage: 288x2x2
TINY_RESIDUAL = {**TINY, "output": "residual"}  # μ_t = μ_{t-1} + a move (the recipe's default)
# What the recipe publishes (its defaults), spelled out so that a change of it is a deliberate change of this test.
PUBLISHED = {"backbone": "tf_efficientnet_lite0", "input_size": 224, "feature_stage": 3, "observation": "template",
             "grid_size": 0, "hidden_size": 256, "location_scale": 5.0, "output": "residual", "residual_scale": 0.5}


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


# -- tracker I/O ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[TINY, TINY_PAPER, TINY_RESIDUAL], ids=["template", "paper", "residual"])
def tiny_tracker(request) -> DRLTTracker:
    torch.manual_seed(0)
    return DRLTTracker(**request.param).eval()


def _frames(count: int, size=(48, 64)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(count)]


def test_encode_gives_float16_feature_maps(tiny_tracker):
    features, image_size = tiny_tracker.encode(_frames(3))
    assert features.dtype == torch.float16 and image_size == (48, 64)
    assert tuple(features.shape) == (3, *tiny_tracker.feature_shape)
    assert len(tiny_tracker.feature_shape) == 3 and tiny_tracker.feature_shape[1] == tiny_tracker.feature_shape[2]


def test_features_do_not_depend_on_how_many_frames_go_through_the_backbone_at_once():
    frames = [np.random.default_rng(index).integers(0, 256, (48, 80, 3), dtype=np.uint8) for index in range(7)]
    tracker = DRLTTracker(**{**TINY, "feature_batch_size": 32})
    whole, _ = tracker.encode(frames)
    tracker.feature_batch_size = 3  # 3 + 3 + 1
    split, _ = tracker.encode(frames)
    torch.testing.assert_close(split.float(), whole.float(), atol=1e-3, rtol=0)  # stored as float16


def test_feature_shape_follows_the_stage_and_input_size():
    assert DRLTTracker(**TINY).feature_shape == (24, 4, 4)  # stride 16 at 64 px
    assert DRLTTracker(**{**TINY, "input_size": 96}).feature_shape == (24, 6, 6)
    assert DRLTTracker(**TINY_PAPER).feature_shape == (288, 2, 2)  # stride 32


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


def test_track_equals_encode_then_track_features(tiny_tracker):
    frames = _frames(5)
    features, image_size = tiny_tracker.encode(frames)
    np.testing.assert_array_equal(tiny_tracker.track_features(features, [10, 12, 20, 15], image_size),
                                  tiny_tracker.track(frames, [10, 12, 20, 15]))


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
        tiny_tracker.track_features(torch.zeros(0, *tiny_tracker.feature_shape), [1, 1, 5, 5], (48, 64))


def test_track_features_rejects_features_of_another_shape(tiny_tracker):
    channels, size, _ = tiny_tracker.feature_shape
    for wrong in (torch.zeros(3, channels * size * size), torch.zeros(3, channels, size + 1, size + 1)):
        with pytest.raises(ValueError, match="features must be"):
            tiny_tracker.track_features(wrong, [1, 1, 5, 5], (48, 64))


def test_track_rejects_non_rgb_frames(tiny_tracker):
    with pytest.raises(ValueError, match="uint8 RGB"):
        tiny_tracker.track([np.zeros((48, 64), np.uint8)], [1, 1, 5, 5])


def test_hub_folder_round_trip_is_strict_and_exact(tiny_tracker, tmp_path):
    import json

    from zoo.hub import load_folder

    tiny_tracker.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    recurrent, backbone = tiny_tracker.recurrent, tiny_tracker.backbone
    assert (config["observation"], config["grid_size"], config["location_scale"]) == (
        recurrent.observation_kind, recurrent.grid_size, recurrent.location_scale)
    assert (config["feature_stage"], config["input_size"]) == (backbone.feature_stage, backbone.input_size)
    assert (config["output"], config["residual_scale"]) == (recurrent.output, recurrent.residual_scale)
    loaded = load_folder(tmp_path, expected_type="drlt")
    frames = _frames(5)
    np.testing.assert_array_equal(loaded.track(frames, [10, 12, 20, 15]), tiny_tracker.track(frames, [10, 12, 20, 15]))


def test_published_configuration_is_the_recipe_default_and_fits_20_mb():
    from recipes.drlt_otb import build_parser

    args = build_parser().parse_args([])
    assert {key: getattr(args, key) for key in PUBLISHED} == PUBLISHED
    tracker = DRLTTracker(**PUBLISHED)
    assert tracker.feature_shape == (112, 14, 14)
    size = sum(t.numel() * t.element_size() for t in tracker.state_dict().values())
    assert size <= 20e6, f"{size / 1e6:.1f} MB"


def test_feature_cache_reads_back_what_it_wrote(tmp_path, monkeypatch):
    import cv2

    from zoo.drlt.features import FeatureCache

    tracker = DRLTTracker(**TINY).eval()
    paths = []
    for index, frame in enumerate(_frames(3)):
        paths.append(tmp_path / f"{index:04d}.png")
        cv2.imwrite(str(paths[-1]), frame)
    cache = FeatureCache(tmp_path / "cache", tracker)
    first = cache.features("Seq", paths)
    assert tuple(first.shape) == (3, *tracker.feature_shape)
    torch.testing.assert_close(first.float(), tracker.encode(paths)[0].float(), rtol=1e-3, atol=1e-3)  # float16
    monkeypatch.setattr(tracker, "encode", lambda frames: pytest.fail("cache miss on the second read"))
    torch.testing.assert_close(cache.features("Seq", paths), first)
    stored = list((tmp_path / "cache").glob("Seq-*.npy"))
    assert len(stored) == 1 and np.load(stored[0]).dtype == np.float16  # half the disk of float32
    # another feature stage is another cache entry, never the stale maps of this one
    other = FeatureCache(tmp_path / "cache", DRLTTracker(**TINY_PAPER))
    assert other.path_for("Seq", paths) != cache.path_for("Seq", paths)


# -- Lightning module: counters, curriculum, reward switch, validation, exact resume -----------------------------------
def _tracks(count: int = 2, frames: int = 10, config: dict = TINY, seed: int = 0, box=None) -> list[TrainingTrack]:
    """Random half-precision feature maps of the tiny backbone's shape and boxes near the image centre."""
    shape = DRLTTracker(**config).feature_shape
    generator = torch.Generator().manual_seed(seed)
    tracks = []
    for i in range(count):
        locations = 0.3 + 0.4 * torch.rand(frames, 4, generator=generator) if box is None else \
            torch.tensor(box) + 0.05 * torch.rand(frames, 4, generator=generator)
        tracks.append(TrainingTrack(f"v{i}", torch.randn(frames, *shape, generator=generator).half(), locations))
    return tracks


def _module(total_updates: int, tracks, config: dict = TINY, **overrides) -> DRLTModule:
    torch.manual_seed(0)
    settings = dict(updates_per_epoch=2, total_updates=total_updates, chunk_schedule=((3, 0.0),), slots=2,
                    episode_length=6, episodes=4, sigma=0.05, lr_start=1e-2, lr_end=1e-3, eq2_fraction=0.75, seed=7)
    settings.update(overrides)
    return DRLTModule(config, tracks=tracks, **settings)


def _trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path,
                      num_sanity_val_steps=0, **kwargs)


@pytest.mark.parametrize("config", [TINY, TINY_PAPER, TINY_RESIDUAL], ids=["template", "paper", "residual"])
def test_counters_and_learning_rate_schedule(tmp_path, config):
    # fixed episodes (first frame, forwards, unmirrored, to the end of the video) so that env_steps is known
    module = _module(8, _tracks(frames=5, config=config), config=config, episode_length=None, random_start=False,
                     reverse_prob=0.0, flip_prob=0.0)
    before = [p.detach().clone() for p in module.tracker.recurrent.parameters()]
    backbone = {name: value.clone() for name, value in module.tracker.backbone.state_dict().items()}
    _trainer(tmp_path, 4).fit(module)
    assert int(module.updates) == 8 and module.reward_phase == "eq3"
    # T = 3 over 5-frame episodes: chunks of 3 then 2 frames, 4 episodes per slot (padding is not a step)
    assert int(module.env_steps) == 2 * 5 * 4
    lr = module.optimizers().param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3, rel=1e-5)  # annealed exponentially all the way to lr_end
    after = list(module.tracker.recurrent.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # FC and LSTM train
    for name, value in module.tracker.backbone.state_dict().items():  # the backbone is frozen
        torch.testing.assert_close(value, backbone[name], msg=name)


def test_chunk_length_follows_the_T_curriculum(tmp_path, monkeypatch):
    """T = 2 from update 0, 3 from update 4 (fraction 0.5 of 8), 5 from update 6 (0.75): the property, the chunks the
    environment hands out and the chunk length the module logs."""
    module = _module(8, _tracks(), chunk_schedule=((2, 0.0), (3, 0.5), (5, 0.75)))
    expected = [2, 2, 2, 2, 3, 3, 5, 5]
    for done, steps in enumerate(expected):
        module.updates.fill_(done)
        assert module.steps_per_chunk == steps, done
    module.updates.zero_()

    handed_out, logged, seen_by_network = [], [], []
    next_chunk = TrackingEnvironment.next_chunk

    def recording(self, steps):
        chunk = next_chunk(self, steps)
        handed_out.append(chunk.features.shape[1])
        return chunk

    class LoggedT(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(int(trainer.callback_metrics["train/steps_per_chunk"]))

    monkeypatch.setattr(TrackingEnvironment, "next_chunk", recording)
    module.tracker.recurrent.register_forward_hook(lambda mod, inputs, output: seen_by_network.append(
        inputs[0].shape[1]) if mod.training else None)
    _trainer(tmp_path, 4, callbacks=[LoggedT()]).fit(module)
    assert handed_out == expected
    assert seen_by_network == expected
    assert logged == expected


def test_chunk_schedule_is_checked():
    with pytest.raises(ValueError, match="chunk_schedule"):
        _module(8, _tracks(), chunk_schedule=((10, 0.2),))
    with pytest.raises(ValueError, match="chunk_schedule"):
        _module(8, _tracks(), chunk_schedule=((0, 0.0),))


def _hand_gradient(mu, actions, rewards, valid, sigma):
    """-d(loss)/dμ of Eq. 7 worked out by hand: (1/(N·B)) Σ_i (l_i - μ)/σ² (r_i - b) on valid steps, b the per-step
    mean of r over the N episodes."""
    episodes, slots = actions.shape[:2]
    advantage = (rewards - rewards.mean(0, keepdim=True)) * valid
    return -((actions - mu) / sigma**2 * advantage[..., None]).sum(0) / (episodes * slots)


def test_rewards_of_the_loss_switch_from_eq2_to_eq3(tmp_path, monkeypatch):
    """The gradient of every update equals the one computed by hand from the sampled actions with Eq. 2's reward
    (updates 0, 1) and Eq. 3's (updates 2, 3, eq2_fraction 0.5 of 4): the rewards really change, not only the flag."""
    sigma, episodes = 0.3, 5  # wide enough for sampled boxes to overlap the targets, so Eq. 3 gives a gradient
    module = _module(4, _tracks(box=[0.25, 0.25, 0.5, 0.5]), eq2_fraction=0.5, sigma=sigma, episodes=episodes,
                     slots=3)
    records = []
    next_chunk = TrackingEnvironment.next_chunk

    def recording_chunk(self, steps):
        chunk = next_chunk(self, steps)
        records.append({"chunk": chunk, "phase": module.reward_phase, "seed": module._noise_seed()})
        return chunk

    def keep_mu(mod, inputs, output):
        if mod.training:
            output[0].retain_grad()
            records[-1]["mu"] = output[0]

    sample = module.policy.sample

    def recording_sample(mu, count):
        records[-1]["actions"] = sample(mu, count)
        return records[-1]["actions"]

    monkeypatch.setattr(TrackingEnvironment, "next_chunk", recording_chunk)
    module.tracker.recurrent.register_forward_hook(keep_mu)
    module.policy.sample = recording_sample
    _trainer(tmp_path, 2).fit(module)

    assert [record["phase"] for record in records] == ["eq2", "eq2", "eq3", "eq3"]
    for update, record in enumerate(records):
        mu, actions = record["mu"].detach(), record["actions"]
        targets, valid = record["chunk"].targets, record["chunk"].valid
        # the actions are N(μ, σ²) draws from the generator seeded for this update (what makes resume exact)
        replay = GaussianLocationPolicy(sigma, seed=12345)
        replay.generator.manual_seed(record["seed"])
        torch.testing.assert_close(replay.sample(mu, episodes), actions)
        eq2 = _hand_gradient(mu, actions, distance_reward(actions, targets), valid, sigma)
        eq3 = _hand_gradient(mu, actions, iou_reward(actions.clamp(0, 1), targets), valid, sigma)
        assert eq2.abs().sum() > 0 and eq3.abs().sum() > 0, update  # both rewards would move μ ...
        assert not torch.allclose(eq2, eq3, rtol=1e-3, atol=1e-3), update  # ... differently
        expected = eq2 if record["phase"] == "eq2" else eq3
        torch.testing.assert_close(record["mu"].grad, expected, rtol=1e-4, atol=1e-5, msg=f"update {update}")


def test_validation_tracks_whole_videos_and_logs_auc_and_iou(tmp_path):
    tracks = _tracks(count=3, frames=8, seed=1)
    tracks[2].locations[:2] = float("nan")  # the target appears on frame 2: tracking starts there
    tracks[2].locations[5] = float("nan")  # and has no box on frame 5: not scored
    module = _module(2, tracks[:2], validation_tracks=tracks[1:])
    trainer = _trainer(tmp_path, 1)
    trainer.fit(module)
    module.tracker.eval()
    aucs, ious = [], []
    for track in tracks[1:]:
        first = int(torch.nonzero(track.known)[0])
        predicted = module.tracker.predict_locations(track.features[first:], track.locations[first])
        assert len(predicted) == len(track.features) - first
        scored = track.known[first:].clone()
        scored[0] = False
        overlap = iou_reward(predicted[scored], track.locations[first:][scored])
        aucs.append(float((overlap[None] > torch.tensor(SUCCESS_THRESHOLDS, dtype=overlap.dtype)[:, None]).float()
                          .mean()))
        ious.append(float(overlap.mean()))
    metrics = trainer.callback_metrics
    assert float(metrics["val/auc"]) == pytest.approx(np.mean(aucs), abs=1e-6)
    assert float(metrics["val/iou"]) == pytest.approx(np.mean(ious), abs=1e-6)
    assert float(metrics["val/updates"]) == 2


def _rollout_state(module: DRLTModule) -> dict:
    return {"environment": module.environment.state_dict(), "episode": module._episode_state}


def test_exact_resume_mid_episode(tmp_path):
    """Random starts, directions and mirrors, episodes of 5 frames cut into chunks of 3: the checkpoint falls inside
    episodes, so the environment's generator and slots and the carried recurrent states must all be restored."""
    tracks = _tracks(frames=12)
    settings = dict(episode_length=5, chunk_schedule=((3, 0.0),), slots=3)

    straight = _module(8, tracks, **settings)
    _trainer(tmp_path / "a", 4).fit(straight)
    assert int(straight.updates) == 8 and straight.reward_phase == "eq3"

    first_half = _module(8, tracks, **settings)
    checkpoint = tmp_path / "half.ckpt"
    trainer = _trainer(tmp_path / "b", 2)
    trainer.fit(first_half)
    assert first_half.reward_phase == "eq2" and int(first_half.updates) == 4
    assert not bool(first_half.environment.slots["position"].eq(first_half.environment.slots["length"]).all())
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)  # extra state must be weights_only-safe
    assert "drlt_rollout_state" in saved

    resumed = _module(8, tracks, **settings)
    _trainer(tmp_path / "c", 4).fit(resumed, ckpt_path=checkpoint)
    assert int(resumed.updates) == 8 and resumed.reward_phase == "eq3"
    assert int(resumed.env_steps) == int(straight.env_steps)
    assert float(resumed.train_seconds) > float(first_half.train_seconds) > 0  # wall-clock time adds up over resumes
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if name != "train_seconds":  # wall-clock time, not state of the training
            torch.testing.assert_close(actual, expected, msg=f"{name} differs after resume")
    expected_state, actual_state = _rollout_state(straight), _rollout_state(resumed)
    for name, value in expected_state["environment"].items():
        torch.testing.assert_close(actual_state["environment"][name], value, msg=name)
    for name, value in expected_state["episode"].items():
        values = value if name == "lstm" else (value,)
        for expected, actual in zip(values, actual_state["episode"][name] if name == "lstm" else
                                    (actual_state["episode"][name],)):
            torch.testing.assert_close(actual, expected, msg=name)


def test_resume_refuses_another_number_of_slots(tmp_path):
    tracks = _tracks()
    module = _module(4, tracks, slots=2)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="same --slots"):
        _trainer(tmp_path, 2).fit(_module(4, tracks, slots=3), ckpt_path=tmp_path / "m.ckpt")


def test_module_checkpoint_loads_for_inference(tmp_path):
    tracks = _tracks()
    module = _module(2, tracks)
    trainer = _trainer(tmp_path, 1)
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = DRLTModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    assert loaded.environment is None and loaded.tracks is None  # no training data needed to track
    features = tracks[0].features[:4]
    init = torch.tensor([0.5, 0.5, 0.2, 0.2])
    torch.testing.assert_close(loaded.tracker.predict_locations(features, init),
                               module.tracker.eval().predict_locations(features, init))
    assert math.isclose(loaded.hparams.sigma, 0.05)
    assert [list(entry) for entry in loaded.hparams.chunk_schedule] == [[3, 0.0]]


def test_module_without_tracks_says_so(tmp_path):
    with pytest.raises(RuntimeError, match="no training tracks"):
        _trainer(tmp_path, 1).fit(_module(2, None))
