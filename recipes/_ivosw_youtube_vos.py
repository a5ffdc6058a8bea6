"""The YouTube-VOS side of `recipes.ivosw_davis --benchmark youtube-vos` (the paper's 50-sequence protocol on the 2018
train split; the recipe's docstring gives the rules): which videos, and each as a `SessionVideo`."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from datamodules.synthetic_vos import synthetic_root
from datamodules.youtube_vos import YouTubeVOS
from zoo.ivosw.session import SessionVideo

YOUTUBE_VOS_SEQUENCES = 50  # the paper's YouTube-VOS protocol: 50 sequences of the 2018 train split
YOUTUBE_VOS_MAX_SIDE = 854  # DAVIS 480p's width


def youtube_vos_selection(meta: dict, count: int = YOUTUBE_VOS_SEQUENCES) -> list[str]:
    """The evaluation videos of the YouTube-VOS protocol, in name order: among the videos of ``meta`` (meta.json's
    "videos") with at least one object whose "frames" list is not empty, the ``count`` with the smallest SHA-1 hex
    digest of their name (all of them where fewer exist)."""
    if count < 1:
        raise ValueError(f"the number of sequences must be at least 1, got {count}")
    eligible = [name for name, video in meta.items()
                if any(entry.get("frames") for entry in video.get("objects", {}).values())]
    return sorted(sorted(eligible, key=lambda name: hashlib.sha1(name.encode()).hexdigest())[:count])


def youtube_vos_session_video(sequence, max_side: int = 0) -> SessionVideo:
    """A `SessionVideo` of a YouTube-VOS train `VideoSequence` (module docstring): every sampled frame with its
    annotation (all background where a frame has none), meta.json's objects that have pixels renumbered 1..K, and,
    with ``max_side`` > 0, frames (area) and ground truth (nearest) shrunk so the longer side is at most it."""
    frames = np.stack([sequence.frame(i) for i in range(len(sequence))])
    masks = [sequence.mask(i) for i in range(len(sequence))]
    labels = np.stack([np.zeros(frames.shape[1:3], np.uint8) if mask is None else mask for mask in masks])
    present = set(np.unique(labels).tolist())
    objects = [object_id for object_id in sequence.object_ids if object_id in present]
    if not objects:
        raise ValueError(f"YouTube-VOS video {sequence.name!r} has no annotated object pixel on its frames")
    renumber = np.zeros(256, np.uint8)
    renumber[255] = 255
    renumber[objects] = np.arange(1, len(objects) + 1)
    labels = renumber[labels]
    height, width = frames.shape[1:3]
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        frames = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
        labels = np.stack([cv2.resize(label, size, interpolation=cv2.INTER_NEAREST) for label in labels])
    return SessionVideo(sequence.name, np.ascontiguousarray(frames), np.ascontiguousarray(labels), len(objects))


def youtube_vos_videos(args) -> tuple[list[SessionVideo], str, dict]:
    """(session videos, what they are, how they were chosen) of `--benchmark youtube-vos`. Raises FileNotFoundError,
    ValueError, KeyError (an unknown --sequences name)."""
    if args.data_dir is not None:
        root, what = args.data_dir, f"YouTube-VOS 2018 train ({args.data_dir})"
    else:
        height, width = args.synthetic_size
        root = synthetic_root("youtube_vos", split="train", num_videos=args.synthetic_val,
                              num_frames=args.synthetic_frames, height=height, width=width, seed=args.seed)
        what = f"synthetic YouTube-VOS 2018 train ({args.synthetic_frames} frames, {height}x{width})"
    count = YOUTUBE_VOS_SEQUENCES if args.num_sequences is None else args.num_sequences
    if args.sequences is not None:
        names, rule = list(args.sequences), "named by --sequences"
    else:
        names = youtube_vos_selection(YouTubeVOS(root, "train", 2018, videos=[]).meta, count)
        rule = (f"the {count} videos (fewer where fewer exist) with an annotated object whose names have the "
                "smallest SHA-1 hex digests, in name order")
    if not names:
        raise ValueError(f"no video with an annotated object in {root / 'train' / 'meta.json'}")
    max_side = YOUTUBE_VOS_MAX_SIDE if args.max_side is None else args.max_side
    videos = [youtube_vos_session_video(sequence, max_side) for sequence in YouTubeVOS(root, "train", 2018,
                                                                                       videos=names)]
    selection = {"rule": rule, "videos": names, "max_side": max_side or None,
                 "round_1": "the robot on an empty prediction (the authors' scribbles cannot be downloaded)"}
    return videos, f"{what}, {len(videos)} videos", selection
