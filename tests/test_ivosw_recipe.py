"""`python -m recipes.ivosw_davis` end to end on a tiny synthetic DAVIS 2017 tree (3 videos of 8 frames, tiny
networks): every Table 1 cell for every setting, one curve value per round, Random's 5 runs and their mean, the
`--stage evaluate` JSON layout of the issue, the saved recommender, a re-run that trains nothing, and a bad
--data-dir as a one-line error naming it. `--benchmark youtube-vos` on a synthetic YouTube-VOS 2018 train tree in the
release layout: the sequence selection rule, the session videos (object ids renumbered, late entries, a frame without
annotation), the evaluate JSON, and evaluation-only as a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamodules.synthetic_vos import synthetic_root
from recipes import _ivosw_common as common
from recipes import _ivosw_youtube_vos as youtube_vos
from recipes import ivosw_davis
from zoo.metrics.interactive import ivosw_auc

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ROUNDS = 3
SYNTHETIC = ["--synthetic-train", "2", "--synthetic-val", "1", "--synthetic-frames", "8", "--synthetic-size", "48",
             "64"]
TINY = [*SYNTHETIC, "--hidden", "8", "--head-hidden", "8", "--random-runs", "4", "--buffer", "64",
        "--warmup-transitions", "16", "--batch-size", "8", "--agent-epochs", "2", "--updates-per-episode", "2",
        "--quality-rounds", "2", "--quality-samples", "40", "--quality-heldout-samples", "20", "--quality-epochs",
        "1", "--quality-size", "32", "--quality-batch", "8", "--random-backbone", "--rounds", str(ROUNDS),
        "--threads", "1", "--engines", "flow"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ivosw") / "run"
    summary = ivosw_davis.main([*TINY, "--run-dir", str(run_dir)])
    return run_dir, summary


def test_run_directory_holds_every_strategy_for_every_setting(run):
    run_dir, summary = run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["table1"]) == ["flow"]
    assert list(metrics["table1"]["flow"]) == ["oracle", "wild"]
    for setting, table in metrics["table1"]["flow"].items():
        assert list(table) == list(common.STRATEGIES), setting
        for name, row in table.items():
            assert len(row["curve"]) == ROUNDS, (setting, name)
            assert all(0.0 <= value <= 1.0 for value in row["curve"])
            for sample in row["per_sequence"].values():
                assert len(sample["curve"]) == ROUNDS
            if name != "random":  # Random's auc is the mean of its runs' AUCs, not the AUC of the mean curve
                assert row["auc"] == pytest.approx(ivosw_auc([0.0, *row["curve"]]))
        runs = table["random"]["runs"]
        assert len(runs) == 5 and len({run["seed"] for run in runs}) == 5
        assert table["random"]["auc"] == pytest.approx(np.mean([run["auc"] for run in runs]))
        assert table["random"]["auc_std"] == pytest.approx(np.std([run["auc"] for run in runs], ddof=1))
    for name in ("table1.md", "curves.png", "per_sequence.csv", "results.json", "model/config.json",
                 "model/model.safetensors", "evaluation/flow-oracle.json", "evaluation/flow-wild.json"):
        assert (run_dir / name).is_file(), name
    rows = (run_dir / "per_sequence.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 * len(common.STRATEGIES)  # header + one evaluation video per setting × strategy
    assert np.isfinite(metrics["quality"]["flow"]["mse"])
    stored = json.loads((run_dir / "evaluation" / "flow-wild.json").read_text())["seconds"]
    assert stored > 0 and summary["seconds"]["evaluate-flow-wild"] == stored  # kept with the cell it timed


def test_results_json_separates_measured_rows_from_the_papers(run):
    run_dir, summary = run
    assert summary["synthetic"] is True and summary["model"] == "ivosw-davis"
    assert {row["task_name"].split(":")[1].split("(")[0].strip() for row in summary["results"]} == {
        "oracle / Ours", "wild / Ours"}
    ours_wild = next(r for r in summary["results"] if "wild" in r["task_name"])
    assert ours_wild["metrics"][0]["type"] == "ivosw_auc"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert ours_wild["metrics"][0]["value"] == metrics["table1"]["flow"]["wild"]["ours"]["auc"]
    assert all("paper" in entry["dataset_name"] for entry in summary["paper_results"])
    atnet = next(e for e in summary["paper_results"] if e["dataset_name"].startswith("DAVIS ATNet"))
    paper_wild_ours = {m["type"]: m["value"] for m in atnet["metrics"]}["ivosw_auc_wild_ours"]
    assert paper_wild_ours == 74.10  # the paper's headline number, quoted as the paper's
    assert any("not the paper's ATNet" in note for note in summary["notes"])


def test_card_tables_show_every_sequence_beside_the_baselines(run):
    _, summary = run
    table = summary["per_sequence_table"]
    wild = table.split("**flow engine, wild**")[1]
    header, _, row = wild.strip().splitlines()[2:5]
    assert header.split("|")[2:-2] == [f" {name} " for name in common.STRATEGIES]
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    ours = summary["table1_markdown"]  # the per-sequence AUCs are those of the one evaluation video
    aucs = dict(zip(common.STRATEGIES, map(float, cells[1:-1])))
    assert cells[-1] == max(aucs, key=aucs.get)
    assert "| flow | wild | ours | " + f"{aucs['ours']:.4f}" in ours
    assert "**flow engine, oracle**" in table
    quality = [cell.strip() for cell in summary["table3_markdown"].splitlines()[2].split("|")[1:-1]]
    figures = summary["quality"]["flow"]
    assert quality[:3] == ["flow", f"{figures['pcc']:.4f}", f"{figures['mse']:.4f}"]


def test_saved_recommender_loads_and_recommends_a_frame(run):
    from zoo.hub import load_folder

    run_dir, _ = run
    model = load_folder(run_dir / "model", expected_type="ivosw")
    quality = np.array([0.9, 0.2, 0.8, 0.85, 0.9], dtype=np.float32)
    frame = model.recommend(quality, np.array([1, 0, 0, 0, 0]))
    assert isinstance(frame, int) and 0 <= frame < 5
    assert model.engine == "flow"


def test_evaluate_stage_writes_the_issues_layout(run, tmp_path):
    run_dir, _ = run
    root = synthetic_root("davis2017", num_train=2, num_val=1, num_frames=8, height=48, width=64, seed=0)
    out = tmp_path / "out.json"
    result = ivosw_davis.main(["--stage", "evaluate", "--model", str(run_dir / "model"), "--data-dir", str(root),
                               "--sequences", "synth-02", "--rounds", str(ROUNDS), "--json", str(out),
                               "--threads", "1"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert (written["engine"], written["setting"]) == ("flow", "wild")
    assert set(written["strategies"]) == {"ours", "random", "linspace", "worst"}
    for name, row in written["strategies"].items():
        assert isinstance(row["auc"], float) and len(row["curve"]) == ROUNDS, name
    random = written["strategies"]["random"]
    assert len(random["runs"]) == 5 and random["auc"] == pytest.approx(np.mean([r["auc"] for r in random["runs"]]))
    # the same model, videos and setting as the training run's Wild cell: the same numbers
    trained = json.loads((run_dir / "metrics.json").read_text())["table1"]["flow"]["wild"]
    assert written["strategies"]["worst"]["curve"] == pytest.approx(trained["worst"]["curve"])
    assert written["strategies"]["ours"]["curve"] == pytest.approx(trained["ours"]["curve"])


def test_rerun_resumes_without_training_again(run, capsys, monkeypatch):
    run_dir, first = run
    weights = (run_dir / "model" / "model.safetensors").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage trained again")

    monkeypatch.setattr(ivosw_davis.IVOSWAgentModule, "training_step", refuse)
    monkeypatch.setattr(ivosw_davis.IVOSWAgentModule, "collect_random_statistics", refuse)
    monkeypatch.setattr(ivosw_davis.QualityModule, "training_step", refuse)
    monkeypatch.setattr(common, "worst_policy_samples", refuse)
    monkeypatch.setattr(common, "evaluate_setting", refuse)  # Table 1 cells of the same model are reused too
    summary = ivosw_davis.main([*TINY, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert err.count("using it (--restart starts over)") == 2  # agent and quality network
    assert (run_dir / "model" / "model.safetensors").read_bytes() == weights
    assert summary["table1"] == first["table1"]


def test_a_bad_data_dir_is_a_one_line_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as raised:
        ivosw_davis.main(["--data-dir", str(missing), "--run-dir", str(tmp_path / "run")])
    message = str(raised.value.code)
    assert str(missing) in message and "\n" not in message


# -- --benchmark youtube-vos: evaluation only, on a synthetic YouTube-VOS 2018 train tree in the release layout --------


def _tiny_model(folder):
    import torch

    from zoo.ivosw.model import IVOSWRecommender

    torch.manual_seed(0)
    IVOSWRecommender(hidden=8, head_hidden=8, quality_input_size=32, quality_min_side=16.0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def youtube_tree(tmp_path_factory):
    from datamodules.synthetic_vos import write_youtube_vos

    return write_youtube_vos(tmp_path_factory.mktemp("ytvos") / "YouTubeVOS2018", split="train", num_videos=3,
                             num_frames=6, height=48, width=64, seed=0)


def test_youtube_vos_selection_is_deterministic_capped_at_50_and_skips_videos_without_objects():
    import hashlib

    meta = {f"v{i:03d}": {"objects": {"1": {"category": "cat", "frames": ["00000"]}}} for i in range(60)}
    meta["empty"] = {"objects": {}}
    meta["unlisted"] = {"objects": {"1": {"category": "cat", "frames": []}}}
    chosen = youtube_vos.youtube_vos_selection(meta)
    assert len(chosen) == 50 == youtube_vos.YOUTUBE_VOS_SEQUENCES and chosen == sorted(chosen)
    assert "empty" not in chosen and "unlisted" not in chosen
    # the documented rule: the smallest SHA-1 hex digests of the names, whatever the order of meta.json
    by_digest = sorted((n for n in meta if n.startswith("v")), key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    assert chosen == sorted(by_digest[:50])
    assert youtube_vos.youtube_vos_selection(dict(reversed(list(meta.items())))) == chosen
    assert youtube_vos.youtube_vos_selection(meta, 5) == sorted(by_digest[:5])
    few = {name: meta[name] for name in ("v001", "v002", "empty")}
    assert youtube_vos.youtube_vos_selection(few) == ["v001", "v002"]  # fewer than 50 exist: all of them


def test_youtube_vos_session_video_renumbers_objects_and_keeps_late_entries(youtube_tree, tmp_path):
    import shutil

    import cv2

    from datamodules.vos_io import read_label_png, write_label_png
    from datamodules.youtube_vos import YouTubeVOS

    root = tmp_path / "tree"
    shutil.copytree(youtube_tree, root)
    meta_path = root / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    name = "00synth000"  # two objects, the second entering at frame 6 // 3 = 2
    annotations = root / "train" / "Annotations" / name
    # object 2 becomes object 5 (ids of meta.json need not be 1..K), object 7 is listed but has no pixel, and the
    # last frame loses its annotation file
    objects = meta["videos"][name]["objects"]
    objects["5"] = objects.pop("2")
    objects["7"] = {"category": "cat", "frames": [objects["1"]["frames"][0]]}
    last = sorted(annotations.glob("*.png"))[-1]
    for entry in objects.values():
        entry["frames"] = [stem for stem in entry["frames"] if stem != last.stem]
    meta_path.write_text(json.dumps(meta))
    originals = {}
    for png in sorted(annotations.glob("*.png")):
        labels = read_label_png(png)
        originals[png.stem] = labels
        write_label_png(png, np.where(labels == 2, 5, labels).astype(np.uint8))
    last.unlink()
    sequence = YouTubeVOS(root, "train", 2018, videos=[name])[name]
    video = youtube_vos.youtube_vos_session_video(sequence, max_side=0)
    assert video.num_objects == 2 and video.frames.shape == (6, 48, 64, 3)
    for t, stem in enumerate(sorted(originals)):
        expected = np.zeros((48, 64), np.uint8) if stem == last.stem else originals[stem]
        np.testing.assert_array_equal(video.ground_truth[t], expected)
    entered = sequence.first_appearance()[5]
    assert entered == 2 and not (video.ground_truth[:entered] == 2).any() and (video.ground_truth[entered] == 2).any()
    small = youtube_vos.youtube_vos_session_video(sequence, max_side=32)
    assert small.frames.shape == (6, 24, 32, 3) and small.ground_truth.shape == (6, 24, 32)
    for t in range(6):  # labels shrink by nearest neighbour: no id is blended into another
        np.testing.assert_array_equal(small.ground_truth[t], cv2.resize(video.ground_truth[t], (32, 24),
                                                                       interpolation=cv2.INTER_NEAREST))
    assert youtube_vos.youtube_vos_session_video(sequence, max_side=100).frames.shape == (6, 48, 64, 3)  # no upscaling


def test_evaluate_stage_on_youtube_vos_picks_the_sequences_and_writes_the_json(youtube_tree, tmp_path):
    from datamodules.youtube_vos import YouTubeVOS

    model = _tiny_model(tmp_path / "model")
    out = tmp_path / "ytvos.json"
    base = ["--stage", "evaluate", "--benchmark", "youtube-vos", "--model", str(model), "--data-dir",
            str(youtube_tree), "--rounds", "2", "--threads", "1"]
    result = ivosw_davis.main([*base, "--num-sequences", "2", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    chosen = youtube_vos.youtube_vos_selection(YouTubeVOS(youtube_tree, "train", 2018, videos=[]).meta, 2)
    assert len(chosen) == 2
    assert written["benchmark"] == "youtube-vos" and written["selection"]["videos"] == chosen
    assert written["selection"]["max_side"] == 854  # by default DAVIS 480p's width
    assert written["sequences"] == [f"{name}#robot" for name in chosen]  # round 1: the robot, no scribble file
    assert (written["engine"], written["setting"], written["rounds"]) == ("flow", "wild", 2)
    assert set(written["strategies"]) == {"ours", "random", "linspace", "worst"}
    for name, row in written["strategies"].items():
        assert len(row["curve"]) == 2 and all(0.0 <= value <= 1.0 for value in row["curve"]), name
        assert row["auc"] == pytest.approx(ivosw_auc([0.0, *row["curve"]])) or name == "random"
    assert len(written["strategies"]["random"]["runs"]) == 5
    other = next(n for n in YouTubeVOS(youtube_tree, "train", 2018).names if n not in chosen)
    named = ivosw_davis.main([*base, "--sequences", other, "--strategies", "worst", "--max-side", "32"])
    assert named["sequences"] == [f"{other}#robot"] and named["selection"]["max_side"] == 32
    assert named["selection"]["rule"] == "named by --sequences" and list(named["strategies"]) == ["worst"]


def test_youtube_vos_is_evaluation_only_and_its_errors_are_one_line(youtube_tree, tmp_path):
    with pytest.raises(SystemExit) as raised:
        ivosw_davis.main(["--benchmark", "youtube-vos", "--data-dir", str(youtube_tree), "--run-dir",
                          str(tmp_path / "run")])
    message = str(raised.value.code)
    assert "--stage evaluate" in message and "train on DAVIS" in message and "\n" not in message
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as raised:
        ivosw_davis.main(["--stage", "evaluate", "--model", "x", "--max-side", "32"])
    assert "--max-side" in str(raised.value.code) and "youtube-vos" in str(raised.value.code)
    with pytest.raises(SystemExit) as raised:
        ivosw_davis.main(["--stage", "evaluate", "--benchmark", "youtube-vos", "--model", str(tmp_path / "none"),
                          "--data-dir", str(youtube_tree), "--sequences", "no-such-video"])
    message = str(raised.value.code)
    assert "no-such-video" in message and str(youtube_tree) in message and "\n" not in message
