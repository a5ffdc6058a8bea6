"""The instance segmenter under Lightning's DDP: two CPU processes (gloo) draw different images, yet their weights
stay identical because the gradients are all-reduced."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from datamodules.instance_frames import InstanceFramesDataModule, synthetic_frames
from datamodules.synthetic_vos import write_davis2017
from zoo.vision.segmenter_module import SegmenterModule

TINY = {"fpn_channels": 16, "box_head_size": 32, "min_size": 64, "max_size": 96, "train_min_sizes": [64],
        "detections_per_img": 5, "rpn_proposals": 20}


class RecordRankState(Callback):
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.first_batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_batch is None:
            self.first_batch = torch.stack([image.sum() for image in batch[0]])

    def on_train_end(self, trainer, pl_module):
        parameters = [p.detach().flatten() for p in pl_module.segmenter.parameters() if p.requires_grad]
        torch.save({"first_batch": self.first_batch, "parameters": torch.cat(parameters)},
                   self.out_dir / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_two_process_ddp_draws_different_images_and_keeps_weights_in_step(tmp_path, file_system_sharing):
    root = write_davis2017(tmp_path / "synthetic", num_train=2, num_val=0, num_frames=4, height=64, width=96)
    frames = synthetic_frames(root)
    data = InstanceFramesDataModule(frames, {"synthetic": 1.0}, batch_size=2, samples_per_epoch=4, short_side=64)
    module = SegmenterModule({**TINY, "pretrained_backbone": False}, total_steps=4, lr=1e-3, warmup_steps=1)
    initial = torch.cat([p.detach().flatten().clone() for p in module.segmenter.parameters() if p.requires_grad])
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         use_distributed_sampler=False, callbacks=[RecordRankState(tmp_path)])
    trainer.fit(module, datamodule=data)

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not torch.equal(rank0["first_batch"], rank1["first_batch"])
    assert not torch.allclose(rank0["parameters"], initial)
    torch.testing.assert_close(rank0["parameters"], rank1["parameters"], rtol=0, atol=1e-6)
