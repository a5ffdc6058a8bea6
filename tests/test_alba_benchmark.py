"""`python -m recipes.benchmark alba` on two downscaled real DAVIS frames with random networks: one JSON line on
stdout, the random weights labelled, a cold cache (every timed frame ran the detector and the flow), the grouping
timed over the same proposals the end-to-end call produced; and a checkpoint folder given as --model is what is
timed. Skips without ../shared (the benchmark runs on real frames only)."""

from __future__ import annotations

import json
import math

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SMOKE = ["--frames", "2", "--height", "120", "--threads", "1", "--no-cuda"]


@pytest.fixture(scope="module")
def blackswan(realdata):
    if not (realdata / "DAVIS2016" / "JPEGImages" / "480p" / "blackswan").is_dir():
        pytest.skip("DAVIS 2016 blackswan is not under ../shared/realdata")


def run_benchmark(capfd, *arguments: str) -> dict:
    from recipes.benchmark import main

    capfd.readouterr()
    returned = main(["alba", *arguments])
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # everything else went to stderr
    printed = json.loads(lines[0])
    assert printed["results"].keys() == returned["results"].keys()
    return printed


def test_random_weights_smoke_run_prints_labelled_cold_cache_figures(blackswan, capfd):
    result = run_benchmark(capfd, "--random-weights", *SMOKE)
    assert result["benchmark"] == "alba"
    assert result["data"].startswith("real: DAVIS 2016 480p blackswan frames 0-1")
    assert result["frame_size"] == [120, 214]  # 480 x 854 scaled to a height of 120
    assert result["random_weights"] is True and result["weights"].startswith("RANDOM WEIGHTS")
    assert list(result["results"]) == ["cpu"]
    cpu = result["results"]["cpu"]
    assert cpu["detector_calls"] == cpu["flow_calls"] == 2  # cold cache: nothing of the timed video was cached
    for key in ("end_to_end_frames_per_s", "grouping_frames_per_s"):
        assert 0 < cpu[key] < math.inf, key
    assert cpu["end_to_end_frames_per_s"] == pytest.approx(2 / cpu["end_to_end_seconds"])
    # the arg-max policy decides on every proposal of the cached episode once
    assert cpu["selection_decisions"] == round(2 * cpu["proposals_per_frame"]) > 0
    assert cpu["peak_rss_mib"] >= cpu["rss_after_mib"] > 0
    assert cpu["peak_cuda_allocated_mib"] is None


def test_a_checkpoint_folder_given_as_model_is_the_model_timed(blackswan, capfd, tmp_path):
    import torch

    from recipes.benchmarks.alba import RANDOM_NET_SIZE
    from zoo.alba.model import ALBASegmenter

    torch.manual_seed(5)
    ALBASegmenter(net={"width": 0.125, "size": RANDOM_NET_SIZE}).save_pretrained(tmp_path / "model")
    result = run_benchmark(capfd, "--model", str(tmp_path / "model"), *SMOKE)
    assert result["random_weights"] is False
    assert result["weights"] == f"trained: checkpoint folder {tmp_path / 'model'}"
    assert result["net"]["width"] == 0.125  # the folder's network, not --net-width's default


def test_a_model_that_cannot_be_loaded_names_the_alternatives(blackswan, tmp_path):
    from recipes.benchmark import main

    with pytest.raises(SystemExit, match="--random-weights"):
        main(["alba", "--model", str(tmp_path), *SMOKE])  # an empty folder: no config.json
