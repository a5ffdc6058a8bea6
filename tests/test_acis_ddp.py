"""The ACIS recipe under Lightning's DDP: two CPU processes (gloo, `--strategy ddp`) run a tiny pipeline through every
stage; each process draws its own images, its rollouts end after their own number of leaves, yet every stage
finishes and leaves both processes with identical weights.

`--strategy ddp` starts the other process by running this file again (Lightning's script launcher), so the test
runs it as a script in its own process group: a hang is cut off by the timeout and the whole group killed."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from recipes import _acis_common, acis_cvppp
from recipes._acis_common import Schedule
from test_acis import TINY
from test_acis_resume import write_small

REPO = Path(__file__).resolve().parents[1]
STAGES = ("preproc", "cvae", "init", "train-AC")
TIMEOUT_S = 180  # a normal run takes about 20 s


def tiny_benchmark():
    # one image per process and update, sequence lengths longer than any plant's leaf count: the AC rollouts last as
    # long as the process's plant has leaves, and an init rollout stops at once when its start state covers every leaf
    # (a fifth of the time), else runs all 8 steps (the untrained actor covers next to nothing); an actor update on
    # every other update
    schedule = Schedule(preproc_epochs=1, cvae_epochs=1, init_epochs=2, train_epochs=2, batch_size=1,
                        critic_warmup=1, critic_iter=2, init_rollout=8, init_rollout_fraction=0.0,
                        curriculum=[[0, 40]], bl_curriculum=[[0, 40]],
                        ac_epoch_schedule=[[0, {"lr": 1e-3}], [1, {"lr": 1e-4, "beta_kl": 1e-3}]])
    return dataclasses.replace(acis_cvppp.CVPPP, write_synthetic=write_small, embedded_config=TINY,
                               embedded_schedule=schedule)


def worker(out_dir: Path, argv: list[str]) -> None:
    """One DDP process: the recipe, with every stage's Trainer recording this rank's batches and final weights."""

    class RecordRank(Callback):
        def __init__(self, path: Path):
            self.path, self.batches = path, []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches.append(batch["image"].sum().item())

        def on_train_end(self, trainer, pl_module):
            self.path.mkdir(parents=True, exist_ok=True)
            torch.save({"batches": torch.tensor(self.batches), "state": pl_module.state_dict(),
                        "lrs": [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]},
                       self.path / f"rank{trainer.global_rank}.pt")
            trainer.strategy.barrier()  # both files exist before the launching process moves on

    stage_trainer = _acis_common.stage_trainer

    def recording_trainer(args, run, stage, *rest, **options):
        trainer = stage_trainer(args, run, stage, *rest, **options)
        trainer.callbacks.append(RecordRank(out_dir / stage))
        return trainer

    _acis_common.stage_trainer = recording_trainer
    _acis_common.main(tiny_benchmark(), argv)


def run_two_processes(tmp_path: Path) -> Path:
    out_dir = tmp_path / "ranks"
    argv = ["--run-dir", str(tmp_path / "run"), "--checkpoint-every", "0", "--ablation", "AC",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, __file__, str(out_dir), *argv], cwd=REPO, env=env,
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launched rank and the data workers are in the same group
        output, _ = process.communicate()
        pytest.fail(f"the DDP run did not finish within {TIMEOUT_S} s (a hang):\n{output[-3000:]}")
    # the launching process's traceback, not the other's report that its peer went away
    assert process.returncode == 0, "\n".join(line for line in output.splitlines() if "[rank1]" not in line)[-5000:]
    return out_dir


def test_every_stage_finishes_under_two_process_ddp_with_identical_weights(tmp_path):
    out_dir = run_two_processes(tmp_path)
    ranks = {stage: [torch.load(out_dir / stage / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
             for stage in STAGES}
    for stage, (rank0, rank1) in ranks.items():
        assert len(rank0["batches"]) == len(rank1["batches"]) > 1, stage
        assert not torch.equal(rank0["batches"], rank1["batches"]), stage  # each process its own images
        assert rank0["state"].keys() == rank1["state"].keys()
        for name, value in rank0["state"].items():
            torch.testing.assert_close(value, rank1["state"][name], rtol=0, atol=1e-6, msg=f"{stage}: {name}")
    # the epoch schedule of the last stage reached both processes' optimizers: the actor's lr, the critic's (2x)
    assert [rank["lrs"] for rank in ranks["train-AC"]] == [pytest.approx([1e-4, 2e-4])] * 2
    assert (tmp_path / "run" / "metrics.json").is_file()  # `eval` ran, in the launching process


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2:])
