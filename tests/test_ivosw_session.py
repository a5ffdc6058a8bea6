"""IVOS-W's interactive session (zoo.ivosw.session) on a small synthetic DAVIS 2017 video with the weight-free
FlowPropagationEngine, and on real DAVIS 2016 frames cut to a few frames (skipped without ../shared): round 1 from
the scribble file or the robot, a round annotating exactly the recommended frame, the oracle / wild quality, the
strategies, the counts h the agent sees, the curve and its AUC, and the agent's InteractiveVideo protocol."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from datamodules.davis import DAVIS
from datamodules.synthetic_vos import synthetic_root
from zoo.interactive.engines import EngineOutput, FlowPropagationEngine, InteractiveEngine
from zoo.interactive.robot import InteractiveScribblesRobot
from zoo.interactive.scribbles import annotated_frames, load_scribbles
from zoo.ivosw.module import IVOSWAgentModule, play_episode
from zoo.ivosw.quality import QualityNetwork, frame_quality
from zoo.ivosw.session import (
    InteractiveSession, SessionVideo, agent_strategy, first_frame_for_robot, linspace_frames, linspace_strategy,
    make_strategy, random_strategy, run_session, session_auc, training_window, worst_strategy,
)
from zoo.metrics.interactive import ivosw_auc, per_object_scores

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FRAMES = 12


def quiet_robot() -> InteractiveScribblesRobot:
    """The robot with a constant clock, so that two runs give identical scribble dicts."""
    return InteractiveScribblesRobot(clock=lambda: 0.0)


def fresh_jf(labels, video) -> np.ndarray:
    return per_object_scores(labels, video.ground_truth, video.num_objects)["J_AND_F"].mean(axis=1)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> SessionVideo:
    """synth-01: 2 objects (object 1 leaves the frame and returns), a void ring, the scribble file on frame 6."""
    root = synthetic_root("davis2017", cache_dir=tmp_path_factory.mktemp("synthetic"), num_train=2, num_val=1,
                          num_frames=FRAMES, height=96, width=128)
    video = SessionVideo.from_sequence(DAVIS(root, 2017, split="train", task="interactive")["synth-01"])
    assert (video.num_frames, video.num_objects, video.first_scribbled_frame) == (FRAMES, 2, FRAMES // 2)
    return video


@pytest.fixture(scope="module")
def engine() -> FlowPropagationEngine:
    return FlowPropagationEngine()  # shared: its flow is computed once for the video


def test_round_one_uses_the_scribble_file(video, engine):
    session = InteractiveSession(video, engine, robot=quiet_robot())
    first = session.reset()
    assert first.frame == session.annotated[0] == video.first_scribbled_frame
    assert session.scribbles == [video.initial_scribble]
    assert engine.annotated_frames == [video.first_scribbled_frame]
    assert session.timings[0].robot == 0.0  # the file's scribble: the robot did not draw
    assert session.key == ("synth-01", 1)


def test_round_one_without_a_file_is_the_robot_on_an_empty_prediction(video, engine):
    bare = replace(video, initial_scribble=None)
    chosen = first_frame_for_robot(bare.ground_truth, bare.num_objects)
    session = InteractiveSession(bare, engine, robot=quiet_robot())
    first = session.reset()
    expected = quiet_robot().interact("synth-01", np.zeros_like(bare.ground_truth), bare.ground_truth, 2,
                                      frame=chosen)
    assert first.frame == chosen and session.scribbles == [expected]
    strokes = expected["scribbles"][chosen]
    assert annotated_frames(expected) == [chosen] and {s["object_id"] for s in strokes} == {1, 2}


def test_first_frame_for_robot_prefers_all_objects_then_area_then_earlier():
    gt = np.zeros((4, 10, 10), np.uint8)
    gt[0, :8, :8] = 1  # the largest area, but object 2 is missing
    gt[1, :2, :2], gt[1, 5:7, 5:7] = 1, 2
    gt[2, :3, :3], gt[2, 5:8, 5:8] = 1, 2  # both objects, the largest area among such frames
    gt[3] = gt[2]  # a tie with frame 2: the earlier frame wins
    assert first_frame_for_robot(gt, 2) == 2
    assert first_frame_for_robot(gt[[0, 1]], 2) == 1
    assert first_frame_for_robot(gt, 1) == 0


@pytest.mark.parametrize("frame", [0, 3, 11])
def test_a_round_annotates_exactly_the_requested_frame(video, engine, frame):
    session = InteractiveSession(video, engine, robot=quiet_robot())
    session.reset()
    before = session.labels.copy()
    played = session.annotate(frame)
    scribble = session.scribbles[-1]
    assert played.frame == frame and session.annotated[-1] == frame and engine.annotated_frames[-1] == frame
    assert scribble["annotated_frame"] == frame and annotated_frames(scribble) == [frame]
    # what the robot draws on this frame for the prediction before the round, and nothing else
    assert scribble == quiet_robot().interact("synth-01", before, video.ground_truth, 2, frame=frame)


class InPlaceEngine(InteractiveEngine):
    """FlowPropagationEngine whose label maps are one buffer, overwritten in place by every round and every start
    (as an external engine may do)."""

    def __init__(self):
        self.inner, self.buffer = FlowPropagationEngine(), None

    def start(self, frames, num_objects):
        self.inner.start(frames, num_objects)
        shape = (len(frames), *frames[0].shape[:2])
        if self.buffer is None or self.buffer.shape != shape:
            self.buffer = np.zeros(shape, np.uint8)
        self.buffer[...] = 0

    def interact(self, frame_index, scribbles):
        out = self.inner.interact(frame_index, scribbles)
        self.buffer[...] = out.labels
        return EngineOutput(out.probabilities, self.buffer)

    def reset(self):
        self.inner.reset()
        self.buffer[...] = 0


def test_a_finished_session_keeps_its_masks_when_the_engine_moves_on(video):
    engine = InPlaceEngine()
    first = InteractiveSession(video, engine)
    first.reset()
    first.annotate(0)
    kept, buffer = first.labels.copy(), engine.buffer
    InteractiveSession(replace(video, initial_scribble=None), engine).reset()  # the next session on the engine
    assert engine.buffer is buffer
    assert not np.array_equal(engine.buffer, kept)
    np.testing.assert_array_equal(first.labels, kept)


def test_oracle_quality_is_the_per_frame_jf_after_every_round(video, engine):
    session = InteractiveSession(video, engine)
    rounds = [session.reset()] + [session.annotate(f) for f in (0, 10, 0)]
    last = rounds[-1]
    np.testing.assert_allclose(last.performance.numpy(), fresh_jf(session.labels, video), atol=1e-6)
    assert all(torch.equal(played.quality, played.performance) for played in rounds)
    assert rounds[-1].performance.mean() > rounds[0].performance.mean()
    with pytest.raises(ValueError, match="outside"):
        session.annotate(FRAMES)


def test_run_session_curve_frames_timings_and_auc(video, engine):
    result = run_session(video, engine, worst_strategy(), rounds=5)
    assert len(result.curve) == len(result.frames) == len(result.timings) == 5
    assert result.performance.shape == result.quality.shape == (5, FRAMES)
    np.testing.assert_allclose(result.curve, result.performance.mean(axis=1), rtol=1e-6)
    c = result.curve
    assert result.auc == pytest.approx((c[0] + c[1] + c[2] + c[3] + c[4] / 2) / 5)
    assert result.auc == pytest.approx(ivosw_auc([0.0, *c])) == pytest.approx(session_auc(c))
    assert all(t.engine > 0 and t.method == t.engine + t.quality + t.recommend for t in result.timings)
    assert all(t.recommend > 0 for t in result.timings[:-1])  # each decision is timed with the round it follows
    assert result.timings[-1].recommend == 0.0  # no decision after the last round


def test_worst_picks_the_lowest_quality_frame_not_yet_annotated(video, engine):
    worst = worst_strategy()
    quality = np.array([0.5, 0.2, 0.9, 0.1])
    assert worst(quality, []) == 3 and worst(quality, [3]) == 1 and worst(quality, [3, 1, 0]) == 2
    assert worst(quality, [0, 1, 2, 3]) == 3  # every frame annotated: all of them again
    assert worst_strategy(skip_annotated=False)(quality, [3]) == 3
    assert worst(np.array([0.4, 0.2, 0.2]), [0]) == 1  # ties: the earlier frame

    result = run_session(video, engine, worst, rounds=6)
    for r in range(5):
        q = result.performance[r].copy()
        q[result.frames[: r + 1]] = np.inf
        assert result.frames[r + 1] == int(np.argmin(q))


def test_linspace_frames_and_strategy(video, engine):
    # grid floor(k·11/8) = 0 1 2 4 5 6 8 9 11 holds frame 6: the last point goes
    assert linspace_frames(12, 6, 8) == [0, 1, 2, 4, 5, 6, 8, 9]
    # grid 0 12 24 37 49 61 74 86 99 shifted by 5 to meet frame 5, less its last point (104)
    assert linspace_frames(100, 5, 8) == [5, 17, 29, 42, 54, 66, 79, 91]
    assert linspace_frames(10, 9, 3) == [3, 6, 9]  # the first frame is the grid's last point: the first point goes
    assert linspace_frames(5, 2, 8) == [0, 1, 2, 3, 4]
    for num_frames in (9, 10, 25, 50, 82):
        for first in range(num_frames):
            grid = linspace_frames(num_frames, first, 8)
            assert len(grid) == 8 and first in grid and grid == sorted(set(grid))
            assert 0 <= grid[0] and grid[-1] < num_frames
            assert max(np.diff(grid)) - min(np.diff(grid)) <= 1  # evenly spaced

    result = run_session(video, engine, linspace_strategy(8), rounds=8)
    assert result.frames == [6, 0, 1, 2, 4, 5, 8, 9]


def test_random_is_seeded_uniform_and_blind_to_quality():
    quality = np.linspace(0, 1, FRAMES)
    first, again, other = (random_strategy(seed) for seed in (7, 7, 8))
    picks = [first(quality, [0]) for _ in range(3000)]
    assert picks[:50] == [again(np.zeros(FRAMES), [5]) for _ in range(50)]
    assert picks[:50] != [other(quality, [0]) for _ in range(50)]
    counts = np.bincount(picks, minlength=FRAMES)
    assert len(counts) == FRAMES and counts.min() > 3000 / FRAMES * 0.7 and counts.max() < 3000 / FRAMES * 1.3
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("best")


class ScriptedAgent:
    """Stands in for the agent: records what `recommend` is given and answers from a script (repeats included)."""

    def __init__(self, script):
        self.script, self.seen = list(script), []

    def recommend(self, quality, counts):
        self.seen.append((quality.clone(), counts.clone()))
        return self.script[len(self.seen) - 1]


def test_ours_sees_counts_that_match_the_frames_annotated(video, engine):
    session = InteractiveSession(video, engine)
    run_session(session, None, worst_strategy(), rounds=3)  # an earlier episode on the session must not count
    agent = ScriptedAgent([3, 3, 9, 6])
    result = run_session(session, None, agent_strategy(agent), rounds=5)
    assert result.frames == session.annotated == [6, 3, 3, 9, 6]
    for r, (quality, counts) in enumerate(agent.seen):
        expected = np.bincount(result.frames[: r + 1], minlength=FRAMES)
        np.testing.assert_array_equal(counts.numpy(), expected)
        np.testing.assert_allclose(quality.numpy(), result.quality[r])
    assert agent.seen[2][1][3] == 2  # frame 3 annotated twice


def test_the_session_is_the_agents_interactive_video(video, engine):
    session = InteractiveSession(video, engine)
    record = play_episode(session, 4, lambda s: int(torch.argmin(s[:, 0] + 10 * s[:, 1])))
    assert record.key == ("synth-01", 1) and record.frames[0] == video.first_scribbled_frame
    assert record.quality.shape == (4, FRAMES) and len(set(record.frames.tolist())) == 4
    np.testing.assert_allclose(record.performance[-1], fresh_jf(session.labels, video).mean(), atol=1e-6)

    agent = IVOSWAgentModule(hidden=8, head_hidden=8, buffer_capacity=64, warmup_transitions=32, random_runs=3)
    agent.videos = [session]
    agent.collect_random_statistics()
    assert all((session.key, r) in agent.statistics for r in range(2, agent.hparams.rounds + 1))
    ours = run_session(session, None, agent_strategy(agent), rounds=3)
    assert len(ours.curve) == 3 and all(0 <= f < FRAMES for f in ours.frames)


def test_wild_quality_comes_from_the_quality_network(video, engine):
    network = QualityNetwork(random_backbone=True, input_size=32, min_side=8.0)
    with pytest.raises(ValueError, match="quality_network"):
        InteractiveSession(video, engine, setting="wild")
    session = InteractiveSession(video, engine, setting="wild", quality_network=network)
    session.reset()
    played = session.annotate(0)
    probabilities = engine.output().probabilities
    expected = [frame_quality(network, video.frames[t], [np.array(probabilities[k, t]) for k in (1, 2)])
                for t in range(FRAMES)]
    np.testing.assert_allclose(played.quality.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(played.performance.numpy(), fresh_jf(session.labels, video), atol=1e-6)
    assert not np.allclose(played.quality.numpy(), played.performance.numpy())
    result = run_session(session, None, worst_strategy(), rounds=3)
    np.testing.assert_allclose(result.curve, result.performance.mean(axis=1), rtol=1e-6)  # J&F, not q
    q = result.quality[0].copy()
    q[result.frames[0]] = np.inf
    assert result.frames[1] == int(np.argmin(q))  # Worst follows the network's q in the wild


def test_training_window_and_cut_videos(video, engine):
    assert training_window(82, 39) == range(27, 52)  # bear: the scribbled frame in the middle
    assert training_window(82, 2) == range(0, 25) and training_window(82, 80) == range(57, 82)
    assert training_window(25, 0) == range(0, 25) and training_window(FRAMES, 6, 5) == range(4, 9)
    with pytest.raises(ValueError, match="does not fit"):
        training_window(20, 3)

    cut = video.window(training_window(FRAMES, video.first_scribbled_frame, 5))
    assert cut.num_frames == 5 and cut.first_scribbled_frame == 2
    np.testing.assert_array_equal(cut.ground_truth, video.ground_truth[4:9])
    assert cut.initial_scribble["scribbles"][2] == video.initial_scribble["scribbles"][6]
    assert InteractiveSession(cut, engine).reset().frame == 2
    outside = video.window(range(0, 4))
    assert outside.initial_scribble is None
    assert InteractiveSession(outside, engine).reset().frame == first_frame_for_robot(outside.ground_truth, 2)


# -- real DAVIS ------------------------------------------------------------------------------------------------------


def test_real_bear_with_its_scribble_file(realdata):
    """DAVIS 2016 bear (ground truth on every frame) with DAVIS 2017's real scribble file (frame 39), frames 37-41."""
    scribble = load_scribbles(realdata / "DAVIS" / "Scribbles" / "bear" / "001.json", "bear", 82)
    bear = DAVIS(realdata / "DAVIS2016", 2016, split=None, sequences=["bear"])["bear"]
    video = SessionVideo.from_sequence(bear, scribble=scribble, frames=training_window(82, 39, 5))
    assert video.frames.shape == (5, 480, 854, 3) and video.first_scribbled_frame == 2
    engine = FlowPropagationEngine()
    session = InteractiveSession(video, engine)
    result = run_session(session, None, worst_strategy(), rounds=3)
    assert result.frames[0] == 2 and session.scribbles[0]["scribbles"][2] == scribble["scribbles"][39]
    assert len(result.curve) == 3 and result.curve[0] > 0.5  # one real scribble segments the bear
    for r in range(2):
        q = result.performance[r].copy()
        q[result.frames[: r + 1]] = np.inf
        assert result.frames[r + 1] == int(np.argmin(q))
        assert annotated_frames(session.scribbles[r + 1]) in ([result.frames[r + 1]], [])
    np.testing.assert_allclose(result.performance[-1], fresh_jf(session.labels, video), atol=1e-6)


def test_real_davis2016_without_scribbles_starts_with_the_robot(realdata):
    blackswan = DAVIS(realdata / "DAVIS2016", 2016, split=None, sequences=["blackswan"])["blackswan"]
    video = SessionVideo.from_sequence(blackswan, frames=range(0, 4))
    assert video.initial_scribble is None and video.num_objects == 1
    session = InteractiveSession(video, FlowPropagationEngine(), robot=quiet_robot())
    first = session.reset()
    chosen = first_frame_for_robot(video.ground_truth, 1)
    assert first.frame == chosen and annotated_frames(session.scribbles[0]) == [chosen]
    assert session.scribbles[0]["scribbles"][chosen] and first.performance.mean() > 0
    played = session.annotate(3)
    assert played.frame == 3 and annotated_frames(session.scribbles[1]) in ([3], [])
