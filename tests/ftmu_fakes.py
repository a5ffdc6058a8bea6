"""Small stand-ins for FTMU's segmenter and image encoder, so that the decision process and the RL update can be
tested in seconds: videos where a red target moves beside a blue distractor and a scripted segmenter that, on some
frames, misses the target so that IoU matching picks the distractor."""

from __future__ import annotations

import numpy as np
import torch

from zoo.ftmu.env import Candidates, mask_box


def square(height: int, width: int, x: int, y: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[max(0, y) : max(0, y + size), max(0, x) : max(0, x + size)] = True
    return mask


class DistractorVideo:
    """A `VideoSequence`-like video: target id 1 (red) moves right, a distractor (blue, not an object) follows it
    at a fixed offset; ``misses`` are the frames where the scripted segmenter does not find the target."""

    def __init__(self, name: str, seed: int, num_frames: int = 24, height: int = 48, width: int = 96, size: int = 12,
                 miss_every: int = 4):
        rng = np.random.default_rng(seed)
        self.name, self.height, self.width = name, height, width
        start_x, y = int(rng.integers(4, 16)), int(rng.integers(8, height - size - 8))
        offset = int(rng.choice([-1, 1])) * (size - 3)  # distractor just above or below, overlapping the target's box
        self.target_masks, self.distractor_masks, self.frames = [], [], []
        for t in range(num_frames):
            x = start_x + 2 * t
            target = square(height, width, x, y, size)
            distractor = square(height, width, x + 3, y + offset, size)
            frame = np.full((height, width, 3), 90, np.uint8)
            frame[distractor] = (40, 40, 220)
            frame[target] = (220, 40, 40)
            self.target_masks.append(target)
            self.distractor_masks.append(distractor)
            self.frames.append(frame)
        phase = int(rng.integers(0, miss_every))
        self.misses = {t for t in range(1, num_frames) if t % miss_every == phase}
        self.object_ids = (1,)
        self.annotated_frames = list(range(num_frames))

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int) -> np.ndarray:
        return self.frames[index]

    def require_mask(self, index: int) -> np.ndarray:
        return self.target_masks[index].astype(np.uint8)


class ScriptedCandidates:
    """Candidates: the target (unless the frame is a miss) and the distractor, each with its tight box."""

    def __init__(self, videos: dict[str, DistractorVideo]):
        self.videos = videos
        self.calls: list[tuple[str, int, tuple | None]] = []

    def __call__(self, video: str, frame_index: int, frame: np.ndarray, region) -> Candidates:
        self.calls.append((video, frame_index, None if region is None else tuple(np.asarray(region).tolist())))
        source = self.videos[video]
        masks = [source.distractor_masks[frame_index]]
        if frame_index not in source.misses:
            masks.insert(0, source.target_masks[frame_index])
        masks = [mask for mask in masks if mask.any()]
        if not masks:
            return Candidates(np.zeros((0, 4)), np.zeros((0, *frame.shape[:2]), bool), np.zeros(0))
        masks = np.stack(masks)
        boxes = np.stack([mask_box(mask) for mask in masks])
        ids = tuple(f"{video}:{frame_index}:{region is None}:{index}" for index in range(len(masks)))
        return Candidates(boxes, masks, np.ones(len(masks)), ids)


class MeanColourStates:
    """A `StateEncoder` whose features are the mean colour (0..1) of the non-black pixels of S_T and of S_P."""

    state_dim = 6

    def state(self, template, frame, prediction, prediction_key):
        from zoo.ftmu.env import state_images

        features = []
        for image in state_images(template, frame, prediction):
            lit = image.reshape(-1, 3)
            lit = lit[lit.any(axis=1)]
            features.append(torch.tensor(lit.mean(axis=0) / 255 if len(lit) else np.zeros(3), dtype=torch.float32))
        return torch.cat(features)

    def embed(self, patches, keys=None):
        return torch.nn.functional.normalize(
            torch.stack([torch.tensor(p.reshape(-1, 3).mean(axis=0), dtype=torch.float32) for p in patches]), dim=1
        )
