"""IVOS-W's agent under Lightning's DDP: two CPU processes (gloo, `strategy="ddp"`) play their own synthetic videos
(Lightning's DistributedSampler splits them) into their own replay buffers, yet finish with identical policy and
target networks (all-reduced gradients, target copies at the same updates), count the episodes and decisions of
both processes, and write both buffers into the checkpoint, which a run with another number of processes refuses.

`strategy="ddp"` starts the other process by running this file again (Lightning's script launcher), so the test runs
it as a script in its own process group, as tests/test_ftmu_ddp.py does: a hang is cut off and the group killed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ddp_launch import launch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150  # a normal run takes about 20 s
VIDEOS, EPOCHS, DECISIONS = 4, 2, 4  # 2 videos per process and epoch; T = 5 rounds: 4 decisions per episode
SETTINGS = dict(hidden=16, head_hidden=16, batch_size=8, buffer_capacity=400, warmup_transitions=40,
                updates_per_episode=3, random_runs=6, epsilon_steps=50, lr=1e-3, target_update_probability=0.3,
                seed=0)


def worker(out_dir: Path) -> None:
    import lightning.pytorch as pl

    from test_ivosw_module import videos
    from zoo.ivosw.module import IVOSWAgentModule

    torch.set_num_threads(1)
    module = IVOSWAgentModule(**SETTINGS)
    module.videos = videos(0, count=VIDEOS)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=EPOCHS, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=out_dir)
    trainer.fit(module)
    trainer.save_checkpoint(out_dir / "last.ckpt")  # every process gathers its buffer; rank 0 writes
    torch.save({"state": module.state_dict(), "world_size": trainer.world_size,
                "replay": module.replay.state_dict(), "statistics": module.statistics.state_dict()},
               out_dir / f"rank{trainer.global_rank}.pt")
    trainer.strategy.barrier()  # both files exist before the launching process moves on


def run_two_processes(tmp_path: Path) -> Path:
    out_dir = tmp_path / "ranks"
    out_dir.mkdir(parents=True)
    launch(__file__, str(out_dir), timeout_s=TIMEOUT_S)
    return out_dir


def test_two_process_ddp_plays_own_videos_and_keeps_identical_networks(tmp_path):
    import lightning.pytorch as pl

    from test_ivosw_module import videos
    from zoo.ivosw.module import IVOSWAgentModule

    out_dir = run_two_processes(tmp_path)
    rank0, rank1 = (torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2

    # counters sum both processes: 4 videos x 2 epochs = 8 episodes; the updates are each process's own (all-reduced)
    episodes = VIDEOS * EPOCHS
    for rank in (rank0, rank1):
        assert int(rank["state"]["episodes"]) == episodes
        assert int(rank["state"]["environment_steps"]) == episodes * DECISIONS
        assert int(rank["state"]["updates"]) == episodes // 2 * SETTINGS["updates_per_episode"]
    # the same networks on both processes (target copies drawn by the update count alone), moved by training
    initial = IVOSWAgentModule(**SETTINGS).state_dict()
    for name, value in rank0["state"].items():
        torch.testing.assert_close(value, rank1["state"][name], rtol=0, atol=1e-6, msg=name)
    assert not torch.allclose(initial["policy.encoder.0.weight"], rank0["state"]["policy.encoder.0.weight"])
    assert rank0["statistics"] == rank1["statistics"]

    # each process kept its own buffer: the pre-fill plus its own 4 episodes, different transitions
    for rank in (rank0, rank1):
        assert rank["replay"]["size"] == SETTINGS["warmup_transitions"] + episodes // 2 * DECISIONS
    assert not torch.equal(rank0["replay"]["storage"]["state"], rank1["replay"]["storage"]["state"])
    # ... and the checkpoint holds both, in rank order
    saved = torch.load(out_dir / "last.ckpt", weights_only=True)["ivosw_agent"]["replay_per_rank"]
    assert len(saved) == 2
    for stored, rank in zip(saved, (rank0, rank1)):
        for key, value in rank["replay"]["storage"].items():
            assert torch.equal(stored["storage"][key], value), key

    # a single process cannot resume the two buffers
    module = IVOSWAgentModule(**SETTINGS)
    module.videos = videos(0, count=VIDEOS)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS + 1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="same number of devices"):
        trainer.fit(module, ckpt_path=out_dir / "last.ckpt")


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
