"""The benchmarks' memory figures: the peak is never below a resident size read before it."""

from __future__ import annotations

import numpy as np

from recipes.benchmarks.ftmu import peak_resident_mib, resident_mib


def test_the_peak_resident_size_is_never_below_the_current_one_read_before_it():
    kept = []
    for _ in range(64):  # memory growing in small steps, as a benchmark's timed calls grow it
        kept.append(np.ones(256 * 1024 // 8))  # 256 KiB, touched
        current = resident_mib()
        assert peak_resident_mib() >= current
