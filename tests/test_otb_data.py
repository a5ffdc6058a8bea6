import re
import shutil
import time

import cv2
import numpy as np
import pytest

from datamodules.otb import (
    SUBSETS,
    load_otb,
    load_sequence,
    read_groundtruth,
    read_sequence_groundtruth,
    sequence_names,
)
from datamodules.synthetic_otb import write_synthetic_otb

QUIRK_NAMES = ["Football1", "Synth01", "Synth02", "SynthPair.1", "SynthPair.2", "SynthTabs"]


@pytest.fixture(scope="module")
def quirk_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("otb_quirks")
    write_synthetic_otb(root, num_sequences=2, num_frames=30, image_size=(96, 128), seed=3, quirks=True)
    return root


@pytest.fixture
def one_sequence(tmp_path):
    """A fresh single-sequence tree that a test may break."""
    write_synthetic_otb(tmp_path, num_sequences=1, num_frames=20, image_size=(48, 64), seed=1)
    return tmp_path, tmp_path / "Synth01"


def write_tiny_frames(img_dir, numbers):
    img_dir.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        cv2.imwrite(str(img_dir / f"{number:04d}.jpg"), np.full((4, 4, 3), number % 256, np.uint8))


def write_rows(path, count, delimiter=","):
    # Row k is the box (1, 1, 10, k + 1): it overlaps the tiny frames and still tells the rows apart.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"1{delimiter}1{delimiter}10{delimiter}{k + 1}\n" for k in range(1, count + 1)))


# --- real samples -------------------------------------------------------------------------------------------


def test_real_samples_load_with_frames_paired_to_rows(realdata):
    root = realdata / "OTB"
    sequences = {seq.name: seq for seq in load_otb(root)}
    lengths = {name: len(seq) for name, seq in sequences.items()}
    expected = {"Crossing": 120, "Deer": 71, "Human3": 100, "Liquor": 100, "Singer2": 366, "DragonBaby": 113,
                "Human7": 250, "Skiing": 81, "Freeman1": 326}  # ../shared/realdata/MANIFEST.md
    assert {name: lengths.get(name) for name in expected} == expected
    crossing = sequences["Crossing"]  # tab separated in the release
    np.testing.assert_array_equal(crossing.boxes[0], [205, 151, 17, 50])
    assert crossing.boxes.dtype == np.float64 and crossing.boxes.shape == (120, 4)
    assert [p.name for p in crossing.frame_paths[:2]] == ["0001.jpg", "0002.jpg"]
    np.testing.assert_array_equal(sequences["Deer"].boxes[1], [313, 15, 98, 70])  # comma separated

    frame = crossing.read_frame(5)
    bgr = cv2.imread(str(root / "Crossing" / "img" / "0006.jpg"))
    assert frame.dtype == np.uint8 and frame.shape == bgr.shape and crossing.image_size == bgr.shape[:2]
    np.testing.assert_array_equal(frame, bgr[..., ::-1])
    for name, seq in sequences.items():
        np.testing.assert_array_equal(read_sequence_groundtruth(root, name), seq.boxes)


def test_real_sample_frames_iterator(realdata):
    deer = load_sequence(realdata / "OTB", "Deer")
    frames = list(deer.frames())
    assert len(frames) == 71
    np.testing.assert_array_equal(frames[-1], deer.read_frame(70))


# --- subsets ------------------------------------------------------------------------------------------------


def test_subset_sizes_and_toolkit_names():
    assert len(SUBSETS["otb2013"]) == len(set(SUBSETS["otb2013"])) == 51
    assert len(SUBSETS["otb100"]) == len(set(SUBSETS["otb100"])) == 100
    assert {"Jogging.1", "Jogging.2", "Skating2.1", "Skating2.2", "Human4.2"} <= set(SUBSETS["otb100"])
    assert not {"Jogging", "Skating2", "Human4"} & set(SUBSETS["otb100"])
    assert set(SUBSETS["otb2013"]) <= set(SUBSETS["otb100"])
    assert set(SUBSETS["drlt30"]) <= set(SUBSETS["otb100"])


def test_drlt30_is_the_papers_table_2(shared):
    text = (shared / "papers" / "drlt-tracking.txt").read_text()
    table = text[text.index("Sequence\tDRLT") : text.index("Average\t")]
    names = [line.split("\t")[0] for line in table.splitlines()[1:] if line.strip()]
    assert tuple(names) == SUBSETS["drlt30"]


def test_sequence_names_resolution(quirk_tree):
    assert sequence_names(quirk_tree) == QUIRK_NAMES
    assert sequence_names(quirk_tree, "drlt30") == list(SUBSETS["drlt30"])
    assert sequence_names(quirk_tree, ["drlt30"]) == list(SUBSETS["drlt30"])
    assert sequence_names(quirk_tree, ["SynthTabs"]) == ["SynthTabs"]
    with pytest.raises(ValueError, match="unknown OTB subset 'otb99'"):
        sequence_names(quirk_tree, "otb99")


# --- synthetic trees with the release's quirks --------------------------------------------------------------


def test_quirk_tree_loads_every_quirk(quirk_tree):
    sequences = {seq.name: seq for seq in load_otb(quirk_tree)}
    assert sorted(sequences) == QUIRK_NAMES
    assert "\t" in (quirk_tree / "SynthTabs" / "groundtruth_rect.txt").read_text()
    assert len(sequences["SynthTabs"]) == 30
    # Two targets of one video share its frames but not its boxes.
    first, second = sequences["SynthPair.1"], sequences["SynthPair.2"]
    assert first.frame_paths == second.frame_paths
    assert not np.array_equal(first.boxes, second.boxes)
    # Football1: 80 images on disk, the toolkit's range 1-74 evaluated.
    assert len(list((quirk_tree / "Football1" / "img").iterdir())) == 80
    assert len(sequences["Football1"]) == 74 and sequences["Football1"].frame_paths[-1].name == "0074.jpg"


def test_multi_target_video_needs_a_target_suffix(quirk_tree):
    with pytest.raises(FileNotFoundError, match=r"several targets, use SynthPair\.1, SynthPair\.2"):
        load_sequence(quirk_tree, "SynthPair")


def test_empty_target_file_is_not_a_sequence(tmp_path):
    # Human4 in the release: groundtruth_rect.1.txt is empty, only target 2 is annotated.
    write_tiny_frames(tmp_path / "Human4" / "img", range(1, 6))
    (tmp_path / "Human4" / "groundtruth_rect.1.txt").write_text("")
    write_rows(tmp_path / "Human4" / "groundtruth_rect.2.txt", 5)
    assert sequence_names(tmp_path) == ["Human4.2"]
    assert len(load_sequence(tmp_path, "Human4.2")) == 5


def test_toolkit_range_starting_late_pairs_rows_with_range(tmp_path):
    # BlurCar3 is evaluated on frames 3-359; its ground truth holds those 357 rows.
    write_tiny_frames(tmp_path / "BlurCar3" / "img", range(1, 360))
    write_rows(tmp_path / "BlurCar3" / "groundtruth_rect.txt", 357)
    seq = load_sequence(tmp_path, "BlurCar3")
    assert len(seq) == 357 and seq.start_frame == 3
    assert seq.frame_paths[0].name == "0003.jpg" and seq.frame_paths[-1].name == "0359.jpg"
    np.testing.assert_array_equal(seq.boxes[0], [1, 1, 10, 2])


def test_toolkit_range_with_rows_from_frame_one_is_sliced(tmp_path):
    # Tiger1: 354 rows numbered from frame 1, evaluated on frames 6-354; only ground truth is read.
    write_rows(tmp_path / "Tiger1" / "groundtruth_rect.txt", 354, delimiter=" ")
    boxes = read_sequence_groundtruth(tmp_path, "Tiger1")
    assert boxes.shape == (349, 4)
    np.testing.assert_array_equal(boxes[0], [1, 1, 10, 7])
    write_rows(tmp_path / "David" / "groundtruth_rect.txt", 471)  # David: exactly frames 300-770
    assert read_sequence_groundtruth(tmp_path, "David").shape == (471, 4)
    write_rows(tmp_path / "David" / "groundtruth_rect.txt", 400)
    with pytest.raises(ValueError, match=r"400 rows.*frames 300-770"):
        read_sequence_groundtruth(tmp_path, "David")


# --- broken trees: errors name the file and the problem -----------------------------------------------------


def test_missing_frame_is_an_error(one_sequence):
    root, video = one_sequence
    (video / "img" / "0010.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"frame 10 \(.*0010\.jpg\) is missing"):
        load_sequence(root, "Synth01")


def test_ground_truth_shorter_than_frames_is_an_error(one_sequence):
    root, video = one_sequence
    gt = video / "groundtruth_rect.txt"
    gt.write_text("\n".join(gt.read_text().splitlines()[:-2]) + "\n")
    message = r"groundtruth_rect\.txt has fewer rows \(18\) than the sequence has frames \(20"
    with pytest.raises(ValueError, match=message):
        load_sequence(root, "Synth01")


def test_ground_truth_longer_than_frames_names_the_missing_frame(one_sequence):
    root, video = one_sequence
    (video / "img" / "0020.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"0020\.jpg\) is missing"):
        load_sequence(root, "Synth01")


def test_unparsable_row_names_file_and_line(one_sequence):
    root, video = one_sequence
    gt = video / "groundtruth_rect.txt"
    lines = gt.read_text().splitlines()
    lines[4] = "12,13,abc,20"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt, line 5: .*'12,13,abc,20'"):
        load_sequence(root, "Synth01")
    lines[4] = "12,13,20"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 5"):
        read_groundtruth(gt)


def test_empty_image_directory_is_an_error(one_sequence):
    root, video = one_sequence
    shutil.rmtree(video / "img")
    (video / "img").mkdir()
    with pytest.raises(FileNotFoundError, match=r"img holds no numbered frames"):
        load_sequence(root, "Synth01")


def test_missing_sequence_directory_and_empty_ground_truth(one_sequence):
    root, video = one_sequence
    with pytest.raises(FileNotFoundError, match=r"'Suv': directory .*Suv does not exist"):
        load_otb(root, ["Synth01", "Suv"])
    (video / "groundtruth_rect.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt is empty"):
        read_sequence_groundtruth(root, "Synth01")


def test_unreadable_frame_names_the_file(one_sequence):
    root, video = one_sequence
    (video / "img" / "0003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"0003\.jpg: cannot decode as an image"):  # its header, read on loading
        load_sequence(root, "Synth01")


def test_mixed_separators_parse(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,2,3,4\n5\t6\t7\t8\n9 10  11 12\n13, 14, 15, 16\nNaN,NaN,NaN,NaN\n")
    rows = read_groundtruth(path)
    np.testing.assert_array_equal(rows[:4], np.arange(1, 17).reshape(4, 4))
    assert np.isnan(rows[4]).all()


# --- the synthetic writer -----------------------------------------------------------------------------------


def test_synthetic_writer_is_fast_and_deterministic(tmp_path):
    started = time.perf_counter()
    names = write_synthetic_otb(tmp_path / "a")
    elapsed = time.perf_counter() - started
    assert names == [f"Synth{k:02d}" for k in range(1, 7)]
    assert elapsed < 2.0, f"default synthetic OTB took {elapsed:.2f}s"
    write_synthetic_otb(tmp_path / "b")
    write_synthetic_otb(tmp_path / "c", seed=1)
    for name in names:
        gt_a = (tmp_path / "a" / name / "groundtruth_rect.txt").read_bytes()
        assert gt_a == (tmp_path / "b" / name / "groundtruth_rect.txt").read_bytes()
        assert gt_a != (tmp_path / "c" / name / "groundtruth_rect.txt").read_bytes()
        assert (tmp_path / "a" / name / "img" / "0030.jpg").read_bytes() == \
            (tmp_path / "b" / name / "img" / "0030.jpg").read_bytes()


def test_synthetic_targets_are_trackable_and_have_the_attributes(tmp_path):
    height, width = 240, 320
    write_synthetic_otb(tmp_path, seed=0)
    sequences = load_otb(tmp_path)
    assert len(sequences) == 6
    touched_border = 0
    for seq in sequences:
        boxes = seq.boxes
        assert len(seq) == 60 and seq.image_size == (height, width)
        assert (boxes[:, 2:] > 0).all()
        assert (boxes[:, 0] >= 1).all() and (boxes[:, 0] + boxes[:, 2] - 1 <= width).all()
        assert (boxes[:, 1] >= 1).all() and (boxes[:, 1] + boxes[:, 3] - 1 <= height).all()
        centres = boxes[:, :2] + boxes[:, 2:] / 2
        assert np.abs(np.diff(centres, axis=0)).max() < 25, f"{seq.name} jumps"
        full_height = boxes[:, 3]  # the vertical extent is never cut by the side exits, so it shows the scale
        assert full_height.max() / full_height.min() > 1.2, f"{seq.name} has no scale change"
        touched_border += bool((boxes[:, 0] == 1).any() or (boxes[:, 0] + boxes[:, 2] - 1 == width).any())
        # The target stands out: its box differs from the same place in a frame where it is elsewhere.
        x, y, w, h = boxes[0].astype(int)
        far = int(np.argmax(np.abs(centres - centres[0]).sum(axis=1)))
        patch_here = seq.read_frame(0)[y - 1 : y - 1 + h, x - 1 : x - 1 + w].astype(float)
        patch_far = seq.read_frame(far)[y - 1 : y - 1 + h, x - 1 : x - 1 + w].astype(float)
        assert np.abs(patch_here - patch_far).mean() > 20
    assert touched_border >= len(sequences) - 1, "out-of-view spans should reach the border"


def test_jpeg_numbering_matches_otb(tmp_path):
    write_synthetic_otb(tmp_path, num_sequences=1, num_frames=12, image_size=(32, 48))
    files = sorted(p.name for p in (tmp_path / "Synth01" / "img").iterdir())
    assert files == [f"{k:04d}.jpg" for k in range(1, 13)]
    assert all(re.fullmatch(r"\d+,\d+,\d+,\d+", line)
               for line in (tmp_path / "Synth01" / "groundtruth_rect.txt").read_text().splitlines())
