"""Run a test file as a 2-process DDP script in its own process group: a hang fails the test and kills both ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def launch(script: str, *args: str, timeout_s: float) -> None:
    """`python script *args` with the repository and tests/ importable, one OpenMP thread per rank."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launched rank is in the same group
        output, _ = process.communicate()
        pytest.fail(f"the DDP run did not finish within {timeout_s} s (a hang):\n{output[-3000:]}")
    # the launching process's traceback, not the other's report that its peer went away
    assert process.returncode == 0, "\n".join(line for line in output.splitlines() if "[rank1]" not in line)[-5000:]
