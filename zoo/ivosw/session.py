"""IVOS-W's interactive session: an interactive VOS engine plus the DAVIS scribble robot as the agent's environment
(`zoo.ivosw.module.InteractiveVideo`), the frame-selection strategies of Table 1, and `run_session`, one evaluation
episode with its J&F-per-round curve.

A session runs on a `SessionVideo` (frames, ground truth, objects 1..K, optionally the dataset's initial scribble):
- Round 1 (`reset`): the dataset's initial scribble (``Scribbles/<seq>/001.json``) when the video has one; otherwise
  the robot scribbles an empty prediction on `first_frame_for_robot` (the frame showing the most objects, ties to the
  largest foreground area, then the earlier frame: the paper's user picks "one frame that best represents the objects
  of interest", and a frame missing an object would give that object no scribble at all).
- Round r > 1 (`annotate(frame)`): the robot scribbles the errors of the current prediction on exactly ``frame``
  (`InteractiveScribblesRobot.interact(..., frame=frame)`), and the engine refines every frame.
- Each round returns `Round(frame, quality, performance)`: performance = per-frame J&F against the ground truth, the
  mean over objects (Eq. 7, `zoo.metrics.interactive.per_object_scores`); quality = the same J&F in the "oracle"
  setting, the quality network's prediction (`zoo.ivosw.quality.frame_quality` on the engine's per-object probability
  maps) in the "wild" setting. Both are recomputed only for frames whose labels / probabilities changed in the round
  (the weight-free engine leaves frames far from the annotation bit for bit as they were).

`reset` calls ``engine.start`` every time, since one engine may serve several sessions in turn (one episode after
another, never interleaved: a round assumes the engine still holds the session's earlier rounds); engines are
expected to cache per-video work (`FlowPropagationEngine` keys its flow on a digest of the frames).

Strategies (`Strategy`: (quality (N,), frames annotated so far, the user's first) → frame), as the authors' evaluation
scripts define them (``utils/utils_agent.py: recommend_frame`` of svip-lab/IVOS-W@341cd27):
- `random_strategy(seed)`: uniform over all frames, repeats allowed;
- `linspace_strategy(rounds)`: the evenly spaced grid of ``rounds`` frames that contains the user's frame
  (`linspace_frames`); each round the earliest grid frame not yet annotated;
- `worst_strategy()`: the frame of lowest quality (J&F in Oracle, predicted q in Wild) among those not yet annotated
  (all frames again once every frame has been annotated); ties to the earlier frame;
- `agent_strategy(agent)`: "Ours", ``agent.recommend(quality, counts)`` with h = how often each frame was annotated.

`run_session` plays one episode and returns the curve (mean J&F over frames after each round), the frames annotated,
the per-frame quality and J&F after each round and the timings; `session_auc` is IVOS-W's AUC of such a curve.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from zoo.interactive.engines import InteractiveEngine
from zoo.interactive.robot import InteractiveScribblesRobot
from zoo.interactive.scribbles import annotated_frames
from zoo.ivosw.env import SUBSEQUENCE, TEST_ROUNDS, recommendation_counts
from zoo.ivosw.module import Round
from zoo.ivosw.quality import QualityNetwork, frame_quality
from zoo.metrics.interactive import ivosw_auc, per_object_scores

SETTINGS = ("oracle", "wild")


# -- videos -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # arrays: compare videos by identity
class SessionVideo:
    """What a simulated session needs: frames (T, H, W, 3) uint8 RGB, ground truth (T, H, W) uint8 (0 background,
    1..num_objects, 255 void), and the dataset's initial scribble (a davis-interactive dict over these T frames) or
    None where the dataset has none."""

    name: str
    frames: np.ndarray
    ground_truth: np.ndarray
    num_objects: int
    initial_scribble: dict | None = None
    scribble_number: int = 1  # which Scribbles/<seq>/NNN.json: part of the key of the random-policy statistics

    def __post_init__(self):
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"{self.name}: frames must be (T, H, W, 3) uint8, got {self.frames.shape} "
                             f"{self.frames.dtype}")
        if self.ground_truth.shape != self.frames.shape[:3]:
            raise ValueError(f"{self.name}: ground truth {self.ground_truth.shape} does not match the frames "
                             f"{self.frames.shape[:3]}")
        if self.num_objects < 1:
            raise ValueError(f"{self.name}: a session needs at least one object")
        if self.initial_scribble is not None and len(self.initial_scribble["scribbles"]) != len(self.frames):
            raise ValueError(f"{self.name}: the initial scribble covers {len(self.initial_scribble['scribbles'])} "
                             f"frames, the video has {len(self.frames)}")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def first_scribbled_frame(self) -> int | None:
        return annotated_frames(self.initial_scribble)[0] if self.initial_scribble is not None else None

    @classmethod
    def from_sequence(cls, sequence, scribble: int | dict | None = 1, frames: Sequence[int] | None = None,
                      ) -> SessionVideo:
        """Read a `datamodules.vos_io.VideoSequence` (e.g. ``DAVIS(...)["bear"]``) whose frames are all annotated.
        ``scribble``: the number of its scribble file (used when the sequence has that file, else no initial
        scribble), a scribble dict over the whole sequence (e.g. DAVIS 2017's file for a DAVIS 2016 sequence), or
        None. ``frames``: read only these frames (e.g. a `training_window`), cutting the scribble alike (None where
        its frame is not among them)."""
        indices = list(range(len(sequence))) if frames is None else [int(i) for i in frames]
        initial, number = None, 1
        if isinstance(scribble, dict):
            initial = scribble
        elif scribble is not None and scribble in sequence.scribble_files:
            initial, number = sequence.scribble(scribble), int(scribble)
        if frames is not None:
            initial = _cut_scribble(initial, indices)
        return cls(sequence.name, np.stack([sequence.frame(i) for i in indices]),
                   np.stack([sequence.require_mask(i) for i in indices]), len(sequence.object_ids), initial, number)

    def window(self, frames: range) -> SessionVideo:
        """Consecutive frames (e.g. `training_window`), the initial scribble cut alike (None if it lies outside:
        round 1 then falls back to the robot)."""
        if frames.step != 1 or len(frames) < 1 or frames.start < 0 or frames.stop > self.num_frames:
            raise ValueError(f"{self.name}: {frames} is not a run of consecutive frames in 0..{self.num_frames - 1}")
        return replace(self, frames=self.frames[frames.start:frames.stop],
                       ground_truth=self.ground_truth[frames.start:frames.stop],
                       initial_scribble=_cut_scribble(self.initial_scribble, list(frames)))


def _cut_scribble(scribble: dict | None, indices: list[int]) -> dict | None:
    if scribble is None:
        return None
    cut = {**scribble, "scribbles": [scribble["scribbles"][i] for i in indices]}
    cut.pop("annotated_frame", None)
    return cut if annotated_frames(cut) else None


def training_window(num_frames: int, anchor: int, length: int = SUBSEQUENCE) -> range:
    """The ``length`` consecutive frames (N' = 25) of a training episode: the anchor (the first scribbled frame) as
    near the middle as the video's ends allow (clamped there). The authors' ``gen_subseq`` agrees away from the ends;
    near them it takes the midpoint of the starts that fit (N = 82: anchor 2 → frames 1..25 and anchor 80 → 56..80,
    here 0..24 and 57..81)."""
    if length > num_frames:
        raise ValueError(f"a {length}-frame window does not fit a {num_frames}-frame video")
    if not 0 <= anchor < num_frames:
        raise ValueError(f"anchor frame {anchor} outside 0..{num_frames - 1}")
    start = min(max(anchor - length // 2, 0), num_frames - length)
    return range(start, start + length)


def first_frame_for_robot(ground_truth: np.ndarray, num_objects: int) -> int:
    """Round 1 without a scribble file: the frame showing the most of objects 1..K, ties to the largest foreground
    area, then to the earlier frame."""
    ids = np.arange(1, num_objects + 1)
    present = np.stack([(ground_truth == k).any(axis=(1, 2)) for k in ids], axis=1).sum(axis=1)
    area = np.isin(ground_truth, ids).sum(axis=(1, 2))
    return int(np.lexsort((-np.arange(len(area)), area, present))[-1])


# -- the session ------------------------------------------------------------------------------------------------------


class _PerFrameCache:
    """A per-frame value recomputed only where the frame's inputs changed (compared by digest)."""

    def __init__(self):
        self.entries: dict[int, tuple[str, float]] = {}

    def get(self, frame: int, *arrays: np.ndarray, compute: Callable[[], float]) -> float:
        digest = hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
        cached = self.entries.get(frame)
        if cached is None or cached[0] != digest:
            cached = self.entries[frame] = (digest, float(compute()))
        return cached[1]


@dataclass
class RoundTiming:
    """Seconds spent in one round: the robot (the simulated user: not the method's time), the engine, the Wild
    quality network, and (filled by `run_session`) the strategy's recommendation after the round."""

    robot: float = 0.0
    engine: float = 0.0
    quality: float = 0.0
    recommend: float = 0.0

    @property
    def method(self) -> float:
        """The method's time for the round, as davisinteractive's timing counts it (everything but the user)."""
        return self.engine + self.quality + self.recommend


class InteractiveSession:
    """`InteractiveVideo` over an engine and the robot (module docstring). ``key`` defaults to (name, scribble
    number), the key of the agent's random-policy statistics. After a round: `annotated` (the frames so far, the
    user's first), `labels` (T, H, W), `scribbles` (each round's davis-interactive dict), `timings`."""

    def __init__(self, video: SessionVideo, engine: InteractiveEngine, setting: str = "oracle",
                 quality_network: QualityNetwork | None = None, robot: InteractiveScribblesRobot | None = None,
                 key: Hashable | None = None):
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
        if setting == "wild" and quality_network is None:
            raise ValueError("the wild setting needs a quality_network (zoo.ivosw.quality.QualityNetwork)")
        self.video, self.engine, self.setting, self.quality_network = video, engine, setting, quality_network
        self.robot = robot if robot is not None else InteractiveScribblesRobot()
        self.key = key if key is not None else (video.name, video.scribble_number)
        self.num_frames = video.num_frames
        self.annotated: list[int] = []
        self.labels: np.ndarray | None = None
        self.scribbles: list[dict] = []
        self.timings: list[RoundTiming] = []
        self._jf_cache, self._quality_cache = _PerFrameCache(), _PerFrameCache()

    def reset(self) -> Round:
        video = self.video
        self.engine.start(list(video.frames), video.num_objects)
        self.annotated, self.scribbles, self.timings = [], [], []
        self._jf_cache, self._quality_cache = _PerFrameCache(), _PerFrameCache()
        if video.initial_scribble is not None:
            scribbled = annotated_frames(video.initial_scribble)
            if len(scribbled) != 1:
                raise ValueError(f"{video.name}: the initial scribble has strokes on frames {scribbled}; one round "
                                 "annotates one frame")
            return self._play(scribbled[0], video.initial_scribble, robot_seconds=0.0)
        self.labels = np.zeros_like(video.ground_truth)  # the robot scribbles an empty prediction
        return self.annotate(first_frame_for_robot(video.ground_truth, video.num_objects))

    def annotate(self, frame: int) -> Round:
        if self.labels is None:
            raise RuntimeError("call reset() first: it runs round 1")
        if not 0 <= int(frame) < self.num_frames:
            raise ValueError(f"{self.video.name}: frame {frame} outside 0..{self.num_frames - 1}")
        tic = time.perf_counter()
        scribbles = self.robot.interact(self.video.name, self.labels, self.video.ground_truth,
                                        self.video.num_objects, frame=int(frame))
        return self._play(int(frame), scribbles, robot_seconds=time.perf_counter() - tic)

    def _play(self, frame: int, scribbles: dict, robot_seconds: float) -> Round:
        timing = RoundTiming(robot=robot_seconds)
        tic = time.perf_counter()
        output = self.engine.interact(frame, scribbles)
        timing.engine = time.perf_counter() - tic
        self.labels = np.array(output.labels)  # engines may hand out views of state the next round overwrites
        self.annotated.append(frame)
        self.scribbles.append(scribbles)
        performance = self._per_frame_jf()
        tic = time.perf_counter()
        quality = performance if self.setting == "oracle" else self._predicted_quality(output.probabilities)
        timing.quality = time.perf_counter() - tic
        self.timings.append(timing)
        return Round(frame, torch.as_tensor(quality, dtype=torch.float32),
                     torch.as_tensor(performance, dtype=torch.float32))

    def _per_frame_jf(self) -> np.ndarray:
        gt, labels, k = self.video.ground_truth, self.labels, self.video.num_objects
        return np.array([self._jf_cache.get(
            t, labels[t], compute=lambda t=t: per_object_scores(labels[t:t + 1], gt[t:t + 1], k)["J_AND_F"].mean())
            for t in range(self.num_frames)])

    def _predicted_quality(self, probabilities: np.ndarray) -> np.ndarray:
        # each map is copied: engines hand out read-only views, which torch.as_tensor warns about
        frames, objects = self.video.frames, range(1, self.video.num_objects + 1)
        return np.array([self._quality_cache.get(
            t, probabilities[:, t],
            compute=lambda t=t: frame_quality(self.quality_network, frames[t],
                                              [np.array(probabilities[k, t]) for k in objects]))
            for t in range(self.num_frames)])


# -- strategies -------------------------------------------------------------------------------------------------------

Strategy = Callable[[np.ndarray, Sequence[int]], int]  # (quality (N,), frames annotated so far) → next frame


def random_strategy(seed: int = 0) -> Strategy:
    generator = np.random.default_rng(seed)
    return lambda quality, annotated: int(generator.integers(len(quality)))


def linspace_frames(num_frames: int, first_frame: int, count: int) -> list[int]:
    """``count`` evenly spaced frames that include ``first_frame``, ascending: the grid ⌊k·(N − 1)/count⌋,
    k = 0..count, shifted right until it meets the first frame, less its last point (its first point where the last
    one is the first frame). Videos of at most ``count`` frames: every frame."""
    if num_frames <= count:
        return list(range(num_frames))
    grid = np.floor(np.arange(count + 1) * (num_frames - 1) / count).astype(int)
    grid += first_frame - grid[grid <= first_frame].max()
    return [int(f) for f in (grid[1:] if grid[-1] == first_frame else grid[:-1])]


def linspace_strategy(rounds: int = TEST_ROUNDS) -> Strategy:
    def choose(quality, annotated):
        grid = linspace_frames(len(quality), annotated[0], rounds)
        return next((f for f in grid if f not in annotated), annotated[0])

    return choose


def worst_strategy(skip_annotated: bool = True) -> Strategy:
    def choose(quality, annotated):
        quality = np.asarray(quality, dtype=np.float64)
        allowed = np.ones(len(quality), bool)
        if skip_annotated:
            allowed[list(annotated)] = False
            if not allowed.any():
                allowed[:] = True
        return int(np.flatnonzero(allowed)[np.argmin(quality[allowed])])

    return choose


def agent_strategy(agent) -> Strategy:
    """"Ours": anything with ``recommend(quality, counts)`` (`IVOSWAgentModule`, ``load("ivosw-davis")``)."""
    return lambda quality, annotated: int(agent.recommend(torch.as_tensor(quality, dtype=torch.float32),
                                                          recommendation_counts(annotated, len(quality))))


def make_strategy(name: str, rounds: int = TEST_ROUNDS, seed: int = 0, agent=None) -> Strategy:
    if name == "ours":
        if agent is None:
            raise ValueError("the 'ours' strategy needs an agent")
        return agent_strategy(agent)
    makers = {"random": lambda: random_strategy(seed), "linspace": lambda: linspace_strategy(rounds),
              "worst": worst_strategy}
    if name not in makers:
        raise ValueError(f"unknown strategy {name!r}; choose one of {sorted(makers) + ['ours']}")
    return makers[name]()


# -- one evaluation episode -------------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    curve: list[float]  # mean J&F over frames after rounds 1..R
    frames: list[int]  # the frame annotated in each round, frames[0] the user's
    quality: np.ndarray  # (R, N) the q the strategy saw after each round
    performance: np.ndarray  # (R, N) per-frame J&F after each round
    timings: list[RoundTiming] = field(default_factory=list)

    @property
    def auc(self) -> float:
        return session_auc(self.curve)


def session_auc(curve: Sequence[float]) -> float:
    """IVOS-W's AUC of a curve of R rounds: `zoo.metrics.interactive.ivosw_auc` of [0, curve...]."""
    return ivosw_auc([0.0, *curve])


def run_session(video: SessionVideo | InteractiveSession, engine: InteractiveEngine | None, strategy: Strategy,
                rounds: int = TEST_ROUNDS, setting: str = "oracle", quality_network: QualityNetwork | None = None,
                robot: InteractiveScribblesRobot | None = None) -> SessionResult:
    """Round 1, then ``rounds`` − 1 rounds on the frames ``strategy`` picks. An `InteractiveSession` may be passed
    instead of a video (``engine`` and the setting then come from it)."""
    session = video if isinstance(video, InteractiveSession) else InteractiveSession(
        video, engine, setting, quality_network, robot)
    played = [session.reset()]
    for _ in range(rounds - 1):
        tic = time.perf_counter()
        frame = int(strategy(played[-1].quality.numpy(), list(session.annotated)))
        session.timings[-1].recommend = time.perf_counter() - tic
        played.append(session.annotate(frame))
    return SessionResult(
        curve=[float(r.performance.mean()) for r in played], frames=[r.frame for r in played],
        quality=torch.stack([r.quality for r in played]).numpy(),
        performance=torch.stack([r.performance for r in played]).numpy(), timings=list(session.timings))


__all__ = [
    "InteractiveSession", "RoundTiming", "SETTINGS", "SessionResult", "SessionVideo", "Strategy", "agent_strategy",
    "first_frame_for_robot", "linspace_frames", "linspace_strategy", "make_strategy", "random_strategy",
    "run_session", "session_auc", "training_window", "worst_strategy",
]
