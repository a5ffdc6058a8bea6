"""FTMU's actor-critic training under Lightning's DDP: two CPU processes (gloo, `strategy="ddp"`) roll out different
clips of the fake distractor videos (Lightning's DistributedSampler splits them), sample their own actions, yet
finish with identical actor and critic weights because the gradients of the summed losses are all-reduced.
(Gradients that are not all-reduced make the weight check fail; a different initial actor on one process does not,
since DDP broadcasts rank 0's parameters when it wraps the module.)

`strategy="ddp"` starts the other process by running this file again (Lightning's script launcher), so the test
runs it as a script in its own process group: a hang is cut off by the timeout and the whole group killed."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ddp_launch import launch

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150  # a normal run takes about 25 s
UPDATES = 4  # two epochs of two batches per process
VIDEOS, FRAMES, CLIP_LENGTH, CLIPS_PER_BATCH = 3, 8, 4, 3  # 3 x 4 = 12 clips: 6 per process, 2 batches of 3


def worker(out_dir: Path) -> None:
    """One DDP process: a tiny FTMUModule trained on the fake environment, recording its batches and final state."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    from ftmu_fakes import DistractorVideo, MeanColourStates, ScriptedCandidates
    from zoo.ftmu.env import FTMUConfig, Tracker
    from zoo.ftmu.module import ClipEnvironment, FTMUModule

    class RecordRank(Callback):
        def __init__(self):
            self.clips, self.epochs = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.clips.append(torch.tensor(batch))  # (clips, 2): (sequence, start) of each clip of the batch
            self.epochs.append(trainer.current_epoch)

        def on_train_end(self, trainer, pl_module):
            torch.save({"clips": torch.stack(self.clips), "epochs": torch.tensor(self.epochs),
                        "state": pl_module.state_dict(), "updates": int(pl_module.updates),
                        "environment_steps": int(pl_module.environment_steps),
                        "world_size": trainer.world_size},
                       out_dir / f"rank{trainer.global_rank}.pt")
            trainer.strategy.barrier()  # both files exist before the launching process moves on

    torch.set_num_threads(1)
    videos = [DistractorVideo(f"train{i}", seed=100 + i, num_frames=FRAMES) for i in range(VIDEOS)]
    environment = ClipEnvironment(videos, Tracker(FTMUConfig(redetection=False),
                                                  ScriptedCandidates({v.name: v for v in videos}),
                                                  MeanColourStates()), clip_length=CLIP_LENGTH)
    module = FTMUModule(state_dim=6, hidden=(16,), actor_lr=1e-2, critic_lr=1e-2, seed=0)
    module.environment = environment
    clips = environment.clips()
    assert len(clips) == VIDEOS * (FRAMES - CLIP_LENGTH)
    # Lightning replaces the shuffling sampler by a DistributedSampler (shuffled, seeded, set_epoch per epoch)
    loader = torch.utils.data.DataLoader(clips, batch_size=CLIPS_PER_BATCH, shuffle=True, collate_fn=list)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=2 * UPDATES, max_epochs=-1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[RecordRank()])
    trainer.fit(module, loader)


def run_two_processes(tmp_path: Path) -> Path:
    out_dir = tmp_path / "ranks"
    launch(__file__, str(out_dir), timeout_s=TIMEOUT_S)
    return out_dir


def test_two_process_ddp_trains_on_different_clips_with_identical_weights(tmp_path):
    from zoo.ftmu.module import FTMUModule

    out_dir = run_two_processes(tmp_path)
    rank0, rank1 = (torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2

    # both processes ran every update, on clips of their own: in each epoch the two halves are disjoint and
    # together they are every clip
    assert rank0["updates"] == rank1["updates"] == UPDATES
    assert len(rank0["clips"]) == len(rank1["clips"]) == UPDATES
    assert rank0["epochs"].tolist() == rank1["epochs"].tolist() == [0, 0, 1, 1]
    every_clip = {(s, t) for s in range(VIDEOS) for t in range(FRAMES - CLIP_LENGTH)}
    for epoch in (0, 1):
        seen = [{tuple(clip) for clip in rank["clips"][rank["epochs"] == epoch].reshape(-1, 2).tolist()}
                for rank in (rank0, rank1)]
        assert not seen[0] & seen[1], f"epoch {epoch}: both processes rolled out {sorted(seen[0] & seen[1])}"
        assert seen[0] | seen[1] == every_clip, epoch
    # every frame of every clip is one decision (the distractor is always a candidate); the counter sums the decisions
    # of both processes, on each
    assert rank0["environment_steps"] == rank1["environment_steps"] == 2 * UPDATES * CLIPS_PER_BATCH * CLIP_LENGTH

    # ... and the all-reduced gradients left them with the same actor and critic, which training moved
    initial = FTMUModule(state_dim=6, hidden=(16,), seed=0).state_dict()
    assert rank0["state"].keys() == rank1["state"].keys() == initial.keys()
    for name, value in rank0["state"].items():
        if name.startswith(("actor.", "critic.")):
            torch.testing.assert_close(value, rank1["state"][name], rtol=0, atol=1e-6, msg=name)
    for net in ("actor.", "critic."):
        moved = [name for name in initial if name.startswith(net) and initial[name].is_floating_point()
                 and not torch.allclose(initial[name], rank0["state"][name])]
        assert moved, f"training did not change the {net[:-1]}"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
