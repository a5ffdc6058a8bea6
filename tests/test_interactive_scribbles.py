"""davis-interactive scribble files: round trips on the real DAVIS scribbles, rasterisation, clear errors."""

import json

import numpy as np
import pytest

from zoo.interactive.robot import InteractiveScribblesRobot
from zoo.interactive.scribbles import (
    annotated_frames, bresenham, empty_scribbles, fuse_scribbles, load_scribbles, save_scribbles, scribbles_to_mask,
    stroke_pixels,
)


@pytest.fixture(scope="module")
def scribble_files(realdata):
    files = sorted((realdata / "DAVIS_interactive_testdata" / "DAVIS" / "Scribbles").glob("*/*.json"))
    files.append(realdata / "DAVIS" / "Scribbles" / "bear" / "001.json")
    return files


def test_round_trip_of_real_scribble_files(scribble_files, tmp_path):
    assert len(scribble_files) == 5
    for path in scribble_files:
        original = json.loads(path.read_text())
        loaded = load_scribbles(path, sequence=path.parent.name, num_frames=len(original["scribbles"]))
        copy_path = tmp_path / path.parent.name / path.name
        save_scribbles(copy_path, loaded)
        assert load_scribbles(copy_path) == original


def test_real_bear_scribble_rasterises_on_its_frame(realdata):
    scribbles = load_scribbles(realdata / "DAVIS" / "Scribbles" / "bear" / "001.json", "bear", 82)
    assert annotated_frames(scribbles) == [39]
    masks = scribbles_to_mask(scribbles, (480, 854))
    assert masks.shape == (82, 480, 854)
    assert set(np.unique(masks[39]).tolist()) == {-1, 1} and (masks[:39] == -1).all()
    # every stroke point is drawn, at (x·(W-1), y·(H-1)) truncated, and the lines are 8-connected
    first = np.asarray(scribbles["scribbles"][39][0]["path"]) * [853, 479]
    pixels = first.astype(int)
    assert (masks[39][pixels[:, 1], pixels[:, 0]] == 1).all()
    line = bresenham(pixels)
    assert np.abs(np.diff(line, axis=0)).max() <= 1


def test_bresenham_lines():
    assert bresenham(np.array([[0, 0], [4, 2]])).tolist() == [[0, 0], [1, 1], [2, 1], [3, 2], [4, 2]]
    assert bresenham(np.array([[3, 3], [3, 0]])).tolist() == [[3, 3], [3, 2], [3, 1], [3, 0]]
    assert bresenham(np.array([[5, 5]])).tolist() == [[5, 5]]


def test_robot_output_round_trips_and_rasterises(tmp_path):
    gt = np.zeros((3, 40, 60), np.uint8)
    gt[:, 10:30, 15:45] = 1
    pred = np.zeros_like(gt)
    pred[:, 10:30, 15:25] = 1  # misses the right part of the object in every frame
    robot = InteractiveScribblesRobot(clock=lambda: 0.0, strict=True)
    scribbles = robot.interact("toy", pred, gt)
    save_scribbles(tmp_path / "toy" / "001.json", scribbles)
    loaded = load_scribbles(tmp_path / "toy" / "001.json", "toy", 3)
    assert loaded == json.loads(json.dumps(scribbles))
    frame = loaded["annotated_frame"]
    for stroke in loaded["scribbles"][frame]:
        x, y = stroke_pixels(stroke, (40, 60)).T
        assert (gt[frame][y, x] == 1).all() and (pred[frame][y, x] == 0).all()
    fused = fuse_scribbles(empty_scribbles("toy", 3), loaded)
    assert annotated_frames(fused) == [frame] and annotated_frames(empty_scribbles("toy", 3)) == []


def test_clear_errors_on_bad_files(scribble_files, tmp_path):
    bear = next(p for p in scribble_files if p.parent.name == "bear")
    with pytest.raises(ValueError, match=r"001\.json.*not 'tennis'"):
        load_scribbles(bear, sequence="tennis")
    with pytest.raises(ValueError, match=r"covers? 2 frames but the sequence has 82|cover 2 frames"):
        load_scribbles(bear, sequence="bear", num_frames=82)
    with pytest.raises(ValueError, match="unknown sequence 'bear'"):
        load_scribbles(bear, known_sequences=["blackswan", "tennis"])
    bad = json.loads(bear.read_text())
    bad["scribbles"][0][0]["path"][0] = [1.5, 0.2]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json.*in \[0, 1\]"):
        load_scribbles(tmp_path / "bad.json")
    bad["scribbles"][0][0]["path"][0] = [0.5, 0.2]
    bad["scribbles"][0][0]["object_id"] = -3
    with pytest.raises(ValueError, match="object_id -3"):
        save_scribbles(tmp_path / "out.json", bad)
    with pytest.raises(ValueError, match="cannot fuse"):
        fuse_scribbles(empty_scribbles("a", 2), empty_scribbles("a", 3))
