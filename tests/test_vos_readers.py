"""VOS readers on the real DAVIS samples (skipped without ../shared) and on synthetic trees of every layout,
including each bad input that must fail with an error naming the file."""

import shutil

import numpy as np
import pytest

from datamodules.davis import DAVIS, ClipDataset, DAVISDataModule
from datamodules.fbms import FBMS
from datamodules.segtrack import SegTrackV2
from datamodules.synthetic_vos import (
    render_video,
    write_davis2016,
    write_davis2017,
    write_fbms,
    write_segtrack_v2,
    write_youtube_vos,
)
from datamodules.vos_io import VOID_LABEL, write_label_png
from datamodules.youtube_vos import YouTubeVOS

# -- real DAVIS samples ------------------------------------------------------------------------------------------


def test_real_davis2016(realdata):
    train = DAVIS(realdata / "DAVIS2016", year=2016, split="train")
    # From the frame-pair lines of ImageSets/480p (../shared/realdata/MANIFEST.md lists the same).
    assert train.names == ["bear", "dog-agility", "motorbike", "rollerblade", "surf", "tennis"]
    assert DAVIS(realdata / "DAVIS2016", year=2016, split="val").names == [
        "blackswan", "car-shadow", "drift-chicane", "scooter-black"]
    bear = train["bear"]
    assert len(bear) == 82 and bear.annotated_frames == list(range(82))
    assert bear.metadata["attributes"] == ["DEF"]
    assert bear.object_ids == (1,)
    assert set(np.unique(bear.mask(77))) == {0, 1}  # the LA-mode file of the release
    frame, mask = bear[40]
    assert frame.shape[:2] == mask.shape == (480, 854)
    (box,) = bear.first_frame_boxes().values()
    rows, columns = np.nonzero(bear.mask(0))
    assert box.tolist() == [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def test_real_davis2017_test_dev_first_frames(realdata):
    test_dev = DAVIS(realdata / "DAVIS", split="test-dev", task="box")
    assert len(test_dev) == 30
    widths = set()
    for sequence in test_dev:
        mask = sequence.first_frame_mask()
        assert mask.shape == sequence.frame_size(0)
        widths.add(mask.shape[1])
        assert sequence.object_ids == tuple(range(1, int(mask[mask != VOID_LABEL].max()) + 1))
        assert set(sequence.first_frame_boxes()) <= set(sequence.object_ids)
        assert sequence.mask(len(sequence) - 1) is None or len(sequence) == 1
    assert widths > {854}  # the 902 / 910 / 1301 px wide sequences are read at their own size


def test_real_davis2017_interactive(realdata):
    davis = DAVIS(realdata / "DAVIS", split="train", task="interactive")
    bear = davis["bear"]
    assert len(bear) == 82 and bear.annotated_frames == [0, 1] and bear.mask(2) is None
    scribbles = davis.scribble("bear", 1)
    assert scribbles["sequence"] == "bear" and len(scribbles["scribbles"]) == 82
    assert {s["object_id"] for frame in scribbles["scribbles"] for s in frame} <= set(bear.object_ids)
    tennis = davis["tennis"]
    assert tennis.object_ids == (1, 2) and VOID_LABEL in tennis.mask(0)
    with pytest.raises(KeyError, match="ghost"):
        davis.scribble("ghost", 1)
    with pytest.raises(FileNotFoundError, match="number 2"):
        bear.scribble(2)


def test_real_davis_interactive_testdata(realdata):
    davis = DAVIS(realdata / "DAVIS_interactive_testdata" / "DAVIS", split=None, task="interactive")
    assert davis.names == ["bear", "blackswan", "tennis"]
    assert {name: sorted(davis[name].scribble_files) for name in davis.names} == {
        "bear": [1, 2], "blackswan": [1], "tennis": [1]
    }
    tennis_strokes = [s for frame in davis.scribble("tennis")["scribbles"] for s in frame]
    assert {s["object_id"] for s in tennis_strokes} == {1, 2}
    blackswan = davis["blackswan"]  # shipped without frames: names come from the annotations
    assert len(blackswan) == 6 and blackswan.mask(5).shape == (480, 854)
    with pytest.raises(FileNotFoundError, match="blackswan/00000.jpg"):
        blackswan.frame(0)


# -- synthetic trees ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic_vos")
    return {
        "davis2017": write_davis2017(base / "davis2017"),
        "davis2016": write_davis2016(base / "davis2016"),
        "youtube_vos": write_youtube_vos(write_youtube_vos(base / "ytvos", "train"), "valid", all_frames=True),
        "segtrack": write_segtrack_v2(base / "segtrack"),
        "fbms": write_fbms(base / "fbms"),
    }


@pytest.fixture
def copy_of(trees, tmp_path):
    def make(layout):
        return shutil.copytree(trees[layout], tmp_path / layout)

    return make


def test_synthetic_video_moves_occludes_leaves_and_reenters():
    video = render_video(3, num_frames=24, num_objects=3, late_entry_frame=6)
    present = np.array([[(labels == k).any() for k in (1, 2, 3)] for labels in video.labels])
    leaving = present[:, 0]
    first_gone = int(np.argmin(leaving))
    assert leaving[0] and not leaving.all() and leaving[first_gone:].any()  # leaves, then comes back
    assert not present[:6, 2].any() and present[6:, 2].all()  # late entry
    areas = np.array([[(labels == k).sum() for k in (1, 2, 3)] for labels in video.labels])
    assert (areas[:, 1][present[:, 1]].max() > areas[:, 1][present[:, 1]].min())  # partly hidden or clipped at times
    again = render_video(3, num_frames=24, num_objects=3, late_entry_frame=6)
    assert all(np.array_equal(a, b) for a, b in zip(video.labels, again.labels))
    assert all(np.array_equal(a, b) for a, b in zip(video.frames, again.frames))


def test_synthetic_davis2017_all_tasks(trees):
    root = trees["davis2017"]
    train = DAVIS(root, split="train")
    val = DAVIS(root, split="val")
    assert len(train) == 2 and len(val) == 2 and not set(train.names) & set(val.names)
    assert DAVIS(root, split="trainval").names == train.names + val.names
    multi = next(s for s in val if len(s.object_ids) > 1)
    assert VOID_LABEL in multi.mask(0)
    boxes = DAVIS(root, split="val", task="box")[multi.name].first_frame_boxes()
    assert set(boxes) == set(multi.object_ids)
    unsupervised = DAVIS(root, split="val", task="unsupervised")[multi.name]
    assert VOID_LABEL not in unsupervised.mask(0)
    interactive = DAVIS(root, split="val", task="interactive")[multi.name]
    scribbles = interactive.scribble(1)
    strokes = [(t, s) for t, frame in enumerate(scribbles["scribbles"]) for s in frame]
    assert {s["object_id"] for _, s in strokes} == set(multi.object_ids)
    for t, stroke in strokes:  # every scribble point lies on its object
        labels = interactive.mask(t)
        height, width = labels.shape
        for x, y in stroke["path"]:
            assert labels[int(round(y * height)), int(round(x * width))] == stroke["object_id"]


def test_synthetic_davis2016(trees):
    davis = DAVIS(trees["davis2016"], year=2016, split="train")
    sequence = davis[0]
    assert set(np.unique(sequence.mask(0))) <= {0, 1} and sequence.mask(0).any()  # the LA-mode file
    assert sequence.metadata["set"] == "training"
    assert DAVIS(trees["davis2016"], year=2016, split="val").names == ["synth-02"]


def test_synthetic_youtube_vos(trees):
    train = YouTubeVOS(trees["youtube_vos"], "train")
    valid = YouTubeVOS(trees["youtube_vos"], "valid")
    video = valid[0]
    late = max(video.object_ids)
    assert video.first_appearance()[late] > 0
    assert video.annotated_frames == sorted(set(video.first_appearance().values()))
    entry_frame, entry_mask = video.initial_masks()[late]
    np.testing.assert_array_equal(entry_mask, train[0].mask(entry_frame) == late)
    assert video.initial_boxes()[late][0] == entry_frame
    assert train[0].first_appearance() == video.first_appearance()  # scanned masks agree with meta.json
    assert train[0].metadata["categories"][1]
    dense = YouTubeVOS(trees["youtube_vos"], "valid", all_frames=True)[0]
    assert len(dense) > len(video) and dense.frame_names[dense.annotated_frames[-1]] == video.frame_names[
        video.annotated_frames[-1]
    ]


def test_synthetic_segtrack_matches_rendering(trees):
    sequences = SegTrackV2(trees["segtrack"])
    assert [len(s.object_ids) for s in sequences] == [1, 2, 3]
    multi = sequences[2]
    rendered = render_video(2, num_frames=16, num_objects=3)  # writer's seed for sequence 2 (seed 0)
    for t in (0, 7, 15):
        np.testing.assert_array_equal(multi.mask(t), rendered.labels[t])
    assert sequences[1].annotation_files[0][0].suffix == ".bmp"


def test_synthetic_fbms_sparse_ground_truth(trees):
    shots = FBMS(trees["fbms"], "train")
    shot = shots[1]
    assert len(shot) == 45 and shot.annotated_frames == [0, 20, 40] and shot.mask(10) is None
    rendered = render_video(1, num_frames=45, num_objects=2)
    for t in shot.annotated_frames:
        np.testing.assert_array_equal(shot.mask(t), rendered.labels[t])


def test_clips_and_datamodule(trees):
    clips = ClipDataset(DAVIS(trees["davis2017"], split="train"), clip_length=4, stride=4)
    item = clips[0]
    assert item["frames"].shape == (4, 3, 96, 128) and item["masks"].shape == (4, 96, 128)
    assert len(ClipDataset(FBMS(trees["fbms"]), clip_length=2)) == 0  # sparse ground truth gives no clip
    module = DAVISDataModule(trees["davis2017"], clip_length=None)
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert isinstance(batch, list) and batch[0].name in DAVIS(trees["davis2017"], split="val").names


# -- bad inputs: clear errors naming the file ---------------------------------------------------------------------


def test_mask_of_other_size_than_frame(copy_of):
    root = copy_of("davis2017")
    write_label_png(root / "Annotations" / "480p" / "synth-00" / "00003.png", np.zeros((48, 64), np.uint8))
    sequence = DAVIS(root, split="train")["synth-00"]
    with pytest.raises(ValueError, match=r"synth-00/00003.png is 48x64.*synth-00/00003.jpg is 96x128"):
        sequence.mask(3)


def test_id_beyond_first_frame_objects(copy_of):
    root = copy_of("davis2017")
    path = root / "Annotations" / "480p" / "synth-01" / "00004.png"
    labels = np.zeros((96, 128), np.uint8)
    labels[:5, :5] = 7
    write_label_png(path, labels)
    with pytest.raises(ValueError, match=r"00004.png holds object ids \[7\]"):
        DAVIS(root, split="train")["synth-01"].mask(4)
    assert DAVIS(root, split="train", task="unsupervised")["synth-01"].mask(4) is not None
    shutil.copy(path, root / "Annotations_unsupervised" / "480p" / "synth-01" / "00004.png")
    assert 7 in DAVIS(root, split="train", task="unsupervised")["synth-01"].mask(4)


def test_missing_first_annotation(copy_of):
    root = copy_of("davis2017")
    (root / "Annotations" / "480p" / "synth-02" / "00000.png").unlink()
    with pytest.raises(FileNotFoundError, match="synth-02/00000.png"):
        DAVIS(root, split="val", task="semi-supervised")
    assert DAVIS(root, split="val", task="interactive")["synth-02"].mask(0) is None
    with pytest.raises(FileNotFoundError, match="frame 0 .*has no annotation"):
        DAVIS(root, split="val", task="interactive")["synth-02"].first_frame_mask()


def test_scribbles_for_unknown_sequence(copy_of):
    root = copy_of("davis2017")
    shutil.copytree(root / "Scribbles" / "synth-00", root / "Scribbles" / "ghost")
    with pytest.raises(ValueError, match=r"Scribbles/ghost/001.json.*'ghost'"):
        DAVIS(root, split="train", task="interactive")
    shutil.rmtree(root / "Scribbles" / "ghost")
    shutil.copy(root / "Scribbles" / "synth-00" / "001.json", root / "Scribbles" / "synth-01" / "002.json")
    with pytest.raises(ValueError, match=r"synth-01/002.json: scribbles are for sequence 'synth-00'"):
        DAVIS(root, split="train", task="interactive")["synth-01"].scribble(2)


def test_missing_frames(copy_of):
    root = copy_of("davis2017")
    (root / "JPEGImages" / "480p" / "synth-00" / "00003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="synth-00/00003.jpg is missing"):
        DAVIS(root, split="train")
    root16 = copy_of("davis2016")
    (root16 / "JPEGImages" / "480p" / "synth-00" / "00019.jpg").unlink()
    (root16 / "Annotations" / "480p" / "synth-00" / "00019.png").unlink()
    with pytest.raises(FileNotFoundError, match="db_info.yml lists 20 frames.*00019.jpg"):
        DAVIS(root16, year=2016, split="train")


def test_youtube_vos_bad_annotations(copy_of):
    root = copy_of("youtube_vos")
    video = YouTubeVOS(root, "valid")[0]
    late_frame = video.frame_names[max(video.first_appearance().values())]
    (root / "valid" / "Annotations" / video.name / f"{late_frame}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"{video.name}/{late_frame}.png does not exist"):
        YouTubeVOS(root, "valid")
    labels = np.zeros((96, 128), np.uint8)
    labels[0, 0] = 9
    write_label_png(root / "train" / "Annotations" / video.name / "00010.png", labels)
    with pytest.raises(ValueError, match=r"00010.png holds object ids \[9\]"):
        YouTubeVOS(root, "train")[video.name].mask(2)


def test_segtrack_missing_object_mask(copy_of):
    root = copy_of("segtrack")
    (root / "GroundTruth" / "synthseq02" / "2" / "synthseq02_00005.png").unlink()
    with pytest.raises(FileNotFoundError, match="synthseq02/2/synthseq02_00005"):
        SegTrackV2(root)


def test_fbms_bad_trees(copy_of):
    root = copy_of("fbms")
    (root / "Trainingset" / "synthcars00" / "synthcars00_07.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="synthcars00Def.dat declares 45 frames.*number 7 is missing"):
        FBMS(root)


def test_fbms_missing_ground_truth_file(copy_of):
    root = copy_of("fbms")
    (root / "Trainingset" / "synthcars01" / "GroundTruth" / "synthcars01_21_gt.png").unlink()
    with pytest.raises(FileNotFoundError, match="synthcars01_21_gt.png listed in .*synthcars01Def.dat"):
        FBMS(root)


def test_synthetic_root_writes_once(tmp_path):
    from datamodules.synthetic_vos import synthetic_root

    first = synthetic_root("fbms", cache_dir=tmp_path, num_sequences=1)
    stamp = (first / "Trainingset" / "synthcars00" / "synthcars00_01.jpg").stat().st_mtime_ns
    again = synthetic_root("fbms", cache_dir=tmp_path, num_sequences=1)
    assert again == first and (again / "Trainingset" / "synthcars00" / "synthcars00_01.jpg").stat().st_mtime_ns == stamp
    assert synthetic_root("fbms", cache_dir=tmp_path, num_sequences=2) != first
    assert len(FBMS(first)) == 1 and not list(tmp_path.glob(".fbms-*"))
    with pytest.raises(ValueError, match="unknown layout"):
        synthetic_root("kitti", cache_dir=tmp_path)
