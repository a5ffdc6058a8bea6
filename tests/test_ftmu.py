"""FTMU: reward, TD actor-critic, search region, matching, re-detection, label maps, and a learning test on held-out
synthetic videos (the scripted segmenter of `ftmu_fakes` misses the target so that IoU matching picks a distractor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftmu_fakes import DistractorVideo, MeanColourStates, ScriptedCandidates
from zoo.ftmu.env import (
    KEEP, REPLACE, Candidates, FTMUConfig, Template, Tracker, expand_box, fixed_policy, mask_box, mask_iou,
    resolve_label_map, reward, s_iou, search_region,
)
from zoo.ftmu.module import ClipEnvironment, FTMUModule, transitions
from zoo.rl.actor_critic import actor_critic_losses, td_errors


def test_reward_eq7_on_hand_computed_ious():
    values = reward(np.array([0.0, 0.1, 0.2, 0.5, 1.0]))
    np.testing.assert_allclose(values, [-10, -10, 100 * 0.008 + 10, 22.5, 110])
    torch.testing.assert_close(reward(torch.tensor([0.5, 0.05])), torch.tensor([22.5, -10.0]))


def test_td_error_and_both_losses_on_a_hand_computed_transition():
    log_prob = torch.tensor([math.log(0.25)], requires_grad=True)
    value = torch.tensor([5.0], requires_grad=True)
    next_value = torch.tensor([10.0], requires_grad=True)
    losses = actor_critic_losses(log_prob, torch.tensor([22.5]), value, next_value, torch.tensor([False]), 0.9)
    assert losses["td_error"].item() == pytest.approx(22.5 + 0.9 * 10 - 5)  # 26.5
    assert losses["loss_critic"].item() == pytest.approx(0.5 * 26.5**2)
    assert losses["loss_actor"].item() == pytest.approx(math.log(4) * 26.5)
    (losses["loss_critic"] + losses["loss_actor"]).backward()
    assert value.grad.item() == pytest.approx(-26.5)  # descending ½δ² raises V(s) towards the target
    assert log_prob.grad.item() == pytest.approx(-26.5)  # descending the actor loss raises log π when δ > 0
    assert next_value.grad is None or next_value.grad.item() == 0  # semi-gradient (Eq. 8)
    done = td_errors(torch.tensor([22.5]), torch.tensor([5.0]), torch.tensor([10.0]), torch.tensor([True]), 0.9)
    assert done.item() == pytest.approx(17.5)


def test_search_region_picks_each_of_the_three_ratios():
    config = FTMUConfig(big_ratio=1.0, intermediate_ratio=0.5, small_ratio=0.1, motion_threshold=0.3, region_grid=1)
    far = {1: np.array([10.0, 10, 30, 30]), 2: np.array([60.0, 10, 80, 30])}
    region, kind = search_region(far, far, config, 100, 200)
    assert kind == "intermediate"
    np.testing.assert_allclose(region, [10 - 35, 10 - 10, 80 + 35, 30 + 10] * np.array([0, 1, 1, 1]))  # x0 clipped
    touching = {1: np.array([10.0, 10, 30, 30]), 2: np.array([25.0, 10, 45, 30])}
    assert search_region(touching, touching, config, 100, 200)[1] == "small"
    moved = {1: touching[1] + np.array([10.0, 0, 10, 0]), 2: touching[2]}
    assert search_region(moved, touching, config, 100, 200)[1] == "big"  # motion wins over overlap
    assert search_region({1: far[1]}, {}, config, 100, 200)[1] == "intermediate"  # no history yet
    np.testing.assert_allclose(expand_box(np.array([10.0, 10, 30, 30]), 0.4, 100, 100), [2, 2, 38, 38])
    np.testing.assert_allclose(expand_box(np.array([10.0, 10, 30, 30]), 0.4, 100, 100, grid=16), [0, 0, 48, 48])


def test_s_iou_with_box_only_and_with_mask():
    mask = np.zeros((20, 20), bool)
    mask[0:10, 0:10] = True
    other = np.zeros((20, 20), bool)
    other[0:10, 5:10] = True
    candidates = Candidates(np.array([[0.0, 0, 10, 10], [5.0, 0, 15, 10]]), np.stack([other, other]), np.ones(2))
    box_only = Template(np.array([0.0, 0, 10, 10]), None, np.zeros((20, 20, 3), np.uint8), 0, "t")
    np.testing.assert_allclose(s_iou(box_only, candidates, alpha=1.0), [1.0, 50 / 150])
    np.testing.assert_allclose(s_iou(box_only, candidates, alpha=0.5), [1.0, 50 / 150])  # no mask: box term only
    with_mask = Template(box_only.box, mask, box_only.frame, 0, "t")
    np.testing.assert_allclose(s_iou(with_mask, candidates, alpha=0.5), [0.5 * 1 + 0.5 * 0.5, 0.5 / 3 + 0.25])
    np.testing.assert_allclose(s_iou(with_mask, candidates, alpha=1.0), [1.0, 50 / 150])


def run_video(video, policy, config, candidates=None):
    candidates = candidates or ScriptedCandidates({video.name: video})
    tracker = Tracker(config, candidates, MeanColourStates())
    episode = tracker.start(video.name, 0, video.frame(0), {1: mask_box(video.target_masks[0])})
    for t in range(1, len(video)):
        tracker.step(episode, t, video.frame(t), policy, ground_truth=video.require_mask(t))
    return episode, candidates


def test_redetection_after_exactly_three_successive_keeps_and_at_most_once_a_frame():
    video = DistractorVideo("v", seed=0, num_frames=12)
    episode, candidates = run_video(video, fixed_policy(KEEP), FTMUConfig(redetect_after=3))
    whole_frame = [frame for _, frame, region in candidates.calls if region is None]
    assert whole_frame == [3, 6, 9]  # the count restarts after each re-detection
    assert [log.redetected for log in episode.logs if log.redetected] == [[1], [1], [1]]
    redecided = [d.frame_index for d in episode.decisions if d.redetection]
    assert redecided == [3, 6, 9]
    episode, candidates = run_video(video, fixed_policy(REPLACE), FTMUConfig(redetect_after=3))
    assert all(region is not None for _, _, region in candidates.calls)  # a0 resets the count: never re-detects
    episode, candidates = run_video(video, fixed_policy(KEEP), FTMUConfig(redetection=False))
    assert all(region is not None for _, _, region in candidates.calls)


def test_label_map_resolution_of_overlapping_masks():
    a = np.zeros((4, 6), bool)
    a[:, :4] = True
    b = np.zeros((4, 6), bool)
    b[:, 2:] = True
    labels = resolve_label_map({1: a, 2: b}, {1: 0.9, 2: 0.4}, (4, 6))
    np.testing.assert_array_equal(labels[0], [1, 1, 1, 1, 2, 2])
    labels = resolve_label_map({1: a, 2: b}, {1: 0.4, 2: 0.9}, (4, 6))
    np.testing.assert_array_equal(labels[0], [1, 1, 2, 2, 2, 2])
    small = np.zeros((4, 6), bool)
    small[:, 3:5] = True
    labels = resolve_label_map({1: a, 2: small}, {1: 0.5, 2: 0.5}, (4, 6))  # tie: the smaller mask is in front
    np.testing.assert_array_equal(labels[0], [1, 1, 1, 2, 2, 0])
    assert labels.dtype == np.uint8


def test_an_empty_prediction_is_never_the_template_and_counts_as_keep():
    video = DistractorVideo("v", seed=1, num_frames=8)
    video.misses = set(range(1, 8))
    video.distractor_masks = [np.zeros_like(m) for m in video.distractor_masks]  # nothing at all to match
    episode, _ = run_video(video, fixed_policy(REPLACE), FTMUConfig(redetect_after=3))
    assert episode.decisions == []  # the agent is never asked
    assert (episode.labels[-1] == 1).sum() == video.target_masks[0].sum()  # the first mask is kept throughout


def test_transitions_link_each_targets_next_decision_and_end_terminal():
    video = DistractorVideo("v", seed=2, num_frames=6, miss_every=100)
    episode, _ = run_video(video, fixed_policy(REPLACE), FTMUConfig(redetection=False))
    batch = transitions([episode])
    assert len(batch["states"]) == 5
    torch.testing.assert_close(batch["next_states"][:-1], batch["states"][1:])
    assert batch["done"].tolist() == [False] * 4 + [True]
    expected = reward(np.array([d.jaccard for d in episode.decisions]))
    np.testing.assert_allclose(batch["rewards"].numpy(), expected, rtol=1e-6)


def test_supervised_labels_prefer_the_better_mask():
    jaccards = torch.tensor([[0.8, 0.5], [0.3, 0.6], [0.5, 0.5], [float("nan"), float("nan")]])
    assert FTMUModule.label_policy(torch.zeros(4, 3), jaccards).tolist() == [REPLACE, KEEP, REPLACE, REPLACE]


def mean_jaccard(video, policy, config) -> float:
    episode, _ = run_video(video, policy, config)
    return float(np.mean([mask_iou(video.target_masks[t], (episode.labels[t] == 1)[None])[0]
                          for t in range(1, len(video))]))


def train_agent(mode: str = "rl", updates: int = 80, seed: int = 0) -> FTMUModule:
    import lightning.pytorch as pl

    videos = [DistractorVideo(f"train{i}", seed=100 + i) for i in range(6)]
    config = FTMUConfig(redetection=False)
    environment = ClipEnvironment(videos, Tracker(config, ScriptedCandidates({v.name: v for v in videos}),
                                                  MeanColourStates()), clip_length=10)
    module = FTMUModule(state_dim=6, hidden=(32,), mode=mode, actor_lr=1e-2, critic_lr=1e-2, seed=seed)
    module.environment = environment
    clips = environment.clips()
    loader = torch.utils.data.DataLoader(clips, batch_size=20, shuffle=True, collate_fn=list,
                                         generator=torch.Generator().manual_seed(seed))
    # two optimisers: Lightning counts a step of each as one of `max_steps`
    trainer = pl.Trainer(max_steps=2 * updates, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    torch.manual_seed(seed)
    trainer.fit(module, loader)
    return module


def greedy(module):
    return lambda states, jaccards: module.actor(states).argmax(dim=-1)


@pytest.mark.parametrize("mode", ["rl", "supervised"])
def test_agent_beats_always_update_on_held_out_videos_with_a_distractor(mode):
    module = train_agent(mode)
    config = FTMUConfig(redetection=False)
    held_out = [DistractorVideo(f"test{i}", seed=900 + i, num_frames=30) for i in range(4)]
    agent = np.mean([mean_jaccard(video, greedy(module), config) for video in held_out])
    always_update = np.mean([mean_jaccard(video, fixed_policy(REPLACE), config) for video in held_out])
    never_update = np.mean([mean_jaccard(video, fixed_policy(KEEP), config) for video in held_out])
    assert always_update < 0.3 and never_update < 0.3  # both baselines lose the target on these videos
    assert agent > always_update + 0.4, (agent, always_update)
    assert int(module.updates) == 80 and int(module.environment_steps) > 0


def test_checkpoint_of_one_mode_refuses_to_load_as_another():
    module = FTMUModule(state_dim=6, hidden=(8,), mode="supervised")
    checkpoint = {"hyper_parameters": {"mode": "supervised"}}
    FTMUModule(state_dim=6, hidden=(8,), mode="supervised").on_load_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="trained in mode 'supervised'"):
        FTMUModule(state_dim=6, hidden=(8,), mode="rl").on_load_checkpoint(checkpoint)
    del module


def test_reward_on_prediction_ignores_the_action_and_on_final_follows_it():
    from zoo.ftmu.env import Decision
    from zoo.ftmu.module import decision_jaccard

    kept = Decision(1, 3, torch.zeros(6), KEEP, jaccard=0.2, template_jaccard=0.7, redetection=False)
    replaced = Decision(1, 3, torch.zeros(6), REPLACE, jaccard=0.2, template_jaccard=0.7, redetection=False)
    assert decision_jaccard(kept, "prediction") == decision_jaccard(replaced, "prediction") == 0.2  # Eq. 7 on P
    assert decision_jaccard(kept, "final") == 0.7 and decision_jaccard(replaced, "final") == 0.2
    batch = transitions([type("E", (), {"decisions": [kept, replaced]})()], reward_on="final")
    np.testing.assert_allclose(batch["rewards"].numpy(), reward(np.array([0.7, 0.2])), rtol=1e-6)


def test_whole_frame_candidates_keep_those_overlapping_the_region_with_stable_ids():
    from zoo.ftmu.model import WholeFrameCandidates

    masks = np.zeros((3, 20, 40), bool)
    masks[0, 2:6, 2:6] = masks[1, 10:14, 30:36] = masks[2, 8:12, 14:20] = True
    boxes = np.stack([mask_box(m) for m in masks])
    calls = []

    def whole_frame(video, frame_index, frame, region):
        calls.append(region)
        return Candidates(boxes, masks, np.ones(3), tuple(f"{video}:{frame_index}:whole:{i}" for i in range(3)))

    source = WholeFrameCandidates(whole_frame)
    frame = np.zeros((20, 40, 3), np.uint8)
    inside = source("v", 4, frame, np.array([0.0, 0, 16, 20]))  # overlaps candidates 0 and 2 (x 14..20)
    assert inside.ids == ("v:4:whole:0", "v:4:whole:2")
    np.testing.assert_array_equal(inside.masks, masks[[0, 2]])
    assert source("v", 4, frame, None).ids == ("v:4:whole:0", "v:4:whole:1", "v:4:whole:2")
    assert calls == [None]  # one whole-frame call per frame, whatever the regions asked for


def test_state_views_whole_frame_or_cropped_around_each_box():
    from zoo.ftmu.networks import FeatureStates, box_view

    seen = []

    class RecordingEncoder:
        out_features = 3

        def __call__(self, images, size):
            seen.extend(image.shape for image in images)
            return torch.zeros(len(images), 3)

    frame = np.zeros((40, 80, 3), np.uint8)
    template = Template(np.array([10.0, 10, 20, 30]), None, frame, 0, "t")
    prediction = np.zeros((40, 80), bool)
    prediction[5:9, 60:64] = True
    FeatureStates(RecordingEncoder(), view="frame").state(template, frame, prediction, "p")
    assert seen == [(40, 80, 3), (40, 80, 3)]  # Eq. 4-5: whole frames
    seen.clear()
    FeatureStates(RecordingEncoder(), view="box").state(template, frame, prediction, "p")
    assert seen == [(40, 20, 3), (8, 8, 3)]  # T_box 10 x 20 and P_box 4 x 4, each + half a box per side (clipped)
    assert box_view(frame, np.array([0.0, 0, 80, 40])).shape == (40, 80, 3)
    with pytest.raises(ValueError, match="view must be one of"):
        FeatureStates(RecordingEncoder(), view="crop")
