"""DRLT learns: on a small synthetic OTB set, REINFORCE training lifts the mean IoU well above the untrained network
and above a tracker that repeats the first box."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from datamodules.otb import load_otb
from datamodules.synthetic_otb import write_synthetic_otb
from zoo.drlt.env import TrainingVideo, iou_reward, otb_to_normalized
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule

SMALL = {"backbone": "mobilenetv3_small_050", "input_size": 96, "grid_size": 3, "hidden_size": 64}


def mean_iou(tracker: DRLTTracker, features: dict, sequences) -> float:
    scores = []
    for seq in sequences:
        init = otb_to_normalized(seq.boxes[0], seq.image_size)
        predicted = tracker.predict_locations(features[seq.name], init)
        scores.append(iou_reward(predicted, otb_to_normalized(seq.boxes, seq.image_size))[1:].mean().item())
    return float(np.mean(scores))


def repeat_first_box_iou(sequences) -> float:
    scores = []
    for seq in sequences:
        truth = otb_to_normalized(seq.boxes, seq.image_size)
        scores.append(iou_reward(truth[:1].expand_as(truth), truth)[1:].mean().item())
    return float(np.mean(scores))


def train_and_score(tmp_path, updates: int, num_sequences: int, num_frames: int) -> tuple[float, float, float]:
    write_synthetic_otb(tmp_path / "otb", num_sequences=num_sequences, num_frames=num_frames, image_size=(120, 160),
                        seed=1)
    sequences = load_otb(tmp_path / "otb")
    pl.seed_everything(0, verbose=False)
    probe = DRLTTracker(**SMALL)
    features = {seq.name: probe.encode(seq.frame_paths)[0] for seq in sequences}
    videos = [TrainingVideo(seq.name, features[seq.name], otb_to_normalized(seq.boxes, seq.image_size))
              for seq in sequences]
    steps = 10
    per_epoch = -(-num_frames // steps)
    epochs = -(-updates // per_epoch)
    module = DRLTModule(SMALL, updates_per_epoch=per_epoch, total_updates=epochs * per_epoch, steps_per_chunk=steps,
                        episodes=5, sigma=0.01, lr_start=3e-4, lr_end=3e-5, eq2_fraction=0.7, seed=0, videos=videos)
    module.tracker.load_state_dict(probe.state_dict())
    untrained = mean_iou(module.tracker.eval(), features, sequences)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False)
    trainer.fit(module)
    trained = mean_iou(module.tracker.eval(), features, sequences)
    return untrained, trained, repeat_first_box_iou(sequences)


def check_learned(untrained: float, trained: float, repeated: float) -> None:
    assert trained > untrained + 0.15, (untrained, trained)
    assert trained > repeated + 0.1, (repeated, trained)


def test_training_beats_untrained_and_first_box(tmp_path):
    torch.set_num_threads(1)
    check_learned(*train_and_score(tmp_path, updates=240, num_sequences=3, num_frames=30))


@pytest.mark.slow
def test_training_beats_untrained_and_first_box_longer(tmp_path):
    check_learned(*train_and_score(tmp_path, updates=1200, num_sequences=6, num_frames=60))
