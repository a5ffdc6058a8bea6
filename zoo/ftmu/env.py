"""FTMU's decision process (Sun et al., CVPR 2020, Sec. 3): the template, the search region, the matching, the
action's effect and the reward, for several targets of one video.

Per frame f_t (Fig. 2):
1. The search region b_s: the minimal box b_m covering every target's previous box, expanded by one of three
   ratios (Sec. 3.4): ``big`` when a target moved more than ``motion_threshold`` between the two previous frames,
   else ``small`` when two targets' boxes overlap (box IoU > 0), else ``intermediate``.
2. The instance segmenter runs on b_s; each target's preliminary result P is the candidate of highest
   S_IOU = α·IoU(T_box, P_box) + β·IoU(T_mask, P_mask) (Eq. 1-2); (α, β) = (1, 0) while the template holds only the
   first-frame box, (0.5, 0.5) after (Sec. 4.2).
3. The agent sees s_t = feature(S_T) ⊕ feature(S_P) (Eq. 4-6, `state_images`) and chooses a0 (`REPLACE`: the template
   becomes P) or a1 (`KEEP`). The final mask of the target is the template's mask (Sec. 3.1).
4. After N = 3 successive a1 the target is re-detected: the segmenter runs on the whole frame, the candidate whose
   appearance embedding is closest (L2, Eq. 3) to the template's T_box' patch becomes P, and the agent decides again.
   At most once per frame (`Tracker.step`).

Reward Eq. 7 (`reward`): r_t = 100·J_t³ + 10 if J_t > 0.1 else −10, J_t = IoU(P_mask, ground truth). The paper
defines J_t on the preliminary result P (not on the final mask), so r_t scores the candidate the agent is judging;
the action changes the template and so the next frames' P. A frame where the target is absent and P is empty has
J_t = 1 (the DAVIS convention for an empty union).

Choices the paper leaves open, made here (and said in the model card):
- A target with no candidate of S_IOU > 0 (it left the region, or the segmenter missed it) has an empty P; the agent
  is not asked (an empty P cannot become the template), the step counts as an a1 towards re-detection, and no
  transition is recorded.
- Contested pixels of two targets' final masks go to the target whose template matched with the higher S_IOU
  (`resolve_label_map`); ties go to the smaller mask (the one more likely in front).
- Region coordinates are snapped outwards to a multiple of ``region_grid`` px, so that the segmenter's cached
  candidates are reused across training epochs; the region only grows by < grid px per side.
- The motion threshold is relative: the centre displacement over the box diagonal, so one value fits every
  resolution.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch

from datamodules.vos_io import mask_box
from zoo.metrics.davis import jaccard

REPLACE, KEEP = 0, 1  # a0, a1 (the authors' code uses the same indices)


@dataclass(frozen=True)
class FTMUConfig:
    """Everything that changes the tracker's behaviour besides the networks (JSON-serialisable)."""

    big_ratio: float = 1.2  # the authors' code: blackswan / drift-chicane 1.2, default 0.4, crowded scenes 0.1
    intermediate_ratio: float = 0.4
    small_ratio: float = 0.1
    motion_threshold: float = 0.3  # centre displacement / box diagonal between the two previous frames
    region_grid: int = 16
    first_alpha: float = 1.0  # (α, β) while the template has only a box
    alpha: float = 0.5
    redetect_after: int = 3  # N successive a1 (Sec. 4.2)
    redetection: bool = True
    matching: str = "iou"  # "iou" (the paper's), or "appearance" (Table 2's simple appearance update)

    def __post_init__(self):
        if self.matching not in ("iou", "appearance"):
            raise ValueError(f"matching must be 'iou' or 'appearance', got {self.matching!r}")
        if not 0.0 <= self.alpha <= 1.0 or not 0.0 <= self.first_alpha <= 1.0:
            raise ValueError("alpha and first_alpha must lie in [0, 1] (beta = 1 - alpha, Eq. 2)")


# -- geometry ------------------------------------------------------------------------------------------------------


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with (N, 4) boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def mask_iou(mask: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """DAVIS's J of one (H, W) bool mask against each of (N, H, W) masks (an empty union gives 1)."""
    masks = masks.reshape(-1, *mask.shape)
    return np.atleast_1d(jaccard(masks, np.broadcast_to(mask, masks.shape)))


def expand_box(box: np.ndarray, ratio: float, height: int, width: int, grid: int = 1) -> np.ndarray:
    """Each side moved outwards by ``ratio`` times the box's width (x) or height (y), snapped outwards to ``grid``
    px and clipped to the frame. (The authors' `generate_ROI` expands the bottom by the width; a bug not kept.)"""
    w, h = box[2] - box[0], box[3] - box[1]
    x0, y0 = box[0] - ratio * w, box[1] - ratio * h
    x1, y1 = box[2] + ratio * w, box[3] + ratio * h
    x0, y0 = math.floor(x0 / grid) * grid, math.floor(y0 / grid) * grid
    x1, y1 = math.ceil(x1 / grid) * grid, math.ceil(y1 / grid) * grid
    return np.array([max(0, x0), max(0, y0), min(width, x1), min(height, y1)], dtype=np.float64)


def centre_displacement(previous: np.ndarray, before: np.ndarray) -> float:
    """Centre distance between two boxes over the earlier box's diagonal."""
    centre = lambda b: np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])  # noqa: E731
    diagonal = math.hypot(before[2] - before[0], before[3] - before[1])
    return float(np.linalg.norm(centre(previous) - centre(before)) / max(diagonal, 1.0))


def search_region(
    previous: dict[int, np.ndarray],
    before: dict[int, np.ndarray],
    config: FTMUConfig,
    height: int,
    width: int,
) -> tuple[np.ndarray, str]:
    """b_s and which ratio was chosen (Sec. 3.4): ``previous`` / ``before`` are the targets' boxes at t−1 / t−2."""
    if not previous:
        return np.array([0, 0, width, height], dtype=np.float64), "whole"
    boxes = np.stack(list(previous.values()))
    minimal = np.array([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])
    moved = any(
        centre_displacement(box, before[target]) > config.motion_threshold
        for target, box in previous.items()
        if target in before
    )
    ids = list(previous)
    close = any(
        box_iou(previous[a], previous[b][None])[0] > 0 for i, a in enumerate(ids) for b in ids[i + 1 :]
    )
    kind = "big" if moved else "small" if close else "intermediate"
    ratio = {"big": config.big_ratio, "small": config.small_ratio, "intermediate": config.intermediate_ratio}[kind]
    region = expand_box(minimal, ratio, height, width, config.region_grid)
    if region[2] - region[0] < 2 or region[3] - region[1] < 2:
        return np.array([0, 0, width, height], dtype=np.float64), "whole"
    return region, kind


# -- template, candidates, matching ----------------------------------------------------------------------------------


_ANONYMOUS_POOLS = itertools.count()


@dataclass
class Candidates:
    """The segmenter's candidates in frame coordinates."""

    boxes: np.ndarray  # (N, 4) float, x0 y0 x1 y1
    masks: np.ndarray  # (N, H, W) bool
    scores: np.ndarray  # (N,)
    ids: tuple[str, ...] = ()  # one stable name per candidate (video, frame, segmenter call, index): feature cache keys

    def __post_init__(self):
        if not self.ids:  # unique per instance: id(self) could be reused and hit another pool's cached features
            pool = next(_ANONYMOUS_POOLS)
            self.ids = tuple(f"anonymous{pool}:{index}" for index in range(len(self.scores)))

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, keep: np.ndarray) -> "Candidates":
        return Candidates(self.boxes[keep], self.masks[keep], self.scores[keep], tuple(self.ids[i] for i in keep))


@dataclass
class Template:
    """The target template (Fig. 4): T_box, T_mask (None while only the first-frame box is known), T_frame."""

    box: np.ndarray
    mask: np.ndarray | None
    frame: np.ndarray
    frame_index: int
    key: str  # identifies T_frame and T_box (what S_T shows), for feature caches


def s_iou(template: Template, candidates: Candidates, alpha: float) -> np.ndarray:
    """Eq. 1-2: α·IoU(T_box, P_box) + (1 − α)·IoU(T_mask, P_mask) for every candidate; a template without a mask uses
    the box term only, whatever α is."""
    if len(candidates) == 0:
        return np.zeros(0)
    score = box_iou(template.box, candidates.boxes)
    if template.mask is None:
        return score
    return alpha * score + (1.0 - alpha) * mask_iou(template.mask, candidates.masks)


def reward(jaccard: np.ndarray | torch.Tensor | float):
    """Eq. 7: 100·J³ + 10 where J > 0.1, else −10."""
    if isinstance(jaccard, torch.Tensor):
        return torch.where(jaccard > 0.1, 100 * jaccard**3 + 10, torch.full_like(jaccard, -10.0))
    jaccard = np.asarray(jaccard, dtype=np.float64)
    return np.where(jaccard > 0.1, 100 * jaccard**3 + 10, -10.0)


def state_images(template: Template, frame: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S_T, S_P) of Eq. 4-5: T_frame blacked out outside T_box, the current frame blacked out outside P_mask."""
    x0, y0, x1, y1 = (int(round(v)) for v in template.box)
    s_t = np.zeros_like(template.frame)
    s_t[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = template.frame[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)]
    s_p = np.where(prediction[..., None], frame, 0).astype(np.uint8)
    return s_t, s_p


def box_patch(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """T_box' / P_box' of Eq. 3: the frame inside the box (at least 2 x 2 px)."""
    height, width = frame.shape[:2]
    x0, y0 = int(np.clip(np.floor(box[0]), 0, width - 2)), int(np.clip(np.floor(box[1]), 0, height - 2))
    x1, y1 = int(np.clip(np.ceil(box[2]), x0 + 2, width)), int(np.clip(np.ceil(box[3]), y0 + 2, height))
    return frame[y0:y1, x0:x1]


def resolve_label_map(masks: dict[int, np.ndarray], confidence: dict[int, float], shape: tuple[int, int]) -> np.ndarray:
    """One uint8 label map from possibly overlapping per-target masks: a contested pixel goes to the target of
    highest ``confidence`` (its matching score), ties to the smaller mask."""
    labels = np.zeros(shape, dtype=np.uint8)
    order = sorted(masks, key=lambda target: (confidence.get(target, 0.0), -int(masks[target].sum())))
    for target in order:  # the strongest claim is painted last
        labels[masks[target]] = target
    return labels


# -- the environment ------------------------------------------------------------------------------------------------


class CandidateSource(Protocol):
    def __call__(self, video: str, frame_index: int, frame: np.ndarray, region: np.ndarray | None) -> Candidates: ...


class StateEncoder(Protocol):
    def state(self, template: Template, frame: np.ndarray, prediction: np.ndarray, prediction_key: str) -> torch.Tensor:
        """s_t (Eq. 6) as a 1-D float tensor."""

    def embed(self, patches: list[np.ndarray], keys: list[str] | None = None) -> torch.Tensor:
        """(N, E) appearance embeddings of image patches (Eq. 3); ``keys`` name them for caching."""


# (K, D) states, (K, 2) [IoU(P_mask, GT), IoU(T_mask, GT)] (NaN without ground truth) -> (K,) actions in
# {REPLACE, KEEP}. Only the supervised labels of Table 2 look at the second argument.
Policy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Decision:
    """One agent decision: what the actor-critic update needs, and what the logs show."""

    target: int
    frame_index: int
    state: torch.Tensor
    action: int
    jaccard: float  # IoU of P_mask with the ground truth (nan without ground truth)
    template_jaccard: float  # IoU of the template's mask with the ground truth (nan without ground truth)
    redetection: bool

    @property
    def label(self) -> int:
        """The supervised target fixed by the ground truth: replace iff P is at least as good as the template."""
        return KEEP if self.jaccard < self.template_jaccard else REPLACE


@dataclass
class TargetState:
    template: Template
    box_history: list[np.ndarray] = field(default_factory=list)  # final boxes, latest last
    successive_keeps: int = 0
    confidence: float = 1.0
    final_mask: np.ndarray | None = None


@dataclass
class FrameLog:
    frame_index: int
    region: np.ndarray
    region_kind: str
    actions: dict[int, list[int]]
    redetected: list[int]
    seconds: dict[str, float]
    templates: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)  # T_box and its frame, after the frame
    match_scores: dict[int, float] = field(default_factory=dict)  # score of this frame's P (0: no candidate matched)


class Tracker:
    """Runs the decision process over one video for every target; ``policy`` chooses the actions."""

    def __init__(self, config: FTMUConfig, candidates: CandidateSource, encoder: StateEncoder):
        self.config, self.candidates, self.encoder = config, candidates, encoder

    def start(self, video: str, frame_index: int, frame: np.ndarray, boxes: dict[int, np.ndarray]) -> "Episode":
        """Templates from the first-frame boxes (x0, y0, x1, y1). The first frame is segmented on its search region
        and each target's mask is the candidate of best box IoU (α = 1), so the template gains a mask."""
        height, width = frame.shape[:2]
        targets = {
            target: TargetState(Template(np.asarray(box, float), None, frame, frame_index,
                                         f"{video}:{frame_index}:box{np.round(np.asarray(box, float), 2).tolist()}"))
            for target, box in boxes.items()
        }
        episode = Episode(video, targets, (height, width))
        region, kind = search_region({t: s.template.box for t, s in targets.items()}, {}, self.config, height, width)
        pool = self.candidates(video, frame_index, frame, region)
        masks, confidence = {}, {}
        for target, state in targets.items():
            scores = s_iou(state.template, pool, self.config.first_alpha)
            if len(pool) and scores.max() > 0:
                best = int(scores.argmax())
                mask = pool.masks[best]
                confidence[target] = float(scores[best])
            else:  # nothing overlaps the box: the box itself is the first mask
                mask = np.zeros((height, width), bool)
                x0, y0, x1, y1 = (int(round(v)) for v in state.template.box)
                mask[max(0, y0) : y1, max(0, x0) : x1] = True
                confidence[target] = 0.0
            state.template = replace(state.template, mask=mask)  # S_T still shows the given box
            state.final_mask, state.confidence = mask, confidence[target]
            state.box_history.append(state.template.box)
            masks[target] = mask
        episode.labels.append(resolve_label_map(masks, confidence, (height, width)))
        episode.frames.append(frame_index)
        episode.logs.append(FrameLog(frame_index, region, kind, {}, [], {}))
        return episode

    def step(
        self,
        episode: "Episode",
        frame_index: int,
        frame: np.ndarray,
        policy: Policy,
        ground_truth: np.ndarray | None = None,
    ) -> np.ndarray:
        """Process frame ``frame_index``; returns its label map and appends the decisions to ``episode``."""
        config, (height, width) = self.config, episode.shape
        seconds = {"segmentation": 0.0, "matching": 0.0, "agent": 0.0, "redetection": 0.0}
        targets = episode.targets
        previous = {t: s.box_history[-1] for t, s in targets.items()}
        before = {t: s.box_history[-2] for t, s in targets.items() if len(s.box_history) > 1}
        region, kind = search_region(previous, before, config, height, width)
        started = time.perf_counter()
        if config.matching == "appearance":  # Table 2's appearance update matches over the whole frame
            region, kind = np.array([0, 0, width, height], dtype=np.float64), "whole"
        pool = self.candidates(episode.video, frame_index, frame, None if kind == "whole" else region)
        seconds["segmentation"] += time.perf_counter() - started

        started = time.perf_counter()
        predictions = {target: self._match(state, pool, frame) for target, state in targets.items()}
        seconds["matching"] += time.perf_counter() - started
        match_scores = {target: (p[2] if p is not None else 0.0) for target, p in predictions.items()}

        actions: dict[int, list[int]] = {target: [] for target in targets}
        self._decide(episode, frame_index, frame, predictions, policy, ground_truth, actions, False, seconds)

        redetected = []
        if config.redetection:
            lost = [t for t, s in targets.items() if s.successive_keeps >= config.redetect_after]
            if lost:
                started = time.perf_counter()
                whole = self.candidates(episode.video, frame_index, frame, None)
                found = {target: self._redetect(targets[target], whole, frame) for target in lost}
                seconds["redetection"] += time.perf_counter() - started
                redetected = lost
                match_scores.update({target: (p[2] if p is not None else 0.0) for target, p in found.items()})
                self._decide(episode, frame_index, frame, found, policy, ground_truth, actions, True, seconds)
                for target in lost:  # the count of successive a1 starts again after a re-detection
                    targets[target].successive_keeps = 0

        masks = {}
        for target, state in targets.items():
            state.final_mask = state.template.mask
            box = mask_box(state.final_mask)
            state.box_history.append(box if box is not None else state.box_history[-1])
            masks[target] = state.final_mask
        labels = resolve_label_map(masks, {t: s.confidence for t, s in targets.items()}, (height, width))
        episode.labels.append(labels)
        episode.frames.append(frame_index)
        templates = {t: (s.template.box.copy(), s.template.frame_index) for t, s in targets.items()}
        episode.logs.append(FrameLog(frame_index, region, kind, actions, redetected, seconds, templates, match_scores))
        return labels

    def _match(self, state: TargetState, pool: Candidates, frame: np.ndarray):
        """The preliminary result: (mask, box, score, key) of the best candidate, or None when nothing matches."""
        if len(pool) == 0:
            return None
        if self.config.matching == "appearance":
            return self._redetect(state, pool, frame)
        template = state.template
        alpha = self.config.first_alpha if template.mask is None else self.config.alpha
        scores = s_iou(template, pool, alpha)
        best = int(scores.argmax())
        if scores[best] <= 0:
            return None
        return pool.masks[best], pool.boxes[best], float(scores[best]), pool.ids[best]

    def _redetect(self, state: TargetState, pool: Candidates, frame: np.ndarray):
        """Eq. 3: the candidate whose P_box' patch embeds closest (L2) to the template's T_box' patch."""
        if len(pool) == 0:
            return None
        template = state.template
        embeddings = self.encoder.embed(
            [box_patch(template.frame, template.box)] + [box_patch(frame, box) for box in pool.boxes],
            [f"T|{template.key}"] + [f"P|{candidate}" for candidate in pool.ids],
        )
        distances = torch.linalg.vector_norm(embeddings[1:] - embeddings[:1], dim=1)
        best = int(distances.argmin())
        return pool.masks[best], pool.boxes[best], float(1.0 / (1.0 + distances[best])), pool.ids[best]

    def _decide(self, episode, frame_index, frame, predictions, policy, ground_truth, actions, redetection, seconds):
        asked = [t for t, p in predictions.items() if p is not None]
        for target, prediction in predictions.items():
            if prediction is None:
                episode.targets[target].successive_keeps += 1
                actions[target].append(KEEP)
        if not asked:
            return
        started = time.perf_counter()
        states = torch.stack([
            self.encoder.state(episode.targets[t].template, frame, predictions[t][0], predictions[t][3]) for t in asked
        ])
        jaccards = torch.full((len(asked), 2), float("nan"))
        if ground_truth is not None:
            for row, target in enumerate(asked):
                truth = ground_truth == target
                jaccards[row, 0] = float(mask_iou(truth, predictions[target][0][None])[0])
                jaccards[row, 1] = float(mask_iou(truth, episode.targets[target].template.mask[None])[0])
        chosen = policy(states, jaccards).tolist()
        seconds["agent"] += time.perf_counter() - started
        for row, (target, state_vector, action) in enumerate(zip(asked, states, chosen)):
            mask, box, score, key = predictions[target]
            jaccard, template_jaccard = (float(value) for value in jaccards[row])
            episode.decisions.append(
                Decision(target, frame_index, state_vector, int(action), jaccard, template_jaccard, redetection)
            )
            actions[target].append(int(action))
            target_state = episode.targets[target]
            if action == REPLACE:
                target_state.template = Template(np.asarray(box, float), mask, frame, frame_index, key)
                target_state.successive_keeps = 0
                target_state.confidence = score
            else:
                target_state.successive_keeps += 1


@dataclass
class Episode:
    video: str
    targets: dict[int, TargetState]
    shape: tuple[int, int]
    labels: list[np.ndarray] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    logs: list[FrameLog] = field(default_factory=list)


def fixed_policy(action: int) -> Policy:
    """Table 2's baselines: always REPLACE (simple update) or always KEEP (no update)."""
    return lambda states, jaccards: torch.full((len(states),), action, dtype=torch.long)
