"""Bad-input catalogue of the dataset readers (issue 10): each test is named after the input it breaks, and the input
must end in an error naming the file and the fix, or in the behaviour the benchmark's own toolkit defines."""

import json
import os
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from datamodules.davis import DAVIS
from datamodules.fbms import FBMS
from datamodules.image_io import read_rgb, write_rgb
from datamodules.otb import load_sequence, read_groundtruth
from datamodules.segtrack import SegTrackV2
from datamodules.synthetic_otb import write_synthetic_otb
from datamodules.synthetic_vos import write_davis2016, write_davis2017, write_fbms, write_segtrack_v2, write_youtube_vos
from datamodules.vos_io import read_label_png, write_label_png
from datamodules.youtube_vos import YouTubeVOS

SMALL = {"num_frames": 6, "height": 32, "width": 48}


def truncate(path):
    # Cut inside the compressed scan, past the headers, as an interrupted download or copy does.
    data = path.read_bytes()
    scan = data.rfind(b"\xff\xda")
    path.write_bytes(data[: scan + (len(data) - scan) // 2])


@pytest.fixture
def otb(tmp_path):
    write_synthetic_otb(tmp_path, num_sequences=1, num_frames=8, image_size=(48, 64), seed=1)
    return tmp_path, tmp_path / "Synth01"


def set_row(video, line_number, row):
    gt = video / "groundtruth_rect.txt"
    lines = gt.read_text().splitlines()
    lines[line_number - 1] = row
    gt.write_text("\n".join(lines) + "\n")


# -- truncated JPEG frames: OpenCV decodes the missing rows as grey and libjpeg only prints to stderr ---------------


def test_truncated_jpeg_is_refused_by_read_rgb(tmp_path):
    path = write_rgb(tmp_path / "frame.jpg", np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))
    truncate(path)
    with pytest.raises(ValueError, match=r"frame\.jpg: the JPEG file is truncated.*re-download"):
        read_rgb(path)


def test_jpeg_with_bytes_after_its_end_marker_still_reads(tmp_path):
    # Some cameras append data after the end-of-image marker; the image itself is complete.
    path = write_rgb(tmp_path / "frame.jpg", np.full((16, 16, 3), 90, np.uint8))
    path.write_bytes(path.read_bytes() + b"trailing metadata")
    assert read_rgb(path).shape == (16, 16, 3)


def _otb_frame(tmp_path):
    write_synthetic_otb(tmp_path, num_sequences=1, num_frames=4, image_size=(32, 48))
    sequence = load_sequence(tmp_path, "Synth01")
    return sequence.frame_paths[2], lambda: sequence.read_frame(2)


def _davis_frame(tmp_path):
    root = write_davis2017(tmp_path, num_train=1, num_val=0, **SMALL)
    sequence = DAVIS(root, split="train")[0]
    return sequence.frame_paths[2], lambda: sequence.frame(2)


def _youtube_vos_frame(tmp_path):
    root = write_youtube_vos(tmp_path, "train", num_videos=1, **SMALL)
    video = YouTubeVOS(root, "train")[0]
    return video.frame_paths[2], lambda: video.frame(2)


def _segtrack_frame(tmp_path):
    root = write_segtrack_v2(tmp_path, num_sequences=1, **SMALL)
    png = SegTrackV2(root)[0].frame_paths[2]
    write_rgb(png.with_suffix(".jpg"), read_rgb(png))  # SegTrack v2 ships JPEG frames for some sequences
    png.unlink()
    sequence = SegTrackV2(root)[0]
    return sequence.frame_paths[2], lambda: sequence.frame(2)


def _fbms_frame(tmp_path):
    root = write_fbms(tmp_path, num_sequences=1, **SMALL)
    shot = FBMS(root)[0]
    return shot.frame_paths[2], lambda: shot.frame(2)


@pytest.mark.parametrize("reader", [_otb_frame, _davis_frame, _youtube_vos_frame, _segtrack_frame, _fbms_frame],
                         ids=["otb", "davis", "youtube_vos", "segtrack", "fbms"])
def test_truncated_jpeg_frame_is_refused_by_every_video_reader(reader, tmp_path):
    path, read = reader(tmp_path)
    assert path.suffix == ".jpg"
    truncate(path)
    with pytest.raises(ValueError, match=rf"{path.name}: the JPEG file is truncated"):
        read()


# -- OTB boxes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ["NaN,NaN,NaN,NaN", "10,10,0,20", "10,10,20,-5"], ids=["nan", "zero_w", "negative_h"])
def test_otb_invalid_first_box_is_refused(otb, row):
    root, video = otb
    set_row(video, 1, row)
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt, line 1: .*first box.*initialis"):
        load_sequence(root, "Synth01")


def test_otb_infinite_coordinate_is_refused(otb):
    root, video = otb
    set_row(video, 5, "10,inf,20,20")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt, line 5: .*not finite.*NaN"):
        load_sequence(root, "Synth01")


def test_otb_box_far_outside_the_image_is_refused(otb):
    root, video = otb
    set_row(video, 5, "500,400,20,20")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt, line 5: .*outside the 64x48 image"):
        load_sequence(root, "Synth01")


def test_otb_frames_of_different_sizes_are_refused(otb):
    root, video = otb
    write_rgb(video / "img" / "0005.jpg", np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"0005\.jpg is 40x40 .*0001\.jpg is 64x48"):
        load_sequence(root, "Synth01")


def test_otb_invalid_later_rows_are_kept_as_toolkit_failures(otb):
    # The toolkit scores such rows as failures, so they are data, not errors (seeds.md 0.3).
    root, video = otb
    set_row(video, 3, "NaN,NaN,NaN,NaN")
    set_row(video, 4, "10,10,0,0")
    boxes = load_sequence(root, "Synth01").boxes
    assert np.isnan(boxes[2]).all() and boxes[3].tolist() == [10, 10, 0, 0]


def test_otb_infinite_result_row_names_the_line(tmp_path):
    (tmp_path / "Seq.txt").write_text("1,2,3,4\n1,2,-inf,4\n")
    with pytest.raises(ValueError, match=r"Seq\.txt, line 2: .*not finite"):
        read_groundtruth(tmp_path / "Seq.txt")


# -- DAVIS -----------------------------------------------------------------------------------------------------


@pytest.fixture
def davis(tmp_path):
    # synth-00 has one object, synth-01 two (with a void ring).
    return write_davis2017(tmp_path / "DAVIS", num_train=2, num_val=0, **SMALL)


def test_davis_stray_id_in_first_frame_is_refused(davis):
    path = davis / "Annotations" / "480p" / "synth-01" / "00000.png"
    labels = read_label_png(path)
    labels[0, 0] = 200
    write_label_png(path, labels)
    sequence = DAVIS(davis, split="train")["synth-01"]
    with pytest.raises(ValueError, match=r"synth-01/00000\.png: .*id 200.*renumber"):
        sequence.object_ids


def test_davis_antialiased_binary_mask_is_refused(davis):
    path = davis / "Annotations" / "480p" / "synth-00" / "00000.png"
    binary = (read_label_png(path) > 0).astype(np.uint8) * 255
    Image.fromarray(cv2.GaussianBlur(binary, (7, 7), 2)).save(path)
    sequence = DAVIS(davis, split="train")["synth-00"]
    with pytest.raises(ValueError, match=r"synth-00/00000\.png: .*anti-aliased.*threshold"):
        sequence.first_frame_mask()


def test_davis_non_numeric_frame_name_is_refused(davis):
    frames = davis / "JPEGImages" / "480p" / "synth-00"
    shutil.copy(frames / "00003.jpg", frames / "00003 (copy).jpg")
    with pytest.raises(ValueError, match=r"00003 \(copy\)\.jpg.*not a frame number"):
        DAVIS(davis, split="train")


def test_davis_missing_annotation_inside_annotated_frames_is_refused(davis):
    (davis / "Annotations" / "480p" / "synth-00" / "00003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"synth-00/00003\.png is missing"):
        DAVIS(davis, split="train")


def test_davis_annotation_that_is_not_a_readable_file_is_refused(davis):
    path = davis / "Annotations" / "480p" / "synth-00" / "00003.png"
    path.unlink()
    os.symlink(path.parent / "nowhere.png", path)
    with pytest.raises(FileNotFoundError, match=r"synth-00/00003\.png is not a readable file"):
        DAVIS(davis, split="train")


def test_davis2016_missing_last_annotation_is_refused(tmp_path):
    root = write_davis2016(tmp_path / "DAVIS2016", num_train=1, num_val=0, **SMALL)
    (root / "Annotations" / "480p" / "synth-00" / "00005.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"synth-00/00005\.png is missing.*every frame"):
        DAVIS(root, year=2016, split="train")


# -- SegTrack v2 and YouTube-VOS -------------------------------------------------------------------------------


def test_segtrack_missing_ground_truth_folder_is_refused(tmp_path):
    root = write_segtrack_v2(tmp_path, num_sequences=1, **SMALL)
    shutil.rmtree(root / "GroundTruth" / "synthseq00")
    with pytest.raises(FileNotFoundError, match=r"GroundTruth/synthseq00 does not exist"):
        SegTrackV2(root)


@pytest.fixture
def youtube_vos(tmp_path):
    root = write_youtube_vos(tmp_path / "ytvos", "train", num_videos=1, **SMALL)
    return root, root / "train" / "meta.json"


def edit_meta(meta_path, change):
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))


def test_youtube_vos_meta_with_a_list_of_videos_is_refused(youtube_vos):
    root, meta_path = youtube_vos
    edit_meta(meta_path, lambda meta: meta.update(videos=list(meta["videos"])))
    with pytest.raises(ValueError, match=r"meta\.json: .*\"videos\" must map"):
        YouTubeVOS(root, "train")


def test_youtube_vos_meta_with_a_non_integer_object_id_is_refused(youtube_vos):
    root, meta_path = youtube_vos
    edit_meta(meta_path, lambda meta: [v["objects"].update(one=v["objects"].pop("1")) for v in meta["videos"].values()])
    with pytest.raises(ValueError, match=r"meta\.json: .*object id 'one'.*integer"):
        YouTubeVOS(root, "train")


def test_youtube_vos_meta_with_an_object_as_a_list_is_refused(youtube_vos):
    root, meta_path = youtube_vos
    edit_meta(meta_path, lambda meta: [v["objects"].update({"1": ["00000"]}) for v in meta["videos"].values()])
    with pytest.raises(ValueError, match=r"meta\.json: .*object '1'.*\"frames\""):
        YouTubeVOS(root, "train")


def test_youtube_vos_missing_train_annotation_is_refused(youtube_vos):
    root, _ = youtube_vos
    # 00015 is no object's first frame: the objects' lists in meta.json still say it is annotated.
    annotation = sorted((root / "train" / "Annotations").glob("*/00015.png"))[0]
    annotation.unlink()
    with pytest.raises(FileNotFoundError, match=r"00015\.png.*listed in .*meta\.json"):
        YouTubeVOS(root, "train")


def test_youtube_vos_non_numeric_frame_name_is_refused(youtube_vos):
    root, _ = youtube_vos
    frame = sorted((root / "train" / "JPEGImages").glob("*/00010.jpg"))[0]
    shutil.copy(frame, frame.with_name("00010 (copy).jpg"))
    with pytest.raises(ValueError, match=r"00010 \(copy\)\.jpg.*not a frame number"):
        YouTubeVOS(root, "train")
