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


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for the module's tests (the machine is shared), restored afterwards; use it with
    `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
