"""Benchmark metrics as torchmetrics `Metric`s that reproduce the official evaluators exactly.

One module per benchmark; names are imported lazily (`from zoo.metrics import OTBSuccess`).
"""

import importlib

_EXPORTS: dict[str, str] = {
    "OTBSuccess": "zoo.metrics.otb",
    "OTBPrecision": "zoo.metrics.otb",
    "InteractiveVOSCurve": "zoo.metrics.interactive",
    "DAVISSemiSupervised": "zoo.metrics.davis",
    "DAVISUnsupervised": "zoo.metrics.davis",
    "CVPPPMetrics": "zoo.metrics.cvppp",
    "KITTIInstanceMetrics": "zoo.metrics.kitti",
    "VOTLongTerm": "zoo.metrics.vot_lt",
    "pairwise_iou": "zoo.metrics.instances",
    "pairwise_dice": "zoo.metrics.instances",
    "instance_masks": "zoo.metrics.instances",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'zoo.metrics' has no attribute {name!r}")
