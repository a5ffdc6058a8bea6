"""The real DAVIS 2016 video the VOS benchmarks time (alba, ivosw)."""

from __future__ import annotations

from pathlib import Path

from zoo.paths import shared_dir


def davis2016_video(benchmark: str, sequence: str, count: int):
    """The DAVIS 2016 `VideoSequence` named `sequence` (at least `count` frames) and its root; exits with a message
    naming the missing folder otherwise."""
    from datamodules.davis import DAVIS

    shared = shared_dir()
    root: Path | None = shared / "realdata" / "DAVIS2016" if shared else None
    if root is None or not (root / "JPEGImages" / "480p" / sequence).is_dir():
        raise SystemExit(f"the {benchmark} benchmark runs on real DAVIS 2016 frames: {sequence!r} is not under "
                         f"{root or '../shared/realdata/DAVIS2016'} (set ZOO_SHARED to the shared folder)")
    video = DAVIS(root, year=2016, split=None, sequences=[sequence])[0]
    if len(video) < count:
        raise SystemExit(f"{sequence} has {len(video)} frames, fewer than --frames {count}")
    return video, root
