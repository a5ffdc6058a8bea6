"""YouTube-Objects ground-truth reader on synthetic trees in the release layouts (datamodules/youtube_objects.py):
read-back of frames and sparse masks, sequences starting at their first label, the instance split, bad inputs."""

import shutil

import cv2
import numpy as np
import pytest

from datamodules.youtube_objects import (
    YouTubeObjects,
    carry_ids,
    split_first_frame,
    synthetic_shots,
    write_youtube_objects,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_youtube_objects(tmp_path_factory.mktemp("yto") / "youtube_masks")


@pytest.fixture
def copy(tree, tmp_path):
    return shutil.copytree(tree, tmp_path / "youtube_masks")


def _shot_dir(root, name):
    category, video, shot = name.split("/")
    return root / category / "data" / video / "shots" / shot


def test_full_layout_reads_back(tree):
    shots = synthetic_shots()
    yto = YouTubeObjects(tree)
    assert yto.names == list(shots) == ["aeroplane/0001/001", "bird/0001/001", "boat/0001/001"]
    for name, shot in shots.items():
        sequence = yto[name]
        first, last = shot.label_numbers[0], shot.label_numbers[-1]
        # The sequence runs from the first to the last label: frame 0 is annotated, whatever came before is dropped.
        assert sequence.metadata["frame_numbers"] == list(range(first, last + 1))
        assert sequence.metadata["dropped_leading_frames"] == first - 1
        assert sequence.annotated_frames == [n - first for n in shot.label_numbers]
        assert sequence.frame_names[sequence.annotated_frames[1]] == f"{shot.label_numbers[1]:05d}"
        assert sequence.object_ids == (1,)
        for index, number in enumerate(sequence.metadata["frame_numbers"]):
            # JPEG frames: the rendered frame of that number is the nearest one, its neighbours are farther.
            errors = {t: np.abs(sequence.frame(index).astype(int) - shot.video.frames[t]).mean()
                      for t in (number - 2, number - 1, number) if 0 <= t < len(shot.video.frames)}
            assert min(errors, key=errors.get) == number - 1 and errors[number - 1] < 8
            mask = sequence.mask(index)
            if number in shot.label_numbers:
                np.testing.assert_array_equal(mask, (shot.video.labels[number - 1] > 0).astype(np.uint8))
            else:
                assert mask is None
        rows, columns = np.nonzero(shot.video.labels[first - 1])
        np.testing.assert_array_equal(
            sequence.first_frame_boxes()[1], [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
        )
    assert yto["boat/0001/001"].metadata["dropped_leading_frames"] == 3  # the shot whose labels start on frame 4


def test_annotated_only_layout_png_labels_and_roots(tmp_path):
    root = write_youtube_objects(tmp_path / "data" / "youtube_masks", layout="annotated-only", label_suffix=".png")
    shots = synthetic_shots()
    yto = YouTubeObjects(tmp_path / "data", categories=["bird", "boat"])  # the folder holding youtube_masks
    assert yto.names == ["bird/0001/001", "boat/0001/001"]
    for name in yto.names:
        sequence, shot = yto[name], shots[name]
        assert sequence.metadata["layout"] == "annotated-only"
        assert len(sequence) == len(shot.label_numbers) and sequence.annotated_frames == list(range(len(sequence)))
        for index, number in enumerate(shot.label_numbers):
            assert np.abs(sequence.frame(index).astype(int) - shot.video.frames[number - 1]).mean() < 1  # PNG
            np.testing.assert_array_equal(sequence.mask(index), shot.video.labels[number - 1] > 0)
    # Full frames in a separate tree (clockwork-fcn's v1/<category>/data/<video>/shots/<shot>/frameNNNN.jpg).
    full = write_youtube_objects(tmp_path / "full")
    frames_root = tmp_path / "v1" / "bird" / "data" / "0001" / "shots" / "001"
    shutil.copytree(_shot_dir(full, "bird/0001/001") / "images", frames_root)
    sequence = YouTubeObjects(root, sequences=["bird/0001/001"], frames_root=tmp_path / "v1")["bird/0001/001"]
    assert sequence.metadata["layout"] == "full" and len(sequence) == 31
    assert sequence.frame_paths[10].parent == frames_root


def test_split_instances_gives_each_merged_object_its_id(tree):
    shot = synthetic_shots()["bird/0001/001"]
    assert shot.merged
    annotated = [n - 1 for n in shot.label_numbers]
    # The data must make per-frame numbering fail: the objects' raster order swaps between annotated frames.
    first_pixels = [(np.flatnonzero(shot.video.labels[t] == 1)[0], np.flatnonzero(shot.video.labels[t] == 2)[0])
                    for t in annotated]
    assert len({one < two for one, two in first_pixels}) == 2
    merged = YouTubeObjects(tree)["bird/0001/001"]
    assert merged.object_ids == (1,) and set(np.unique(merged.mask(0)).tolist()) == {0, 1}
    split = YouTubeObjects(tree, split_instances=True)
    sequence = split["bird/0001/001"]
    assert sequence.object_ids == (1, 2)
    for index in reversed(sequence.annotated_frames):  # out of order too: ids are recomputed from the first label
        np.testing.assert_array_equal(sequence.mask(index), shot.video.labels[index])
    assert set(sequence.first_frame_boxes()) == {1, 2}
    assert split["aeroplane/0001/001"].object_ids == (1,)


def test_split_helpers():
    foreground = np.zeros((40, 60), np.uint8)
    foreground[20:30, 5:15] = 1  # lower-left blob
    foreground[2:12, 40:55] = 1  # upper-right blob: first in raster order
    foreground[14:16, 44:46] = 1  # a 4-pixel fragment just below it
    ids = split_first_frame(foreground)
    assert ids[5, 45] == 1 and ids[25, 10] == 2 and ids[15, 45] == 1
    assert set(np.unique(ids).tolist()) == {0, 1, 2}
    last_seen = {1: ids == 1, 2: ids == 2}
    later = np.zeros_like(foreground)
    later[10:28, 12:30] = 1  # touches object 1's last mask in 2x2 pixels, object 2's in 8x3: object 2
    later[10:12, 12:42] = 1  # (the bridge to object 1)
    later[30:38, 50:58] = 1  # overlaps nothing; nearest to object 1 (its fragment)
    carried = carry_ids(later, last_seen)
    assert carried[20, 20] == 2 and carried[10, 40] == 2 and carried[35, 55] == 1
    assert (carry_ids(np.zeros_like(foreground), last_seen) == 0).all()


def test_missing_annotation_folder(copy):
    shutil.rmtree(_shot_dir(copy, "aeroplane/0001/001") / "labels")
    with pytest.raises(FileNotFoundError, match=r"annotation folder .*aeroplane/data/0001/shots/001/labels"):
        YouTubeObjects(copy)


def test_annotation_of_other_size_than_frame(copy):
    label = _shot_dir(copy, "bird/0001/001") / "labels" / "00011.jpg"
    cv2.imwrite(str(label), np.zeros((48, 64), np.uint8))
    sequence = YouTubeObjects(copy)["bird/0001/001"]
    assert sequence.mask(0) is not None
    with pytest.raises(ValueError, match=r"00011.jpg is 48x64 .*frame0011.jpg is 96x128.*resize the frames"):
        sequence.mask(10)
    with pytest.raises(ValueError, match=r"00011.jpg is 48x64"):  # the split reads it on the way to later labels
        YouTubeObjects(copy, split_instances=True)["bird/0001/001"].mask(20)


def test_unknown_category_and_sequence_names(copy):
    with pytest.raises(ValueError, match=r"unknown YouTube-Objects categories \['person'\]"):
        YouTubeObjects(copy, categories=["person"])
    with pytest.raises(FileNotFoundError, match=r"category folder .*youtube_masks/cat/data does not exist"):
        YouTubeObjects(copy, categories=["cat"])
    with pytest.raises(FileNotFoundError, match=r"shot folder .*bird/data/0002/shots/001 does not exist"):
        YouTubeObjects(copy, sequences=["bird/0002/001"])
    with pytest.raises(ValueError, match=r"'bird_0001' is not <category>/<video>/<shot>"):
        YouTubeObjects(copy, sequences=["bird_0001"])
    with pytest.raises(KeyError, match=r"no sequence 'horse/0001/001' in .*youtube_masks; have aeroplane/0001/001"):
        YouTubeObjects(copy)["horse/0001/001"]
    with pytest.raises(FileNotFoundError, match=r"none of the category folders"):
        YouTubeObjects(copy / "aeroplane")


def test_bad_frames_and_labels(copy):
    shot = _shot_dir(copy, "aeroplane/0001/001")
    (shot / "images" / "frame0005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"aeroplane/data/0001/shots/001/images/frame0005.jpg is missing"):
        YouTubeObjects(copy)
    shutil.copy(shot / "images" / "frame0004.jpg", shot / "images" / "frame0005.jpg")
    shutil.copy(shot / "labels" / "00011.jpg", shot / "labels" / "00011 copy.jpg")
    with pytest.raises(ValueError, match=r"labels/00011 copy.jpg: annotation files are named by frame number"):
        YouTubeObjects(copy)
    (shot / "labels" / "00011 copy.jpg").unlink()
    (shot / "labels" / "00011.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"annotation .*labels/00011.jpg: cannot decode"):
        YouTubeObjects(copy)["aeroplane/0001/001"].mask(10)


def test_single_label_shots_are_skipped_unless_named(copy):
    labels = _shot_dir(copy, "boat/0001/001") / "labels"
    for path in sorted(labels.iterdir())[1:]:
        path.unlink()
    assert "boat/0001/001" not in YouTubeObjects(copy).names
    assert "boat/0001/001" in YouTubeObjects(copy, skip_single_annotation=False).names
    (kept,) = YouTubeObjects(copy, sequences=["boat/0001/001"])
    assert len(kept) == 1 and kept.annotated_frames == [0]
