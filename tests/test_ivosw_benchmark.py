"""`python -m recipes.benchmark ivosw` on a few downscaled real DAVIS frames with random weights: one JSON line on
stdout, the random weights labelled, the agent timed on a state of the requested length, the quality network on one
and two objects, each engine's first round (with its per-video work) reported apart from the later ones. Skips without
../shared (the benchmark runs on real frames only)."""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMOKE = ["--random-weights", "--frames", "3", "--rounds", "3", "--height", "120", "--threads", "1",
         "--video-frames", "30", "--calls", "20", "--warm-up", "2", "--calls-quality", "1"]


@pytest.fixture(scope="module")
def blackswan(realdata):
    if not (realdata / "DAVIS2016" / "JPEGImages" / "480p" / "blackswan").is_dir():
        pytest.skip("DAVIS 2016 blackswan is not under ../shared/realdata")


def test_random_weights_smoke_run_prints_one_labelled_json_line(blackswan, capfd):
    from recipes.benchmark import main

    capfd.readouterr()
    returned = main(["ivosw", *SMOKE])
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # everything else went to stderr
    result = json.loads(lines[0])
    assert result["benchmark"] == "ivosw" and result.keys() == returned.keys()
    assert result["data"].startswith("real: DAVIS 2016 480p blackswan frames 0-2")
    assert result["frame_size"] == [120, 214]  # 480 x 854 scaled to a height of 120
    assert result["random_weights"] is True and result["weights"].startswith("RANDOM WEIGHTS")
    assert "GPU" in result["paper_reference"] and "0.70 s" in result["paper_reference"]

    recommend = result["recommend"]
    assert recommend["video_frames"] == 30 and recommend["calls_timed"] == 20
    assert 0 < recommend["min_ms"] <= recommend["median_ms"] <= recommend["p90_ms"] < math.inf
    assert recommend["meets_goal"] == (recommend["median_ms"] <= recommend["goal_ms"] == 5.0)

    quality = result["quality_network"]
    assert quality["frame_size"] == [120, 214] and quality["backbone_weights"] != "random"
    assert 0 < quality["1_object_median_ms"] < math.inf and 0 < quality["2_objects_median_ms"] < math.inf

    assert list(result["engines"]) == ["flow", "matching"]  # the weight-free and the learned engine
    for name, engine in result["engines"].items():
        assert engine["rounds"] == 3 and len(engine["seconds_per_round"]) == 3
        assert engine["first_round_seconds"] == engine["seconds_per_round"][0]
        assert engine["later_rounds_max_seconds"] == max(engine["seconds_per_round"][1:])
        assert len(set(engine["frames_annotated"])) == 3  # Worst never repeats a frame while others are left
        assert len(engine["jf_curve"]) == 3 and all(0 <= jf <= 1 for jf in engine["jf_curve"])
    assert result["engines"]["flow"]["flow_calls"] == 2 * (3 - 1)  # forward and backward flow per pair, once
    assert "keys of every frame" in result["engines"]["matching"]["first_round_meaning"]
    assert result["peak_rss_mib"] >= result["rss_after_mib"] > 0
