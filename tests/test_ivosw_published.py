"""The published `ivosw-davis`: its agent, with the weight-free flow engine and the robot, replays the Oracle session
on a held-out real DAVIS 2016 video and reproduces the per-sequence IVOS-W AUC and the annotated frames its card
reports (`per_sequence.csv` / `metrics.json`), so the card's numbers were measured with exactly these weights and
this code."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo.registry import get_entry

pytestmark = pytest.mark.usefixtures("hub_offline")  # the bundled copy, never the Hub

SEQUENCE = "car-shadow"  # the shortest held-out video (40 frames)


def test_bundled_agent_reproduces_the_card_on_a_held_out_real_video(shared, torch_one_thread, tmp_path):
    from datamodules.davis import DAVIS
    from recipes import _ivosw_common as common
    from zoo.ivosw.session import InteractiveSession, make_strategy, run_session

    entry = get_entry("ivosw-davis")
    table = json.loads((entry.local_dir / "metrics.json").read_text())["table1"]["flow"]["oracle"]["ours"]
    sample = f"{SEQUENCE}#robot"
    reported = table["per_sequence"][sample]
    assert SEQUENCE in entry.results[0]["data"]
    sequences = DAVIS(shared / "realdata" / "DAVIS2016", year=2016, split="val", task="interactive",
                      sequences=[SEQUENCE])
    video = common.session_videos(list(sequences), "all")[0]
    assert common.sample_name(video) == sample
    model = zoo.load("ivosw-davis")
    session = InteractiveSession(video, common.ENGINES["flow"](tmp_path), "oracle", None, common.quiet_robot())
    rounds = len(reported["curve"])
    result = run_session(session, None, make_strategy("ours", rounds=rounds, seed=0, agent=model), rounds=rounds)
    assert result.frames == reported["annotated"]
    assert result.auc == pytest.approx(reported["auc"], abs=2e-3)
