"""`PerImageMeans`: the torchmetrics state handling shared by the per-image benchmark scores (CVPPP, KITTI).

Each image's scores are kept (one float64 list state per score, concatenated across processes by a distributed sync)
so that `per_image()` can list them and `compute()` can average them over the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torchmetrics import Metric


class PerImageMeans(Metric):
    """Dataset means of per-image scores. `update(pred_labels, gt_labels)` takes one (H, W) label map each, or
    (B, H, W) batches; `per_image()` gives the scores of every image seen, in order.

    Subclasses name their per-image scores in `score_keys`, compute them in `score_image(pred, gt) -> dict`, and may
    rename the dataset means in `dataset_keys` (output name -> per-image key; default: the same names).
    """

    is_differentiable = False
    full_state_update = False
    score_keys: tuple[str, ...] = ()
    dataset_keys: Mapping[str, str] | None = None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in self.score_keys:
            self.add_state(key, default=[], dist_reduce_fx="cat")

    def score_image(self, pred_labels, gt_labels) -> dict:
        raise NotImplementedError

    def update(self, pred_labels, gt_labels) -> None:
        if pred_labels.ndim == 3:
            for pred, gt in zip(pred_labels, gt_labels, strict=True):
                self.update(pred, gt)
            return
        scores = self.score_image(pred_labels, gt_labels)
        for key in self.score_keys:
            getattr(self, key).append(torch.tensor([scores[key]], dtype=torch.float64, device=self.device))

    def _values(self, key: str) -> torch.Tensor:
        values = getattr(self, key)
        if isinstance(values, torch.Tensor):  # already concatenated by a distributed sync
            return values
        return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64, device=self.device)

    def _names(self, dataset_names: bool) -> Mapping[str, str]:
        """output name -> per-image key"""
        return (dataset_names and self.dataset_keys) or {key: key for key in self.score_keys}

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: self._values(key).mean() for name, key in self._names(dataset_names=True).items()}

    def per_image(self, dataset_names: bool = False) -> list[dict[str, float]]:
        """Each image's scores; with `dataset_names`, under the names `compute()` gives their means (KITTI's FP as
        AvgFP), so that per-image rows and dataset means can share one table."""
        columns = {name: self._values(key).tolist() for name, key in self._names(dataset_names).items()}
        return [dict(zip(columns, row)) for row in zip(*columns.values())]
