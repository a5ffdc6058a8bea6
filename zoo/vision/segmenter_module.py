"""LightningModule that trains `zoo.vision.segmenter.InstanceSegmenter` (automatic optimisation: Mask R-CNN's
summed losses, AdamW, linear warm-up then cosine decay over the run's optimiser steps)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from zoo.vision.segmenter import InstanceSegmenter


class SegmenterModule(pl.LightningModule):
    def __init__(self, segmenter_config: dict, total_steps: int, lr: float = 2e-4, weight_decay: float = 1e-4,
                 warmup_steps: int = 50):
        super().__init__()
        self.save_hyperparameters()
        self.segmenter = InstanceSegmenter(**segmenter_config)

    def on_train_batch_start(self, batch, batch_index):
        # InstanceSegmenter is built in eval mode (it is an inference model first), and Lightning leaves submodules
        # in whatever mode they were created in (a run resumed mid-epoch skips on_train_epoch_start).
        if not self.segmenter.training:
            self.segmenter.train()

    def training_step(self, batch, batch_index):
        images, targets = batch
        losses = self.segmenter(list(images), list(targets))
        loss = sum(losses.values())
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()}, batch_size=len(images))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=len(images))
        return loss

    def configure_optimizers(self):
        parameters = [p for p in self.segmenter.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        warmup, total = self.hparams.warmup_steps, max(1, self.hparams.total_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
