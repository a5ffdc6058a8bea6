"""DAVIS J / F / statistics against the golden official values and against a plain full-frame reference."""

from __future__ import annotations

import json
import math
import pickle

import cv2
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from datamodules.vos_io import read_label_png
from zoo.metrics.davis import (
    boundary_map,
    db_statistics,
    disk_footprint,
    evaluate_semi_supervised,
    evaluate_unsupervised,
    f_measure,
    jaccard,
)

GOLDEN_OBJECT_KEYS = {
    "J_mean": "J-Mean", "J_recall": "J-Recall", "J_decay": "J-Decay",
    "F_mean": "F-Mean", "F_recall": "F-Recall", "F_decay": "F-Decay", "JF_mean": "J&F-Mean",
}  # fmt: skip


# ------------------------------------------------------------------------------------ plain reference (full frame)


def reference_boundary(mask):
    mask = mask.astype(bool)
    right, below, diagonal = np.zeros_like(mask), np.zeros_like(mask), np.zeros_like(mask)
    right[:, :-1], below[:-1, :], diagonal[:-1, :-1] = mask[:, 1:], mask[1:, :], mask[1:, 1:]
    boundary = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    boundary[-1, :] = mask[-1, :] ^ right[-1, :]
    boundary[:, -1] = mask[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def reference_f(pred, gt, void=None, bound_th=0.008):
    keep = np.ones_like(gt, dtype=bool) if void is None else ~void
    radius = math.ceil(bound_th * math.hypot(*gt.shape))
    offsets = np.arange(-radius, radius + 1)
    disk = (offsets[None, :] ** 2 + offsets[:, None] ** 2 <= radius**2).astype(np.uint8)
    pred_b, gt_b = reference_boundary(pred & keep), reference_boundary(gt & keep)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), disk) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk) > 0
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision, recall = (pred_b & gt_dil).sum() / n_pred, (gt_b & pred_dil).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference_j(pred, gt, void=None):
    keep = np.ones_like(gt, dtype=bool) if void is None else ~void
    union = ((pred | gt) & keep).sum()
    return 1.0 if union == 0 else ((pred & gt) & keep).sum() / union


def random_masks(rng, shape, count):
    """Blobs of random size, often clipped by the border, sometimes empty or full-frame."""
    masks = []
    for n in range(count):
        mask = np.zeros(shape, dtype=np.uint8)
        if n % 7 == 3:
            masks.append(mask.astype(bool))
            continue
        if n % 11 == 5:
            masks.append(np.ones(shape, dtype=bool))
            continue
        for _ in range(rng.integers(1, 4)):
            centre = (int(rng.integers(-5, shape[1] + 5)), int(rng.integers(-5, shape[0] + 5)))
            axes = (int(rng.integers(1, shape[1] // 2 + 2)), int(rng.integers(1, shape[0] // 2 + 2)))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(mask.astype(bool) ^ (rng.random(shape) < 0.01))
    return np.stack(masks)


# ------------------------------------------------------------------------------------------- per-frame functions


def test_disk_footprint_is_the_skimage_disk():
    assert disk_footprint(2.0).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert disk_footprint(8.0).shape == (17, 17) and disk_footprint(8.0).sum() == 197


def test_boundary_compares_right_lower_and_lower_right_neighbours_only():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    assert np.argwhere(boundary_map(mask)).tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    # A full frame has no boundary: the image edge is never one.
    assert not boundary_map(np.ones((5, 6), dtype=bool)).any()
    edge = np.zeros((4, 4), dtype=bool)
    edge[:, -1] = True  # last column: compared with the pixel to its left only through that pixel's own test
    assert np.argwhere(boundary_map(edge)).tolist() == [[0, 2], [1, 2], [2, 2], [3, 2]]


def test_cropped_j_and_f_equal_the_full_frame_reference():
    rng = np.random.default_rng(0)
    for shape in ((96, 128), (61, 47), (3, 200)):
        pred, gt = random_masks(rng, shape, 40), random_masks(rng, shape, 40)
        void = random_masks(rng, shape, 40) & (rng.random((40, *shape)) < 0.3)
        for use_void in (None, void):
            expected_j = [reference_j(p, g, None if use_void is None else v) for p, g, v in zip(pred, gt, void)]
            expected_f = [reference_f(p, g, None if use_void is None else v) for p, g, v in zip(pred, gt, void)]
            assert np.array_equal(jaccard(pred, gt, use_void), expected_j)
            assert np.array_equal(f_measure(pred, gt, use_void), expected_f)
    # A wide tolerance (radius 8 at 96×128) exercises the windows around far-apart boundaries.
    pred, gt = random_masks(rng, (96, 128), 30), random_masks(rng, (96, 128), 30)
    expected_f = [reference_f(p, g, bound_th=0.05) for p, g in zip(pred, gt)]
    assert np.array_equal(f_measure(pred, gt, bound_th=0.05), expected_f)
    assert not np.array_equal(f_measure(pred, gt), expected_f)


def test_empty_mask_edge_cases():
    empty, blob = np.zeros((20, 30), dtype=bool), np.zeros((20, 30), dtype=bool)
    blob[5:10, 5:12] = True
    assert jaccard(empty, empty) == 1.0 and f_measure(empty, empty) == 1.0
    assert jaccard(blob, empty) == 0.0 and f_measure(blob, empty) == 0.0
    assert jaccard(empty, blob) == 0.0 and f_measure(empty, blob) == 0.0
    assert jaccard(blob, blob) == 1.0 and f_measure(blob, blob) == 1.0
    assert jaccard(blob, blob).shape == () and f_measure(blob[None], blob[None]).shape == (1,)
    with pytest.raises(ValueError, match="same|shape"):
        jaccard(blob, blob[:10])


def test_db_statistics_bins_share_edge_frames():
    mean, recall, decay = db_statistics(np.arange(10) / 10)
    # bin edges round(linspace(1, 10, 5) + 1e-10) - 1 = 0, 2, 5, 7, 9: first bin 0..2, last 7..9.
    assert mean == pytest.approx(0.45) and recall == pytest.approx(0.4) and decay == pytest.approx(0.1 - 0.8)
    assert db_statistics(np.array([0.3]))[2] == 0.0
    nan_mean = db_statistics(np.array([np.nan, 1.0, 0.0]))
    assert nan_mean[0] == 0.5 and nan_mean[1] == pytest.approx(1 / 3)


def test_db_statistics_keeps_the_official_uint8_wraparound():
    values = np.linspace(1, 0, 300)
    # 300 frames: the last bin edge 299 wraps to 43, so the last bin is empty and the official decay is NaN.
    assert math.isnan(db_statistics(values)[2])
    assert db_statistics(values, official_uint8=False)[2] == pytest.approx(values[:76].mean() - values[224:].mean())


# ------------------------------------------------------------------------------------------------- golden vectors


def load_sequence(folder, sequence):
    paths = sorted((folder / "gt" / sequence).glob("*.png"))
    gt = np.stack([read_label_png(path) for path in paths])
    pred = np.stack([read_label_png(folder / "pred" / sequence / path.name) for path in paths])
    return gt, pred


@pytest.mark.parametrize("key", ["davis", "davis480"])
def test_golden_per_frame_and_per_object(golden, key):
    official = json.loads((golden / "expected.json").read_text())[key]["davis2017_official"]
    from zoo.metrics.davis import DAVISSemiSupervised

    metric = DAVISSemiSupervised()
    for sequence, frames in official["per_frame"].items():
        gt, pred = load_sequence(golden / key, sequence)
        result = evaluate_semi_supervised(gt, pred, sequence)
        for row, object_id in enumerate(result.gt_ids):
            assert np.allclose(result.j[row], frames["J"][str(object_id)], rtol=0, atol=1e-12)
            assert np.allclose(result.f[row], frames["F"][str(object_id)], rtol=0, atol=1e-12)
        metric.update(pred, gt, sequence)
    results = metric.compute()
    for name, value in official["global"].items():
        if name in results:
            assert float(results[name]) == pytest.approx(value, abs=1e-9), name
    assert set(results["per_object"]) == set(official["per_object"])
    for name, expected in official["per_object"].items():
        for golden_key, key_here in GOLDEN_OBJECT_KEYS.items():
            assert results["per_object"][name][key_here] == pytest.approx(expected[golden_key], abs=1e-9)


# ------------------------------------------------------------------------------------------------ sequence tasks


def synthetic_video(seed=1, frames=6, shape=(40, 56)):
    rng = np.random.default_rng(seed)
    gt = np.zeros((frames, *shape), dtype=np.uint8)
    for object_id in (1, 2):
        gt[random_masks(rng, shape, frames) & (gt == 0)] = object_id
    gt[:, :3, :] = 255  # a void band
    return gt


def test_semi_supervised_rejects_ids_above_the_first_frame_objects():
    gt = synthetic_video()
    pred = np.where(gt == 255, 0, gt)
    pred[2, 10, 10] = 3
    with pytest.raises(ValueError, match=r"'clip', frame 2: predicted id 3 .* 2 objects"):
        evaluate_semi_supervised(gt, pred, "clip")
    pred[2, 10, 10] = 0
    pred[0, 10, 10] = pred[-1, 10, 10] = 7  # first and last frame are not evaluated
    assert evaluate_semi_supervised(gt, pred, "clip").object_names == ("clip_1", "clip_2")
    with pytest.raises(ValueError, match="needs 3"):
        evaluate_semi_supervised(gt[:2], pred[:2], "clip")


def test_semi_supervised_treats_void_as_background():
    gt = synthetic_video()
    pred = np.where(gt == 255, 1, gt)  # object 1 spread over the void band counts as error
    result = evaluate_semi_supervised(gt, pred)
    assert result.j[0].max() < 1.0 and np.all(result.j[1] == 1.0)


def reference_unsupervised(gt, pred):
    void = gt == 255
    objects, proposals = range(1, int(gt[0][gt[0] != 255].max()) + 1), range(1, max(int(pred.max()), 2) + 1)
    frames = list(zip(gt, pred, void))
    j = np.array([[[reference_j(p == b, g == a, v) for g, p, v in frames] for a in objects] for b in proposals])
    f = np.array([[[reference_f(p == b, g == a, v) for g, p, v in frames] for a in objects] for b in proposals])
    rows, columns = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    return j[rows, columns], f[rows, columns], [proposals[r] for r in rows], [objects[c] for c in columns]


def test_unsupervised_hungarian_matching_excludes_void():
    gt = synthetic_video()
    rng = np.random.default_rng(3)
    pred = np.zeros_like(gt)
    pred[gt == 2] = 1  # proposal 1 tracks object 2, proposal 4 object 1, proposal 2 is noise
    pred[gt == 1] = 4
    pred[random_masks(rng, gt.shape[1:], len(gt)) & (rng.random(gt.shape) < 0.2)] = 2
    pred[gt == 255] = 5  # proposals on void pixels do not count
    result = evaluate_unsupervised(gt, pred, "clip")
    j, f, pred_ids, gt_ids = reference_unsupervised(gt, pred)
    assert result.pred_ids == tuple(pred_ids) == (1, 4)  # official order: by predicted id
    assert result.gt_ids == tuple(gt_ids) == (2, 1)
    assert np.array_equal(result.j, j) and np.array_equal(result.f, f)
    assert result.j.shape == (2, len(gt))  # every frame is evaluated


def test_unsupervised_pads_missing_proposals_and_limits_them_to_20():
    gt = synthetic_video()
    pred = np.where(gt == 2, 1, 0).astype(np.uint8)
    result = evaluate_unsupervised(gt, pred, "clip")
    assert sorted(result.pred_ids) == [1, 2] and dict(zip(result.gt_ids, result.pred_ids))[2] == 1
    object_1 = list(result.gt_ids).index(1)
    present = (gt == 1).any(axis=(1, 2))
    assert np.all(result.j[object_1][present] == 0.0)  # matched with the empty padding proposal
    assert np.all(result.j[object_1][~present] == 1.0)
    pred[1, 5, 5] = 21
    with pytest.raises(ValueError, match="at most 20 proposals"):
        evaluate_unsupervised(gt, pred, "clip")


# ----------------------------------------------------------------------------------------------- metric mechanics


def test_metric_states_merge_like_a_ddp_gather_and_pickle():
    from zoo.metrics.davis import DAVISSemiSupervised, DAVISUnsupervised

    videos = {f"séq{n}": synthetic_video(seed=n) for n in range(3)}
    predictions = {name: np.roll(np.where(gt == 255, 0, gt), n, axis=2) for n, (name, gt) in enumerate(videos.items())}
    whole, first, second = DAVISSemiSupervised(), DAVISSemiSupervised(), DAVISSemiSupervised()
    for n, name in enumerate(videos):
        whole.update(predictions[name], videos[name], name)
        (first if n < 2 else second).update(predictions[name], videos[name], name)
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    assert merged["per_object"] == expected["per_object"] and "séq2_2" in merged["per_object"]
    assert float(merged["J&F-Mean"]) == pytest.approx(float(expected["J&F-Mean"]), abs=1e-15)
    restored = pickle.loads(pickle.dumps(whole))
    assert float(restored.compute()["F-Decay"]) == float(expected["F-Decay"])
    unsupervised = DAVISUnsupervised()
    unsupervised.update(predictions["séq0"], videos["séq0"], "séq0")
    assert set(unsupervised.compute()["per_object"]) == {"séq0_1", "séq0_2"}
