"""`python -m recipes.ftmu_eval` on tiny synthetic trees of every benchmark, with a tiny FTMU checkpoint loaded from a
folder and candidates scripted from the ground truth (no instance segmenter), so that the whole file runs in seconds:
the JSON's structure, Table 2's fixed rows behaving as they should, VOT-LT scores equal to `longterm_scores` on the
boxes the recipe wrote, and bad input refused with the path and the fix."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from recipes import ftmu_eval
from zoo.ftmu.env import Candidates, mask_box

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class TruthCandidates:
    """A `CandidateSource` that finds exactly the ground-truth objects: ``masks_of(video_key, frame_index)`` gives
    one bool mask per visible object (the region is ignored, as a perfect segmenter would find them anyway)."""

    def __init__(self, masks_of):
        self.masks_of = masks_of
        self.calls = 0

    def __call__(self, video, frame_index, frame, region):
        self.calls += 1
        masks = [mask for mask in self.masks_of(video, frame_index) if mask.any()]
        if not masks:
            return Candidates(np.zeros((0, 4)), np.zeros((0, *frame.shape[:2]), bool), np.zeros(0))
        masks = np.stack(masks)
        boxes = np.stack([mask_box(mask) for mask in masks])
        ids = tuple(f"{video}:{frame_index}:{index}" for index in range(len(masks)))
        return Candidates(boxes, masks, np.ones(len(masks)), ids)


def label_masks(labels: np.ndarray) -> list[np.ndarray]:
    return [labels == value for value in np.unique(labels) if value not in (0, 255)]


def sequence_truth(sequences):
    """masks_of over `VideoSequence`s annotated on every frame (SegTrack v2, DAVIS)."""
    by_key = {ftmu_eval.video_key(s.name): s for s in sequences}
    return lambda video, index: label_masks(by_key[video].require_mask(index))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from zoo.ftmu.model import FTMUSegmenter

    folder = tmp_path_factory.mktemp("ftmu-eval") / "model"
    FTMUSegmenter(hidden=(8,), pretrained_backbone=True).save_pretrained(folder)
    return folder


def run(argv, candidates):
    return ftmu_eval.main([str(a) for a in argv], candidates=candidates)


def test_segtrack_rows_and_json_structure(model_dir, tmp_path, capsys):
    from datamodules.segtrack import SegTrackV2
    from datamodules.synthetic_vos import write_segtrack_v2

    root = write_segtrack_v2(tmp_path / "segtrack", num_sequences=2, num_frames=8, height=48, width=64, seed=3)
    candidates = TruthCandidates(sequence_truth(SegTrackV2(root)))
    out = tmp_path / "out.json"
    summary = run(["--benchmark", "segtrack", "--data-dir", root, "--model", model_dir, "--rows", "no-update",
                   "iou-update", "supervised", "--json", out, "--run-dir", tmp_path / "run"], candidates)
    printed = capsys.readouterr()
    assert json.loads(printed.out.strip().splitlines()[-1]) == summary == json.loads(out.read_text())
    assert "skipping row supervised" in printed.err
    assert summary["benchmark"] == "segtrack" and summary["data"]["synthetic"] is False
    assert summary["data"]["root"] == str(root) and summary["model"]["source"].startswith("checkpoint folder")
    assert set(summary["rows"]) == {"no-update", "iou-update"} and set(summary["skipped_rows"]) == {"supervised"}
    assert summary["frames"]["max_frames"] is None and summary["frames"]["processed"] == 16
    names = summary["data"]["sequences"]
    for slug, row in summary["rows"].items():
        assert set(row["per_sequence"]) == set(names)
        assert 0.0 <= row["mean"]["J-Mean"] <= 1.0
        for scores in row["per_sequence"].values():
            assert scores["scored_frames"] == 7  # every frame but the given first one
        assert sorted((tmp_path / "run" / "results" / slug / names[0]).glob("*.png"))
    no_update, iou_update = summary["rows"]["no-update"], summary["rows"]["iou-update"]
    assert no_update["replace_rate"] == 0.0 and iou_update["replace_rate"] == 1.0
    # a perfect segmenter: updating the template follows the objects, keeping the first mask does not
    assert iou_update["mean"]["J-Mean"] > no_update["mean"]["J-Mean"] + 0.2
    for name in names:
        assert iou_update["per_sequence"][name]["J-Mean"] != no_update["per_sequence"][name]["J-Mean"]
    assert (tmp_path / "run" / "results.json").is_file()


def test_youtube_objects_scores_sparse_labels_of_split_instances(model_dir, tmp_path):
    from datamodules.youtube_objects import synthetic_shots, write_youtube_objects

    options = dict(num_videos=2, num_frames=9, label_step=4, height=48, width=96, seed=1)
    root = write_youtube_objects(tmp_path / "yt", **options)
    shots = synthetic_shots(**options)

    def masks_of(video, index):
        shot = next(s for name, s in shots.items() if ftmu_eval.video_key(name) == video)
        first = shot.label_numbers[0] - 1  # sequences start at their first label
        return label_masks(shot.video.labels[first + index])

    summary = run(["--benchmark", "youtube-objects", "--data-dir", root, "--model", model_dir, "--rows",
                   "no-update", "iou-update"], TruthCandidates(masks_of))
    merged = "bird/0001/001"  # two objects written as one foreground: split into two instances
    for row in summary["rows"].values():
        assert row["per_sequence"][merged]["scored_frames"] == 2  # labels at frames 4 and 8, not frame 0
        assert set(row["per_sequence"][merged]["J-per-object"]) == {"1", "2"}
        assert row["mean"]["objects"] == 3
    assert summary["rows"]["iou-update"]["mean"]["J-Mean"] > summary["rows"]["no-update"]["mean"]["J-Mean"]


def vot_truth(root, distractor=True):
    from datamodules.vot_lt import load_vot_lt

    sequences = {ftmu_eval.video_key(s.name): s for s in load_vot_lt(root)}

    def masks_of(video, index):
        sequence = sequences[video]
        height, width = sequence.image_size
        masks = []
        box = sequence.boxes[index]
        if not np.isnan(box).any():
            mask = np.zeros((height, width), bool)
            x, y, w, h = (int(round(v)) for v in box)
            mask[y : y + h, x : x + w] = True
            masks.append(mask)
        if distractor:  # a static object in the top-left corner
            mask = np.zeros((height, width), bool)
            mask[:8, :8] = True
            masks.append(mask)
        return masks

    return masks_of


def test_vot_lt_scores_equal_longterm_scores_of_the_written_boxes(model_dir, tmp_path):
    from datamodules.vot_lt import load_vot_lt, read_regions, write_vot_lt
    from zoo.evaluation import vot_lt as vot_evaluation
    from zoo.metrics.vot_lt import longterm_scores

    root = tmp_path / "vot"
    write_vot_lt(root, num_sequences=2, num_frames=40, image_size=(48, 64), seed=5)
    run_dir = tmp_path / "run"
    summary = run(["--benchmark", "vot-lt", "--data-dir", root, "--model", model_dir, "--rows", "no-update",
                   "iou-update", "full", "--run-dir", run_dir], TruthCandidates(vot_truth(root)))
    sequences = load_vot_lt(root)
    for slug, row in summary["rows"].items():
        for key in ("precision", "recall", "f_score"):
            assert 0.0 <= row["mean"][key] <= 1.0, (slug, key)
        folder = run_dir / "results" / slug / "longterm"
        scored = {}
        for sequence in sequences:
            boxes = read_regions(folder / sequence.name / f"{sequence.name}_001.txt")
            values = folder / sequence.name / f"{sequence.name}_001_confidence.value"
            confidence = vot_evaluation.read_confidence(values)
            assert np.isnan(boxes[0]).all() and np.isnan(confidence[0])  # the initialisation marker
            assert not np.isnan(confidence[1:]).any()
            scored[sequence.name] = (boxes, confidence, sequence.boxes, sequence.bounds)
        expected = longterm_scores(scored)
        for key in ("precision", "recall", "f_score"):
            assert row["mean"][key] == pytest.approx(expected[key], abs=1e-12), (slug, key)
        # and as `python -m zoo.evaluate vot-lt` scores the same files
        again = vot_evaluation.run(argparse.Namespace(root=root, results_dir=folder, sequences=None,
                                                      visible_only_recall=False))
        assert again["f_score"] == pytest.approx(row["mean"]["f_score"], abs=1e-12)
    no_update, iou_update = summary["rows"]["no-update"], summary["rows"]["iou-update"]
    assert no_update["mean"] != iou_update["mean"]
    assert iou_update["mean"]["f_score"] > no_update["mean"]["f_score"] + 0.3  # a perfect segmenter, followed
    assert no_update["redetections"] == 0 and iou_update["redetections"] == 0


def test_synthetic_default_max_frames_and_davis(model_dir, tmp_path, monkeypatch):
    from datamodules.davis import DAVIS

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    argv = ["--benchmark", "davis", "--model", model_dir, "--rows", "no-update", "--synthetic-videos", "1",
            "--synthetic-frames", "8", "--synthetic-size", "48", "64", "--max-frames", "5"]
    args = ftmu_eval.build_parser().parse_args([str(a) for a in argv])
    candidates = TruthCandidates(sequence_truth(DAVIS(ftmu_eval.synthetic_data(args), split="val")))
    summary = run(argv, candidates)
    assert summary["data"]["synthetic"] is True and "synthetic" in summary["data"]["description"]
    assert summary["frames"]["max_frames"] == 5
    (name,) = summary["data"]["sequences"]
    assert summary["frames"]["per_sequence"][name] == {"total": 8, "processed": 5}
    scores = summary["rows"]["no-update"]["per_sequence"][name]
    assert scores["processed"] == 5 and 0.0 <= scores["J&F-Mean"] <= 1.0
    assert any("--max-frames 5" in note for note in summary["notes"])


def test_bad_input_names_the_path_and_the_fix(model_dir, tmp_path):
    missing = tmp_path / "no-such-segtrack"
    with pytest.raises(SystemExit,
                       match=f"--data-dir {missing} does not exist.*SegTrack v2 root.*leave --data-dir out"):
        ftmu_eval.main(["--benchmark", "segtrack", "--data-dir", str(missing), "--model", str(model_dir)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=f"cannot read vot-lt data at {empty}.*list.txt"):
        ftmu_eval.main(["--benchmark", "vot-lt", "--data-dir", str(empty), "--model", str(model_dir)])
    from datamodules.synthetic_vos import write_segtrack_v2

    root = write_segtrack_v2(tmp_path / "segtrack", num_sequences=1, num_frames=3, height=32, width=32)
    with pytest.raises(SystemExit,
                       match="--model runs/nothing-here/model: folder .* does not exist.*recipes.ftmu_davis"):
        ftmu_eval.main(["--benchmark", "segtrack", "--data-dir", str(root), "--model", "runs/nothing-here/model"],
                       candidates=TruthCandidates(lambda video, index: []))
