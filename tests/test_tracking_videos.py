"""Tracking videos with several objects per frame (datamodules.tracking_videos): boxes agree with the pixels they
describe, the camera moves, rendering is deterministic and cached, and each source reads its layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import tracking_videos
from datamodules.image_io import read_rgb, write_rgb
from datamodules.instance_frames import InstanceFrame
from datamodules.instance_io import write_label_png
from datamodules.otb import read_groundtruth
from datamodules.synthetic_otb import write_synthetic_otb
from datamodules.tracking_videos import (
    TrackedVideo,
    camera_trajectory_videos,
    davis2016_videos,
    first_visible_frames,
    otb_videos,
    realdata_tracking_sources,
    synthetic_multi_target_videos,
)

RED, BLUE = (230, 20, 20), (20, 20, 230)
# (colour, top, left, height, width) of the two rectangles of the still image, 0-based pixels
RECTANGLES = ((RED, 60, 70, 40, 56), (BLUE, 90, 170, 56, 36))
OUTPUT = (96, 128)


def _still_image(folder: Path, name: str, seed: int) -> InstanceFrame:
    """A 200 x 300 grey, slightly noisy image with a red and a blue rectangle; their CVPPP-style label PNG."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(rng.normal(128, 12, (200, 300, 1)).repeat(3, axis=2), 0, 255).astype(np.uint8)
    labels = np.zeros((200, 300), np.int64)
    for instance, (colour, top, left, height, width) in enumerate(RECTANGLES, start=1):
        rgb[top : top + height, left : left + width] = colour
        labels[top : top + height, left : left + width] = instance
    image = write_rgb(folder / f"{name}_rgb.png", rgb)
    label_path = write_label_png(folder / f"{name}_label.png", labels, palette=True)
    return InstanceFrame("cvppp", name, image, label_path)


def _colour_box(rgb: np.ndarray, colour) -> np.ndarray:
    """OTB box (1-based) of the pixels close to `colour`; NaN when there are hardly any."""
    close = (np.abs(rgb.astype(np.int16) - np.array(colour)) < 60).all(axis=2)
    if close.sum() < 10:
        return np.full(4, np.nan)
    rows, columns = np.flatnonzero(close.any(axis=1)), np.flatnonzero(close.any(axis=0))
    return np.array([columns[0] + 1, rows[0] + 1, columns[-1] - columns[0] + 1, rows[-1] - rows[0] + 1], float)


@pytest.fixture
def stills(tmp_path):
    folder = tmp_path / "stills"
    return [_still_image(folder, "plantA", 0), _still_image(folder, "plantB", 1)]


def _render(frames, out_dir, **kwargs):
    kwargs = {"num_frames": 12, "output_size": OUTPUT, "min_box_pixels": 6, **kwargs}
    return {video.name: video for video in camera_trajectory_videos(frames, out_dir, **kwargs)}


def test_camera_boxes_match_the_rendered_pixels_and_the_camera_moves(stills, tmp_path):
    videos = _render(stills, tmp_path / "out")
    assert set(videos) == {"cvppp/plantA", "cvppp/plantB"}
    compared = 0
    for video in videos.values():
        assert video.source == "cvppp" and video.image_size == OUTPUT and len(video) == 12
        assert video.frame_paths[0] == tmp_path / "out" / f"cvppp_{video.name.split('/')[1]}" / "img" / "0001.jpg"
        # the targets are the two rectangles, largest first; which is which follows from the colour at frame 0
        assert video.targets == ["1", "2"]
        frame0 = read_rgb(video.frame_paths[0])
        colours = {}
        for target in video.targets:
            x, y, w, h = video.boxes[target][0]
            centre = frame0[int(y - 1 + h / 2), int(x - 1 + w / 2)]
            colours[target] = RED if centre[0] > centre[2] else BLUE
        assert set(colours.values()) == {RED, BLUE}
        for t in range(len(video)):
            rgb = read_rgb(video.frame_paths[t])
            assert rgb.shape[:2] == OUTPUT
            for target, colour in colours.items():
                written, seen = video.boxes[target][t], _colour_box(rgb, colour)
                if np.isfinite(written).all() and written[2] >= 8 and written[3] >= 8:
                    np.testing.assert_allclose(seen, written, atol=2, err_msg=f"{video.name} target {target} frame {t}")
                    compared += 1
                elif not np.isfinite(written).all():
                    assert not np.isfinite(seen).all() or seen[2] * seen[3] < 60, (video.name, target, t, seen)
        # the camera moves: the boxes are not the same on every frame
        for target in video.targets:
            visible = video.boxes[target][first_visible_frames(video, target)]
            assert np.ptp(visible[:, :2], axis=0).max() > 3 or np.ptp(visible[:, 2:], axis=0).max() > 3
    assert compared >= 12
    # what was written is what was returned (the OTB layout: groundtruth_rect.<k>.txt, NaN rows as NaN)
    folder = tmp_path / "out" / "cvppp_plantA"
    for target in ("1", "2"):
        np.testing.assert_array_equal(read_groundtruth(folder / f"groundtruth_rect.{target}.txt"),
                                      videos["cvppp/plantA"].boxes[target])
    assert json.loads((folder / "meta.json").read_text())["num_targets"] == 2


def test_camera_videos_are_deterministic_per_image(stills, tmp_path):
    forward = _render(stills, tmp_path / "a")
    backward = _render(stills[::-1], tmp_path / "b")
    alone = _render(stills[1:], tmp_path / "c")
    for name in forward:
        for target in forward[name].targets:
            np.testing.assert_array_equal(forward[name].boxes[target], backward[name].boxes[target])
    np.testing.assert_array_equal(forward["cvppp/plantB"].boxes["1"], alone["cvppp/plantB"].boxes["1"])
    assert forward["cvppp/plantA"].frame_paths[5].read_bytes() == backward["cvppp/plantA"].frame_paths[5].read_bytes()
    other_seed = _render(stills, tmp_path / "d", seed=1)
    assert not np.array_equal(np.nan_to_num(other_seed["cvppp/plantA"].boxes["1"]),
                              np.nan_to_num(forward["cvppp/plantA"].boxes["1"]))


def test_camera_videos_are_reused_and_rendered_again_when_parameters_change(stills, tmp_path, monkeypatch):
    writes = []
    original = tracking_videos.write_rgb

    def counting(path, rgb, quality=95):
        writes.append(Path(path))
        return original(path, rgb, quality=quality)

    monkeypatch.setattr(tracking_videos, "write_rgb", counting)
    first = _render(stills, tmp_path / "out")
    assert len(writes) == 2 * 12
    files = sorted((tmp_path / "out").rglob("*.*"))
    mtimes = [path.stat().st_mtime_ns for path in files]
    again = _render(stills, tmp_path / "out")
    assert len(writes) == 2 * 12, "a complete folder with the same parameters must be re-used"
    assert [path.stat().st_mtime_ns for path in files] == mtimes
    for name in first:
        assert again[name].frame_paths == first[name].frame_paths
        for target in first[name].targets:
            np.testing.assert_array_equal(again[name].boxes[target], first[name].boxes[target])

    shorter = _render(stills, tmp_path / "out", num_frames=8)
    assert len(writes) == 2 * 12 + 2 * 8
    assert len(shorter["cvppp/plantA"]) == 8
    assert sorted(p.name for p in (tmp_path / "out" / "cvppp_plantA" / "img").iterdir())[-1] == "0008.jpg"
    assert json.loads((tmp_path / "out" / "cvppp_plantA" / "meta.json").read_text())["num_frames"] == 8

    # a half-written folder (no meta.json) is rendered again, too
    (tmp_path / "out" / "cvppp_plantB" / "meta.json").unlink()
    _render(stills, tmp_path / "out", num_frames=8)
    assert len(writes) == 2 * 12 + 3 * 8


def test_camera_target_selection_and_bad_input(stills, tmp_path):
    # no instance is 60 px high in a 96 px frame: no target, no video
    assert _render(stills[:1], tmp_path / "out", min_box_pixels=60) == {}
    # at most max_targets, the largest first
    (only,) = _render(stills[:1], tmp_path / "one", max_targets=1).values()
    assert only.targets == ["1"]
    both = _render(stills[:1], tmp_path / "two")["cvppp/plantA"]
    np.testing.assert_array_equal(only.boxes["1"], both.boxes["1"])
    area = both.boxes["1"][0, 2] * both.boxes["1"][0, 3]
    assert area >= both.boxes["2"][0, 2] * both.boxes["2"][0, 3]

    folder = tmp_path / "bad"
    write_rgb(folder / "x_rgb.png", np.zeros((50, 60, 3), np.uint8))
    write_label_png(folder / "x_label.png", np.ones((40, 60), np.int64), palette=True)
    with pytest.raises(ValueError, match="x_label.png"):
        camera_trajectory_videos([InstanceFrame("cvppp", "x", folder / "x_rgb.png", folder / "x_label.png")],
                                 tmp_path / "out", num_frames=4)
    clash = InstanceFrame("cvppp", "plantA", stills[1].image, stills[1].labels)
    with pytest.raises(ValueError, match="one\\s+frame per sequence"):
        camera_trajectory_videos([stills[0], clash], tmp_path / "out", num_frames=4)


def _davis2016_tree(root: Path) -> None:
    sequence = "blob"
    for index in range(3):
        write_rgb(root / "JPEGImages" / "480p" / sequence / f"{index:05d}.jpg", np.full((40, 60, 3), 90, np.uint8))
    masks = root / "Annotations" / "480p" / sequence
    masks.mkdir(parents=True)
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 10:30] = 255
    Image.fromarray(mask).save(masks / "00000.png")
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(masks / "00001.png")  # empty (surf/00054.png in the release)
    moved = np.zeros((40, 60), np.uint8)
    moved[0:40, 59] = 255
    Image.fromarray(np.stack([moved, np.full_like(moved, 255)], axis=2), mode="LA").save(masks / "00002.png")


def test_davis2016_boxes_are_the_masks_tight_boxes(tmp_path):
    _davis2016_tree(tmp_path)
    (video,) = davis2016_videos(tmp_path)
    assert video.name == "davis2016/blob" and video.source == "davis2016" and video.image_size == (40, 60)
    boxes = video.boxes["1"]
    np.testing.assert_array_equal(boxes[0], [11, 6, 20, 10])  # rows 5..14, columns 10..29, 1-based
    assert np.isnan(boxes[1]).all()
    np.testing.assert_array_equal(boxes[2], [60, 1, 1, 40])  # mode LA, the last column
    np.testing.assert_array_equal(first_visible_frames(video, "1"), [0, 2])
    with pytest.raises(KeyError, match="davis2016/blob"):
        first_visible_frames(video, "2")


def test_davis2016_bad_input_names_the_file(tmp_path):
    _davis2016_tree(tmp_path)
    small = tmp_path / "Annotations" / "480p" / "blob" / "00001.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(small)
    with pytest.raises(ValueError, match="00001.png"):
        davis2016_videos(tmp_path)
    small.unlink()
    with pytest.raises(FileNotFoundError, match="00001.png"):
        davis2016_videos(tmp_path)
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        davis2016_videos(tmp_path, ["nothere"])


def test_otb_multi_target_videos_are_grouped(tmp_path):
    write_synthetic_otb(tmp_path, num_sequences=1, num_frames=12, image_size=(48, 64), seed=0, quirks=True)
    videos = {video.name: video for video in otb_videos(tmp_path)}
    assert set(videos) == {"otb/Synth01", "otb/SynthTabs", "otb/SynthPair", "otb/Football1"}
    pair = videos["otb/SynthPair"]
    assert pair.targets == ["1", "2"] and len(pair) == 12 and pair.image_size == (48, 64)
    for target in ("1", "2"):
        expected = read_groundtruth(tmp_path / "SynthPair" / f"groundtruth_rect.{target}.txt")
        expected[(expected[:, 2] <= 0) | (expected[:, 3] <= 0)] = np.nan
        np.testing.assert_array_equal(pair.boxes[target], expected)
    assert not np.array_equal(pair.boxes["1"], pair.boxes["2"])
    assert videos["otb/Synth01"].targets == ["1"]
    assert len(videos["otb/Football1"]) == 74  # the toolkit's frame range
    (only,) = otb_videos(tmp_path, ["SynthPair.2"])
    assert only.name == "otb/SynthPair" and only.targets == ["2"]
    with pytest.raises(FileNotFoundError, match="Nope"):
        otb_videos(tmp_path, ["Nope"])


def test_tracked_video_validates(tmp_path):
    frames = [tmp_path / "0001.jpg", tmp_path / "0002.jpg"]
    with pytest.raises(ValueError, match="vid/x.*3 box rows for 2 frames"):
        TrackedVideo("vid/x", "otb", frames, (10, 10), {"1": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="vid/x.*no target"):
        TrackedVideo("vid/x", "otb", frames, (10, 10), {})


def test_synthetic_multi_target_videos(tmp_path):
    videos = synthetic_multi_target_videos(tmp_path, num_videos=3, num_frames=16)
    assert [video.name for video in videos] == ["synthetic/SynthMulti01", "synthetic/SynthMulti02",
                                                 "synthetic/SynthMulti03"]
    compared = 0
    for video in videos:
        assert video.source == "synthetic" and video.targets == ["1", "2", "3"] and len(video) == 16
        boxes = [video.boxes[target] for target in video.targets]
        for i in range(3):
            for j in range(i + 1, 3):
                assert np.abs(boxes[i] - boxes[j]).max() > 5
        # the targets look different: most of a target's colours are absent from another's (frame 0: no occluder,
        # no blur), so a tracker must use the first box to know which one to follow
        frame = read_rgb(video.frame_paths[0]).astype(np.float64)
        crops = []
        for box in boxes:
            x, y, w, h = box[0] - [1, 1, 0, 0]
            crops.append((x + 0.25 * w, y + 0.25 * h, x + 0.75 * w, y + 0.75 * h))
        for i in range(3):
            for j in range(3):
                overlap = any(_intersects(crops[i], boxes[k][0] - [1, 1, 0, 0]) for k in range(3) if k != i)
                if i == j or overlap or _intersects(crops[j], boxes[i][0] - [1, 1, 0, 0]):
                    continue
                a, b = (_pixels(frame, crops[k]) for k in (i, j))
                nearest = np.sqrt(((a[:, None] - b[None]) ** 2).sum(axis=2)).min(axis=1)
                assert (nearest < 30).mean() < 0.75, (video.name, i, j)
                compared += 1
    assert compared >= 3
    # written once: a second call re-uses the folders
    mtime = videos[0].frame_paths[3].stat().st_mtime_ns
    again = synthetic_multi_target_videos(tmp_path, num_videos=3, num_frames=16)
    assert again[0].frame_paths[3].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again[2].boxes["3"], videos[2].boxes["3"])


def _intersects(crop, box) -> bool:
    x0, y0, x1, y1 = crop
    bx, by, bw, bh = box
    return x0 < bx + bw and bx < x1 and y0 < by + bh and by < y1


def _pixels(frame: np.ndarray, crop) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in crop)
    return frame[y0:y1, x0:x1].reshape(-1, 3)[::3][:400]


# --- the real samples -----------------------------------------------------------------------------------------


@pytest.fixture
def realdata_dir(realdata) -> Path:
    if not realdata.is_dir():
        pytest.skip(f"{realdata} is absent")
    return realdata


def test_realdata_sources_render_coco_and_read_davis2016(realdata_dir, tmp_path):
    from datamodules.instance_frames import real_frames

    coco = [frame for frame in real_frames(realdata_dir) if frame.source == "coco128"][:3]
    assert len(coco) == 3
    sources = realdata_tracking_sources(realdata_dir, tmp_path, num_frames=6, sources=("davis2016", "coco128"),
                                        frames=coco)
    assert list(sources) == ["davis2016", "coco128"]
    assert 1 <= len(sources["coco128"]) <= 3
    for video in sources["coco128"]:
        assert video.name.startswith("coco128/") and len(video) == 6
        assert (tmp_path / video.name.replace("/", "_") / "meta.json").is_file()
        for target in video.targets:
            x, y, w, h = video.boxes[target][0]
            assert x >= 1 and y >= 1 and x - 1 + w <= 320 and y - 1 + h <= 240
    bear = {video.name: video for video in sources["davis2016"]}["davis2016/bear"]
    height, width = bear.image_size
    assert (height, width) == (480, 854) and len(bear) == 82
    x, y, w, h = bear.boxes["1"][0]
    assert 1 <= x and 1 <= y and x - 1 + w <= width and y - 1 + h <= height and w > 50 and h > 50
    assert np.isfinite(bear.boxes["1"]).all()


def test_realdata_davis2017_gives_first_frames_of_sequences_not_in_davis2016(realdata_dir, tmp_path, monkeypatch):
    passed = []
    monkeypatch.setattr(tracking_videos, "camera_trajectory_videos", lambda frames, out_dir, **kwargs: passed.extend(frames) or [])
    sources = realdata_tracking_sources(realdata_dir, tmp_path, sources=("davis2017",))
    assert sources == {"davis2017": []}
    groups = [frame.group for frame in passed]
    assert len(groups) == len(set(groups)) >= 20
    assert not {"bear", "blackswan", "tennis"} & set(groups)
    assert all(frame.source == "davis2017" and frame.labels.name == "00000.png" for frame in passed)
    empty = realdata_tracking_sources(tmp_path / "nothing", tmp_path, sources=("davis2016", "otb", "coco128"))
    assert empty == {"davis2016": [], "otb": [], "coco128": []}


def test_longer_camera_videos_pan_about_as_fast_per_frame():
    """More keyframes for longer videos, not slower pans: a 160-frame camera moves, per 20 frames, at least half as
    far as a 40-frame one (measured 0.57; with 2-3 keyframes whatever the length it moved 0.28 as far)."""
    from datamodules.tracking_videos import camera_path

    def pan_per_20_frames(num_frames: int) -> float:
        moves = []
        for seed in range(100):
            path = camera_path(np.random.default_rng(seed), (480, 640), (240, 320), num_frames)
            moves.append(np.linalg.norm(path[20:, :2] - path[:-20, :2], axis=1).mean() / path[:, 2].mean())
        return float(np.mean(moves))

    assert pan_per_20_frames(160) > 0.5 * pan_per_20_frames(40)
    path = camera_path(np.random.default_rng(3), (480, 640), (240, 320), 160)
    assert path.shape == (160, 3) and np.isfinite(path).all()
