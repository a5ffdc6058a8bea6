"""Precomputed-feature mode: the frozen backbone runs once per frame and its features are cached on disk.

Training (and the paper's DRLT-LSTM tracking) then runs the FC + LSTM only. A cache entry is keyed by everything
that determines the features (backbone name and weights, input size, grid, and each frame file's path, size and
modification time), so a changed backbone or a re-written video never reads stale features.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from zoo.drlt.model import DRLTTracker
from zoo.drlt.networks import unit_cells
from zoo.hub import state_digest


def backbone_fingerprint(tracker: DRLTTracker) -> str:
    """Hash of the frozen backbone (its weights and how frames are fed to it)."""
    backbone = tracker.backbone
    return state_digest(backbone, f"{type(backbone.body).__name__}|{backbone.input_size}|{backbone.feature_stage}")


def _frames_fingerprint(frame_paths: list[Path]) -> str:
    digest = hashlib.sha1()
    for path in frame_paths:
        stat = os.stat(path)
        digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """`cache.features(name, frame_paths)` -> (N, C, S, S) float32 unit-cell feature maps, computed once (stored as
    float16), then read from `root`."""

    def __init__(self, root: str | Path, tracker: DRLTTracker):
        self.root = Path(root)
        self.tracker = tracker
        self._backbone_key = backbone_fingerprint(tracker)[:16]

    def path_for(self, name: str, frame_paths: list[Path]) -> Path:
        key = hashlib.sha1(f"{self._backbone_key}|{_frames_fingerprint(frame_paths)}".encode()).hexdigest()[:16]
        return self.root / f"{name.replace('/', '_')}-{key}.npy"

    def features(self, name: str, frame_paths: list[Path]) -> torch.Tensor:
        path = self.path_for(name, frame_paths)
        if path.is_file():
            cached = np.load(path)
            if cached.shape == (len(frame_paths), *self.tracker.feature_shape):
                # entries written before the backbone returned unit cells are normalised here (idempotent)
                return unit_cells(torch.from_numpy(cached))
        features, _ = self.tracker.encode(frame_paths)
        self.root.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # two ranks may write the same entry
        np.save(partial, features.numpy().astype(np.float16))
        os.replace(partial, path)
        return unit_cells(features)
