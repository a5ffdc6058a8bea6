"""The .npz array cache behind zoo.vision proposals and flow, and the pretrained-or-random weight loader."""

import urllib.error
import warnings

import numpy as np
import pytest
import torch

from zoo.vision import build_with_weights
from zoo.vision.cache import ArrayCache


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_and_hit_counting(tmp_path, compress):
    cache = ArrayCache(tmp_path, compress=compress)
    key = {"model": "m", "settings": {"threshold": 0.05}}
    assert cache.get("proposals", "bear", 3, key) is None
    arrays = {"boxes": np.arange(8, dtype=np.float32).reshape(2, 4), "masks": np.eye(3, dtype=bool)[None]}
    path = cache.put("proposals", "bear", 3, key, arrays)
    assert path.parent == tmp_path / "proposals" / "bear" and path.name.startswith("00003-")
    same_key_reordered = {"settings": {"threshold": 0.05}, "model": "m"}
    loaded = cache.get("proposals", "bear", 3, same_key_reordered)
    assert set(loaded) == {"boxes", "masks"}
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize(
    "other", [{"model": "m", "settings": {"threshold": 0.5}}, {"model": "m2", "settings": {"threshold": 0.05}}]
)
def test_changed_key_video_or_frame_misses(tmp_path, other):
    cache = ArrayCache(tmp_path)
    key = {"model": "m", "settings": {"threshold": 0.05}}
    cache.put("flow", "bear", "00001_to_00002", key, {"flow": np.zeros((2, 2, 2), np.float32)})
    assert cache.get("flow", "bear", "00001_to_00002", other) is None
    assert cache.get("flow", "bear", "00002_to_00001", key) is None
    assert cache.get("flow", "tennis", "00001_to_00002", key) is None
    assert cache.get("flow", "bear", "00001_to_00002", key) is not None


def test_entry_whose_stored_key_differs_is_a_miss(tmp_path):
    cache = ArrayCache(tmp_path)
    key = {"a": 1}
    path = cache.put("flow", "bear", 0, key, {"flow": np.ones(3, np.float32)})
    np.savez_compressed(path, __cache_key__=np.array('{"a":2}'), flow=np.ones(3, np.float32))
    assert cache.get("flow", "bear", 0, key) is None


def test_bad_names_keys_and_arrays_are_refused(tmp_path):
    cache = ArrayCache(tmp_path)
    with pytest.raises(ValueError, match="safe file name"):
        cache.put("flow", "../escape", 0, {}, {"flow": np.zeros(1)})
    with pytest.raises(TypeError, match="JSON"):
        cache.path("flow", "bear", 0, {"x": object()})
    with pytest.raises(TypeError, match="pickle"):
        cache.put("flow", "bear", 0, {}, {"flow": np.array([None, 1], dtype=object)})
    assert not any(tmp_path.rglob("*.npz"))


class _UnreachableWeights:
    url = "https://example.invalid/weights.pth"

    def __str__(self):
        return "Fake_Weights.V1"


def _linear(weights):
    if weights is not None:
        raise urllib.error.URLError("Name or service not known")
    return torch.nn.Linear(3, 2)


def test_unloadable_default_weights_fall_back_to_seeded_random_init_with_one_line_warning():
    with pytest.warns(UserWarning) as record:
        model, tag = build_with_weights(_linear, _UnreachableWeights(), "DEFAULT", seed=7)
    (warning,) = record
    message = str(warning.message)
    assert "\n" not in message and "curl -L https://example.invalid/weights.pth" in message
    assert tag == "random-init-seed7" and not model.training
    again, _ = build_with_weights(_linear, _UnreachableWeights(), None, seed=7)
    assert torch.equal(model.weight, again.weight)


def test_explicit_none_is_silent_and_a_weights_file_loads_strictly(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, tag = build_with_weights(_linear, _UnreachableWeights(), None)
    assert tag == "random-init-seed0"
    saved = torch.nn.Linear(3, 2)
    torch.save(saved.state_dict(), tmp_path / "linear.pth")
    model, tag = build_with_weights(_linear, _UnreachableWeights(), tmp_path / "linear.pth")
    assert tag.startswith("file:linear.pth:") and torch.equal(model.weight, saved.weight)
    torch.save({"weight": saved.weight}, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="bias"):
        build_with_weights(_linear, _UnreachableWeights(), tmp_path / "partial.pth")
    with pytest.raises(FileNotFoundError, match="DEFAULT"):
        build_with_weights(_linear, _UnreachableWeights(), tmp_path / "absent.pth")
