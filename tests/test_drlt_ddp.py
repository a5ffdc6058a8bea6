"""DRLT under Lightning's DDP: two CPU processes (gloo) train on different videos with different exploration noise,
yet their parameters stay identical because the REINFORCE gradients are all-reduced."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from zoo.drlt.env import TrainingVideo
from zoo.drlt.model import DRLTTracker
from zoo.drlt.module import DRLTModule

TINY = {"backbone": "mobilenetv3_small_050", "input_size": 64, "grid_size": 2, "hidden_size": 8}


class RecordRankState(Callback):
    """Each rank writes what it trained on and its final parameters, for the parent process to compare."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        torch.save({
            "videos": [video.name for video in pl_module.environment.videos],
            "parameters": torch.cat([p.detach().flatten() for p in pl_module.tracker.recurrent.parameters()]),
            "updates": int(pl_module.updates),
        }, self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_in_step(tmp_path, file_system_sharing):
    torch.manual_seed(0)
    dim = DRLTTracker(**TINY).feature_dim
    generator = torch.Generator().manual_seed(0)
    videos = [TrainingVideo(f"v{i}", torch.randn(6, dim, generator=generator),
                            0.3 + 0.4 * torch.rand(6, 4, generator=generator)) for i in range(4)]
    module = DRLTModule(TINY, updates_per_epoch=2, total_updates=6, steps_per_chunk=3, episodes=3, sigma=0.05,
                        lr_start=1e-2, lr_end=1e-3, seed=0, videos=videos)
    initial = torch.cat([p.detach().flatten().clone() for p in module.tracker.recurrent.parameters()])
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=3, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         use_distributed_sampler=False, callbacks=[RecordRankState(tmp_path)])
    trainer.fit(module)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["videos"] == ["v0", "v2"] and rank1["videos"] == ["v1", "v3"]  # different rollouts per rank
    assert rank0["updates"] == rank1["updates"] == 6
    assert not torch.allclose(rank0["parameters"], initial)  # training moved the weights
    torch.testing.assert_close(rank0["parameters"], rank1["parameters"], rtol=0, atol=1e-6)
