"""DRLT learns to track, and to track the target it is given: a small template-mode model, trained briefly with
`DRLTModule` on synthetic multi-target videos (real ImageNet features of EfficientNet-Lite0, from the wheel), is
scored on HELD-OUT synthetic videos that it never trained on.

- it beats the untrained network and repeating the first box by a margin (mean IoU over every target);
- initialised on target A of a two-target video it overlaps A more than B, and initialised on B, B more than A: the
  first box s_1, not the video, decides what it follows.

Both output readings are trained: "residual" (the recipe's default: μ_t = μ_{t-1} + a move, so the untrained network
repeats the first box) and "absolute" (the paper's: μ_t is the box). Measured while writing these tests (seeds 0-3,
one torch thread on 2 cores shared with another job, 55-65 s per output): held-out mean IoU 0.24-0.27 trained vs
0.06 untrained (residual; absolute: 0.00) and 0.06 for repeating the first box; on each of the four held-out pairs
with disjoint first boxes the tracker overlapped the target it was given more than the other one, in both
directions (smallest gap: 0.03 residual, 0.04 absolute). With the global pooled grid (grid_size 3) beside the
template inputs, a comparable budget fitted the training videos but stayed at the first-box baseline on held-out
videos and followed the same object whichever box it was given; grid_size 0 (the recipe's default) is trained here.
"""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from datamodules.image_io import read_rgb
from datamodules.tracking_videos import TrackedVideo, synthetic_multi_target_videos
from zoo.backbones import load_backbone_state, pretrained_state
from zoo.drlt.env import TrainingTrack, iou_reward, otb_to_normalized
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]

BACKBONE = "tf_efficientnet_lite0"
CONFIG = {"backbone": BACKBONE, "input_size": 128, "feature_stage": 3, "observation": "template", "grid_size": 0,
          "hidden_size": 64, "location_scale": 5.0}
FRAMES = 40
UPDATES = 2000  # 1000 (absolute output) left a held-out pair followed the wrong way under some seeds


def _locations(video: TrackedVideo) -> dict[str, torch.Tensor]:
    return {target: otb_to_normalized(boxes, video.image_size) for target, boxes in video.boxes.items()}


def _overlap(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean IoU over the frames after the first where `truth` has a box."""
    scored = torch.isfinite(truth).all(-1)
    scored[0] = False
    return float(iou_reward(predicted[scored], truth[scored]).mean())


def score(tracker: DRLTTracker, videos: list[TrackedVideo], features: dict) -> dict:
    """{(video, A): {B: mean IoU with target B of the tracker initialised on target A's first box}}."""
    tracker.eval()
    table = {}
    for video in videos:
        locations = _locations(video)
        for target, truth in locations.items():
            assert torch.isfinite(truth[0]).all(), (video.name, target)  # synthetic targets show on frame 1
            predicted = tracker.predict_locations(features[video.name], truth[0])
            table[video.name, target] = {other: _overlap(predicted, boxes) for other, boxes in locations.items()}
    return table


def own_iou(table: dict) -> float:
    return float(np.mean([row[target] for (_, target), row in table.items()]))


def repeat_first_box_iou(videos: list[TrackedVideo]) -> float:
    return float(np.mean([_overlap(truth[:1].expand_as(truth), truth) for video in videos
                          for truth in _locations(video).values()]))


def train(root, seed: int = 0, updates: int = UPDATES, output: str = "residual") -> SimpleNamespace:
    train_videos = synthetic_multi_target_videos(root / "train", num_videos=12, num_frames=FRAMES,
                                                 targets_per_video=3, seed=0)
    held_out = synthetic_multi_target_videos(root / "held_out", num_videos=6, num_frames=FRAMES, targets_per_video=2,
                                             seed=1)
    state, source = pretrained_state(BACKBONE)
    pl.seed_everything(seed, verbose=False)
    config = {**CONFIG, "output": output, "backbone_weights": source}
    encoder = DRLTTracker(**config)
    load_backbone_state(encoder.backbone.body, state, BACKBONE)
    train_features = {video.name: encoder.encode(video.frame_paths)[0] for video in train_videos}
    held_out_features = {video.name: encoder.encode(video.frame_paths)[0] for video in held_out}
    tracks = [TrainingTrack(f"{video.name}#{target}", train_features[video.name], boxes)
              for video in train_videos for target, boxes in _locations(video).items()]
    module = DRLTModule(config, updates_per_epoch=updates, total_updates=updates,
                        chunk_schedule=((10, 0.0), (20, 0.5)), slots=8, episode_length=FRAMES, episodes=5, sigma=0.05,
                        lr_start=1e-3, lr_end=1e-4, eq2_fraction=0.6, seed=seed, tracks=tracks)
    module.tracker.load_state_dict(encoder.state_dict())
    untrained = score(module.tracker, held_out, held_out_features)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0)
    trainer.fit(module)
    assert int(module.updates) == updates
    return SimpleNamespace(train_videos=train_videos, held_out=held_out, untrained=untrained,
                           trained=score(module.tracker, held_out, held_out_features),
                           repeated=repeat_first_box_iou(held_out))


@pytest.fixture(scope="module", params=["residual", "absolute"])
def run(request, tmp_path_factory) -> SimpleNamespace:
    return train(tmp_path_factory.mktemp("drlt_learning"), output=request.param)


def test_held_out_videos_were_never_trained_on(run):
    trained_frames = [read_rgb(video.frame_paths[0]) for video in run.train_videos]
    for video in run.held_out:
        first = read_rgb(video.frame_paths[0])
        assert all(np.abs(first.astype(int) - frame.astype(int)).mean() > 10 for frame in trained_frames), video.name


def test_training_beats_untrained_and_first_box_on_held_out_videos(run):
    trained, untrained = own_iou(run.trained), own_iou(run.untrained)
    assert trained > untrained + 0.1, (untrained, trained)
    assert trained > run.repeated + 0.05, (run.repeated, trained)


def _apart(video: TrackedVideo) -> bool:
    """The two targets' first boxes are disjoint (a template of one then holds nothing of the other)."""
    a, b = (boxes[0] for boxes in _locations(video).values())
    return float(iou_reward(a, b)) == 0.0


def test_the_first_box_decides_which_target_is_followed(run):
    pairs = [video for video in run.held_out if _apart(video)]
    assert len(pairs) >= 3, [video.name for video in run.held_out]
    followed = {}
    for video in pairs:
        a, b = video.targets
        on_a, on_b = run.trained[video.name, a], run.trained[video.name, b]
        followed[video.name] = (on_a[a], on_a[b], on_b[b], on_b[a])
    message = {name: tuple(round(value, 3) for value in values) for name, values in followed.items()}
    # initialised on A: closer to A than to B; initialised on B: closer to B than to A
    assert all(own_a > other_a and own_b > other_b for own_a, other_a, own_b, other_b in followed.values()), message
    own = np.mean([values[0] + values[2] for values in followed.values()]) / 2
    other = np.mean([values[1] + values[3] for values in followed.values()]) / 2
    assert own > other + 0.08, message
