from pathlib import Path

import pytest

from zoo.paths import shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared (golden vectors, real benchmark samples); tests needing it skip where it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared is absent (set ZOO_SHARED to point at it)")
    return path


@pytest.fixture(scope="session")
def golden(shared) -> Path:
    return shared / "golden"


@pytest.fixture(scope="session")
def realdata(shared) -> Path:
    return shared / "realdata"


@pytest.fixture
def hub_offline(monkeypatch):
    """huggingface_hub offline, so `zoo.load(name)` reads the copy bundled in zoo/weights (the published-model tests)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for the module's tests (the machine is shared), restored afterwards; use it with
    `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def golden_label_pairs(golden):
    """`load(benchmark)` -> (the benchmark's section of golden/expected.json, {name: (pred, gt) instance id maps})
    for the golden "cvppp" / "kitti" folders, whose label PNGs lie in `pred/` and `gt/` under the same names."""
    import json

    from datamodules.instance_io import read_label_png

    def load(benchmark: str):
        expected = json.loads((golden / "expected.json").read_text())[benchmark]
        folder = golden / benchmark
        images = {name: (read_label_png(folder / "pred" / f"{name}.png"), read_label_png(folder / "gt" / f"{name}.png"))
                  for name in expected["per_image"]}
        return expected, images

    return load


@pytest.fixture
def file_system_sharing():
    """Spawned processes get their tensors through files: the default (file descriptors into /dev/shm) fails with
    "unable to resize file" in some containers."""
    import torch

    previous = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    yield
    torch.multiprocessing.set_sharing_strategy(previous)
