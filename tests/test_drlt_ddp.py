"""DRLT under Lightning's DDP: two CPU processes (gloo) draw different episodes with different exploration noise,
yet their parameters stay identical because the REINFORCE gradients are all-reduced."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from zoo.drlt.env import TrainingTrack
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule

TINY = {"backbone": "mobilenetv3_small_050", "input_size": 64, "grid_size": 2, "hidden_size": 8, "feature_stage": 3,
        "observation": "template", "location_scale": 5.0}


class RecordRankState(Callback):
    """Each rank writes the episodes it drew and its final parameters, for the parent process to compare."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.episodes = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        slots = pl_module.environment.slots
        self.episodes.append(torch.stack([slots[name] for name in ("track", "start", "direction", "flip")]))

    def on_train_end(self, trainer, pl_module):
        torch.save({
            "tracks": [track.name for track in pl_module.environment.tracks],
            "episodes": torch.stack(self.episodes),
            "parameters": torch.cat([p.detach().flatten() for p in pl_module.tracker.recurrent.parameters()]),
            "updates": int(pl_module.updates),
        }, self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_in_step(tmp_path, file_system_sharing):
    torch.manual_seed(0)
    shape = DRLTTracker(**TINY).feature_shape
    generator = torch.Generator().manual_seed(0)
    tracks = [TrainingTrack(f"v{i}", torch.randn(12, *shape, generator=generator).half(),
                            0.3 + 0.4 * torch.rand(12, 4, generator=generator)) for i in range(4)]
    module = DRLTModule(TINY, updates_per_epoch=2, total_updates=6, chunk_schedule=((3, 0.0),), slots=3,
                        episode_length=5, episodes=3, sigma=0.05, lr_start=1e-2, lr_end=1e-3, seed=0, tracks=tracks)
    initial = torch.cat([p.detach().flatten().clone() for p in module.tracker.recurrent.parameters()])
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=3, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         use_distributed_sampler=False, num_sanity_val_steps=0,
                         callbacks=[RecordRankState(tmp_path)])
    trainer.fit(module)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["tracks"] == rank1["tracks"] == ["v0", "v1", "v2", "v3"]  # every rank draws from every track
    assert not torch.equal(rank0["episodes"], rank1["episodes"])  # ... but its own episodes
    assert rank0["updates"] == rank1["updates"] == 6
    assert not torch.allclose(rank0["parameters"], initial)  # training moved the weights
    torch.testing.assert_close(rank0["parameters"], rank1["parameters"], rtol=0, atol=1e-6)
