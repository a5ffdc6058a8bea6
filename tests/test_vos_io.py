"""Label I/O of `datamodules.vos_io` and frame I/O of `datamodules.image_io` on real DAVIS files and on crafted bad inputs."""

import numpy as np
import pytest
from PIL import Image

from datamodules.image_io import read_rgb
from datamodules.vos_io import (
    boxes_from_mask,
    davis_palette,
    read_label_png,
    read_scribbles,
    write_label_png,
    write_scribbles,
)


def test_palette_is_the_one_in_real_davis_annotations(realdata):
    path = realdata / "DAVIS" / "Annotations" / "480p" / "tennis" / "00000.png"
    with Image.open(path) as image:
        shipped = np.array(image.getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(davis_palette()[: len(shipped)], shipped)


def test_real_davis_masks_of_every_encoding(realdata):
    la_mask = read_label_png(realdata / "DAVIS2016" / "Annotations" / "480p" / "bear" / "00077.png")
    l_mask = read_label_png(realdata / "DAVIS2016" / "Annotations" / "480p" / "bear" / "00076.png")
    assert la_mask.dtype == np.uint8 and la_mask.shape == (480, 854)
    assert set(np.unique(la_mask)) == {0, 1} == set(np.unique(l_mask))
    # Consecutive frames of a slow bear overlap heavily; a misread channel would not.
    overlap = np.logical_and(la_mask, l_mask).sum() / np.logical_or(la_mask, l_mask).sum()
    assert overlap > 0.8
    palette_mask = read_label_png(realdata / "DAVIS" / "Annotations" / "480p" / "tennis" / "00000.png")
    assert set(np.unique(palette_mask)) == {0, 1, 2, 255}


def test_label_round_trip_through_palette_and_rgb(tmp_path):
    labels = np.random.default_rng(0).integers(0, 6, (20, 30)).astype(np.uint8)
    labels[0, :5] = 255
    write_label_png(tmp_path / "p.png", labels)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), labels)
    Image.fromarray(davis_palette()[labels]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "rgb.png"), labels)


def test_grey_label_images(tmp_path):
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "ids.png"), ids)
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(tmp_path / "binary.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "binary.png"), [[0, 1], [1, 0]])


def test_bad_label_images_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_label_png(tmp_path / "absent.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk.png"):
        read_label_png(tmp_path / "junk.png")
    Image.fromarray(np.full((4, 4, 3), (1, 2, 3), np.uint8)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="colour.png.*not in the DAVIS palette"):
        read_label_png(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="0..255"):
        write_label_png(tmp_path / "big.png", np.full((2, 2), 300))


def test_frames(realdata, tmp_path):
    frame = read_rgb(realdata / "DAVIS" / "JPEGImages" / "480p" / "bear" / "00000.jpg")
    assert frame.shape == (480, 854, 3) and frame.dtype == np.uint8
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    assert read_rgb(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]  # RGB, not OpenCV's BGR
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_rgb(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8junk")
    with pytest.raises(ValueError, match="bad.jpg"):
        read_rgb(tmp_path / "bad.jpg")


def test_boxes_are_pixel_edge_coordinates():
    labels = np.zeros((10, 12), np.uint8)
    labels[2:5, 3:9] = 1
    labels[9, 11] = 2
    boxes = boxes_from_mask(labels, [1, 2, 3])
    assert boxes[1].tolist() == [3, 2, 9, 5]
    assert boxes[2].tolist() == [11, 9, 12, 10]
    assert 3 not in boxes


def test_scribble_json(tmp_path, realdata):
    real = read_scribbles(realdata / "DAVIS" / "Scribbles" / "bear" / "001.json", sequence="bear", num_frames=82)
    strokes = [s for frame in real["scribbles"] for s in frame]
    assert strokes and all(0 <= x <= 1 and 0 <= y <= 1 for s in strokes for x, y in s["path"])
    write_scribbles(tmp_path / "s.json", {"sequence": "x", "scribbles": [[], []]})
    with pytest.raises(ValueError, match="s.json.*'x', not 'y'"):
        read_scribbles(tmp_path / "s.json", sequence="y")
    with pytest.raises(ValueError, match="s.json.*2 frames but the sequence has 3"):
        read_scribbles(tmp_path / "s.json", num_frames=3)
