"""On-disk cache of per-frame arrays (proposals, optical flow): one `.npz` file per entry, never pickle.

An entry is addressed by a namespace (what produced it, e.g. ``"proposals"``), a video name, a frame name and a
*key*: a JSON-serialisable dict holding everything else that changes the result (model, whether pretrained weights
were loaded, every setting, a search region...). The key is hashed into the file name, so changing any setting
simply misses the cache instead of returning stale arrays, and the key itself is stored inside the file and compared
on load (a hash collision or a hand-edited file is treated as a miss).

Layout: ``<root>/<namespace>/<video>/<frame>-<16 hex digits of sha256(key)>.npz``. Writes go to a temporary file in
the same folder followed by an atomic rename, so concurrent readers never see a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

_KEY_FIELD = "__cache_key__"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def canonical_key(key: Mapping[str, Any]) -> str:
    """The JSON text a key is hashed from: sorted keys, no whitespace, so equal dicts give equal text."""
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"cache key must be JSON-serialisable with finite numbers, got {key!r}: {error}") from error


def _check_name(kind: str, name: str) -> str:
    name = str(name)
    if not _SAFE_NAME.match(name):
        raise ValueError(
            f"cache {kind} name {name!r} is not a safe file name; use letters, digits, '.', '_', '+' or '-' "
            "(no path separators, not starting with '.')"
        )
    return name


class ArrayCache:
    """A folder of `.npz` entries; ``get`` returns None on a miss, ``put`` stores a dict of numpy arrays.

    ``hits`` and ``misses`` count lookups, so callers and tests can see whether work was skipped. ``compress=False``
    suits arrays that deflate poorly (dense float flow: ~12% smaller compressed, several times slower to read).
    """

    def __init__(self, root: str | os.PathLike, compress: bool = True):
        self.root = Path(root)
        self.compress = compress
        self.hits = 0
        self.misses = 0

    def path(self, namespace: str, video: str, frame: str | int, key: Mapping[str, Any]) -> Path:
        digest = hashlib.sha256(canonical_key(key).encode()).hexdigest()[:16]
        frame_name = f"{frame:05d}" if isinstance(frame, int) else _check_name("frame", frame)
        return (
            self.root / _check_name("namespace", namespace) / _check_name("video", video)
            / f"{frame_name}-{digest}.npz"
        )

    def get(
        self, namespace: str, video: str, frame: str | int, key: Mapping[str, Any]
    ) -> dict[str, np.ndarray] | None:
        path = self.path(namespace, video, frame, key)
        if not path.is_file():
            self.misses += 1
            return None
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        if str(arrays.pop(_KEY_FIELD, "")) != canonical_key(key):
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def put(
        self, namespace: str, video: str, frame: str | int, key: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> Path:
        if _KEY_FIELD in arrays:
            raise ValueError(f"array name {_KEY_FIELD!r} is reserved by the cache")
        arrays = {name: np.asarray(array) for name, array in arrays.items()}
        for name, array in arrays.items():
            if array.dtype.hasobject:
                raise TypeError(f"cache array {name!r} has dtype object, which would need pickle; store numbers")
        path = self.path(namespace, video, frame, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(handle, "wb") as file:
                save = np.savez_compressed if self.compress else np.savez
                save(file, **{_KEY_FIELD: np.array(canonical_key(key))}, **arrays)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path
