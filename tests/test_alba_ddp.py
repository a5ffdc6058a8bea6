"""ALBA's training under Lightning's DDP: two CPU processes (gloo, `strategy="ddp"`), in both modes.

- warm-up: each process trains on its own half of four tiny episodes of different lengths (DistributedSampler); the
  `decisions` counter must be the sum of both halves' oracle decisions, on both processes;
- RL (credit "group", two rollouts per episode): every episode is the same video, so with the same weights the two
  processes can only sample different actions if their generators differ (the module seeds them with the rank).
In both: the networks end identical on both processes (gradients all-reduced) and moved by training, and `updates`
counts the optimiser steps.

`strategy="ddp"` starts the other process by running this file again (Lightning's script launcher), so the test
runs it as a script in its own process group: a hang is cut off by the timeout and the whole group killed. One
launch per mode: a second `Trainer` in the same script would launch the other process a second time."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ddp_launch import launch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150  # a normal launch takes about 15 s
# warm-up: four episodes of different lengths (so the two halves differ in decisions), one per batch: two
# optimiser steps per process in one epoch
WARMUP_EPISODES = [(2, 0), (3, 1), (4, 2), (3, 3)]  # (frames, seed) of `two_object_episode`
# RL: four copies of one episode: each process rolls out the same video at every step
RL_EPISODES = [(3, 5)] * 4
STEPS = 2
LR = 1e-2  # large enough that two steps visibly move the weights (the defaults are 1e-4 / 1e-5)


def episodes(mode: str):
    from test_alba_module import two_object_episode

    return [two_object_episode(frames=frames, seed=seed) for frames, seed in
            (WARMUP_EPISODES if mode == "warmup" else RL_EPISODES)]


def build_module(mode: str):
    from test_alba_module import TINY
    from zoo.alba.module import ALBAModule

    if mode == "warmup":
        module = ALBAModule(net=TINY, mode="warmup", lr=LR, seed=0)
    else:
        module = ALBAModule(net=TINY, mode="rl", credit="group", rollouts=2, lr=LR, seed=0)
    with torch.no_grad():  # accept most proposals, so the (trained) assignment network decides in RL too
        module.selection.head[-1].bias.copy_(torch.tensor([-1.0, 1.0]))
    return module


def worker(mode: str, out_dir: Path) -> None:
    """One DDP process: a tiny ALBAModule trained for STEPS steps, recording its batches, sampled actions and state."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    module = build_module(mode)
    sampled: list[list[tuple[str, int, int]]] = []  # one list of (kind, frame, action) per sampled rollout
    unwrapped_rollout = module.rollout

    def recording_rollout(episode, generator=None, **kwargs):
        run = unwrapped_rollout(episode, generator, **kwargs)
        if generator is not None:
            sampled.append([(d.kind, d.frame, d.action) for d in run.decisions])
        return run

    module.rollout = recording_rollout

    class RecordRank(Callback):
        def __init__(self):
            self.batches: list[list[str]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batches.append([f"{episode.name}:{len(episode)}" for episode in batch])

        def on_train_end(self, trainer, pl_module):
            torch.save({"state": pl_module.state_dict(), "updates": int(pl_module.updates),
                        "decisions": int(pl_module.decisions), "global_step": trainer.global_step,
                        "batches": self.batches, "sampled": sampled, "world_size": trainer.world_size},
                       out_dir / f"rank{trainer.global_rank}.pt")
            trainer.strategy.barrier()  # both files exist before the launching process moves on

    torch.set_num_threads(1)
    data = episodes(mode)
    for index, episode in enumerate(data):
        episode.name = f"episode{index}"
    # Lightning's DistributedSampler splits the episodes between the processes
    loader = torch.utils.data.DataLoader(data, batch_size=1, shuffle=False, collate_fn=list)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, max_epochs=-1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[RecordRank()])
    trainer.fit(module, loader)


def run_two_processes(mode: str, tmp_path: Path) -> tuple[dict, dict]:
    out_dir = tmp_path / f"ranks-{mode}"
    launch(__file__, mode, str(out_dir), timeout_s=TIMEOUT_S)
    ranks = tuple(torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    return ranks


def assert_same_trained_networks(mode: str, rank0: dict, rank1: dict) -> None:
    """Identical networks on both processes (all-reduced gradients), and the trained ones moved by training."""
    initial = build_module(mode).state_dict()
    assert rank0["state"].keys() == rank1["state"].keys() == initial.keys()
    for name, value in rank0["state"].items():
        if name.startswith(("selection.", "assignment.")):
            torch.testing.assert_close(value, rank1["state"][name], rtol=0, atol=1e-6, msg=name)
    trained = ("selection.", "assignment.") if mode == "warmup" else ("assignment.",)  # RL: assignment only
    for net in ("selection.", "assignment."):
        moved = [name for name in initial if name.startswith(net) and initial[name].is_floating_point()
                 and not torch.equal(initial[name], rank0["state"][name])]
        assert bool(moved) == (net in trained), f"{net[:-1]}: moved {moved[:3]}"


def assert_counted_steps(rank0: dict, rank1: dict) -> None:
    for rank in (rank0, rank1):
        assert len(rank["batches"]) == STEPS  # one optimiser step per batch (manual optimisation)
        assert rank["global_step"] == STEPS  # Lightning counts optimiser steps too
        assert rank["updates"] == STEPS


def test_warmup_ddp_sums_both_processes_decisions_and_keeps_identical_networks(tmp_path):
    from zoo.alba.module import teacher_forced

    rank0, rank1 = run_two_processes("warmup", tmp_path)
    assert_counted_steps(rank0, rank1)
    # each process trained on its own half of the episodes
    halves = [{name for batch in rank["batches"] for name in batch} for rank in (rank0, rank1)]
    assert not halves[0] & halves[1], rank0["batches"]
    assert halves[0] | halves[1] == {f"episode{i}:{frames}" for i, (frames, _) in enumerate(WARMUP_EPISODES)}

    # a warm-up decision is every proposal's selection plus every assignment the oracle makes: count them here
    config = build_module("warmup").config
    per_episode = []
    for episode in episodes("warmup"):
        data = teacher_forced(episode, config)
        per_episode.append(len(data["selection"]["targets"]) + len(data["assignment"]))
    taken = [sum(per_episode[int(name.split(":")[0].removeprefix("episode"))] for name in half) for half in halves]
    assert taken[0] != taken[1]  # a counter of one process's decisions (or twice them) would not pass
    assert rank0["decisions"] == rank1["decisions"] == sum(per_episode)

    assert_same_trained_networks("warmup", rank0, rank1)


def test_rl_ddp_ranks_sample_their_own_actions_sum_decisions_and_keep_identical_networks(tmp_path):
    rank0, rank1 = run_two_processes("rl", tmp_path)
    assert_counted_steps(rank0, rank1)
    rollouts = 2
    for rank in (rank0, rank1):
        assert len(rank["sampled"]) == STEPS * rollouts  # one episode per batch, two rollouts each

    # same video, same weights at the first step: only the generators' seeds can tell the ranks' actions apart
    first0, first1 = rank0["sampled"][:rollouts], rank1["sampled"][:rollouts]
    assert first0 != first1, f"both processes sampled the same actions: {first0}"
    # every rollout decision of both processes is counted, on both (taken counts selections and assignments)
    total = sum(len(run) for rank in (rank0, rank1) for run in rank["sampled"])
    assert rank0["decisions"] == rank1["decisions"] == total
    assert_same_trained_networks("rl", rank0, rank1)


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
