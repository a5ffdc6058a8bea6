"""`DRLTModule`: Algorithm 1 of Zhang et al. (2017) as a LightningModule with manual optimisation.

One `training_step` = one pass of lines 4-12 for every training video this rank owns: the next T frames of each
video (precomputed features) go through the FC + LSTM once, N location sequences are sampled around μ as one
batched draw, rewarded with Eq. 2 (first phase) or Eq. 3 (second phase), the baseline b_t is the mean reward of step
t over the N episodes, and the loss is minus Eq. 7. Adam's learning rate decays exponentially from `lr_start` to
`lr_end` over `total_updates` updates.

Reading of the paper, stated where it is not explicit:
- The credit of action l_t is its own reward r_t (`credit="step"`), the quantity whose mean Algorithm 1 takes as
  b_t. l_t is never fed back into the network, so later rewards do not depend on it and adding them (`credit=
  "return"`, reward-to-go) only adds variance; both are offered.
- Eq. 2 is computed on the raw sample l_t (so that μ outside [0, 1] still gets a signal), Eq. 3 on l_t clamped to a
  valid box.
- The LSTM state of a video is carried (detached) from one T-frame chunk to the next, as tracking does; a video
  restarts with s_1 = its first ground-truth box after its last training frame.

Lightning's `global_step` counts optimizer steps; the module keeps its own counters (`updates`, `env_steps`,
buffers, so they are checkpointed). The exploration noise of update k on rank r is drawn from a generator seeded
by (seed, r, k), so a resumed run draws the same noise as an uninterrupted one; the environment cursors and the
carried LSTM states are saved per rank in the checkpoint as plain tensors (`weights_only`-safe).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from zoo.drlt.env import TrackingEnvironment, TrainingVideo, distance_reward, iou_reward
from zoo.drlt.model import DRLTTracker
from zoo.drlt.networks import GaussianLocationPolicy, as_location
from zoo.rl.policy_gradient import reinforce_loss, rewards_to_go

CHECKPOINT_KEY = "drlt_rollout_state"


class DRLTModule(pl.LightningModule):
    def __init__(
        self,
        tracker_config: dict,
        updates_per_epoch: int,
        total_updates: int,
        steps_per_chunk: int = 10,
        episodes: int = 5,
        sigma: float = 0.01,
        lr_start: float = 1e-5,
        lr_end: float = 1e-6,
        eq2_fraction: float = 0.6,
        credit: str = "step",
        gradient_clip: float = 0.0,
        seed: int = 0,
        videos: list[TrainingVideo] | None = None,
    ):
        super().__init__()
        if credit not in {"step", "return"}:
            raise ValueError(f"credit must be 'step' or 'return', got {credit!r}")
        if not 0.0 <= eq2_fraction <= 1.0:
            raise ValueError(f"eq2_fraction must lie in [0, 1], got {eq2_fraction}")
        if episodes < 2:
            raise ValueError(f"episodes (N) must be ≥ 2 for the per-step baseline to mean anything, got {episodes}")
        self.save_hyperparameters(ignore=["videos"])
        self.automatic_optimization = False
        self.tracker = DRLTTracker(**tracker_config)
        self.videos = videos
        self.environment: TrackingEnvironment | None = None
        self.policy = GaussianLocationPolicy(sigma, seed)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.long))
        self._recurrent_state: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- schedule ------------------------------------------------------------------------------------------------
    @property
    def eq3_from_update(self) -> int:
        return round(self.hparams.eq2_fraction * self.hparams.total_updates)

    @property
    def reward_phase(self) -> str:
        """'eq2' for the first `eq2_fraction` of the updates (paper: 300 of 500 epochs), then 'eq3'."""
        return "eq2" if int(self.updates) < self.eq3_from_update else "eq3"

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.tracker.recurrent.parameters(), lr=hp.lr_start)
        gamma = (hp.lr_end / hp.lr_start) ** (1.0 / max(hp.total_updates - 1, 1))
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)]

    def setup(self, stage: str) -> None:
        """Each process owns every world_size-th video (all of them when there are fewer videos than processes:
        the ranks then differ only in their exploration noise)."""
        if stage == "fit" and self.videos is not None:
            rank, world = self.global_rank, self.trainer.world_size
            own = self.videos[rank::world] if len(self.videos) >= world else self.videos
            self.environment = TrackingEnvironment(own, steps_per_chunk=self.hparams.steps_per_chunk)

    def train_dataloader(self):
        # The environment lives in the module; the loader only paces the epoch (same count on every rank).
        return DataLoader(range(self.hparams.updates_per_epoch), batch_size=None)

    # -- Algorithm 1 ---------------------------------------------------------------------------------------------
    def _noise_seed(self) -> int:
        return (self.hparams.seed * 1_000_003 + self.global_rank * 7_919 + int(self.updates)) % (2**63)

    def _carried_state(self, restart: torch.Tensor):
        if self._recurrent_state is None:
            return None
        keep = (~restart).to(self.device, torch.float32).view(1, -1, 1)
        hidden, cell = self._recurrent_state
        return hidden * keep, cell * keep

    def training_step(self, batch, batch_idx):
        if self.environment is None:
            raise RuntimeError("DRLTModule has no training videos: pass videos=[TrainingVideo(...), ...]")
        hp = self.hparams
        chunk = self.environment.next_chunk()
        features, location_inputs = chunk.features.to(self.device), chunk.location_inputs.to(self.device)
        targets, valid = chunk.targets.to(self.device), chunk.valid.to(self.device)

        mu, (hidden, cell) = self.tracker.recurrent(features, location_inputs, self._carried_state(chunk.restart))
        self._recurrent_state = (hidden.detach(), cell.detach())

        self.policy.generator.manual_seed(self._noise_seed())
        actions = self.policy.sample(mu, hp.episodes)  # (N, B, T, 4), one batched draw for all episodes
        phase = self.reward_phase
        with torch.no_grad():
            rewards = distance_reward(actions, targets) if phase == "eq2" else iou_reward(as_location(actions), targets)
            credits = rewards if hp.credit == "step" else rewards_to_go(rewards, valid)
        losses = reinforce_loss(self.policy.log_prob(mu, actions), credits, valid)

        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        optimizer.zero_grad()
        self.manual_backward(losses["loss_actor"])
        if hp.gradient_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=hp.gradient_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        if int(self.updates) < hp.total_updates - 1:
            scheduler.step()
        self.updates += 1
        self.env_steps += int(valid.sum())

        with torch.no_grad():
            count = valid.sum().clamp(min=1)
            mean_reward = (rewards * valid).sum() / (count * hp.episodes)
            mean_iou = (iou_reward(as_location(mu), targets) * valid).sum() / count
        self.log_dict(
            {"train/reward": mean_reward, "train/iou_mu": mean_iou, "train/loss_actor": losses["loss_actor"].detach()},
            on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=int(count),
        )
        self.log_dict(
            {"train/reward_phase": 2.0 if phase == "eq3" else 1.0, "train/lr": optimizer.param_groups[0]["lr"],
             "train/updates": float(self.updates), "train/env_steps": float(self.env_steps)},
            on_step=True, on_epoch=False,
        )
        return losses["loss_actor"].detach()

    # -- exact resume ---------------------------------------------------------------------------------------------
    def _local_rollout_state(self) -> dict[str, torch.Tensor]:
        state = {"has_recurrent_state": torch.tensor(self._recurrent_state is not None)}
        if self.environment is not None:
            state["cursors"] = self.environment.state_dict()["cursors"]
        if self._recurrent_state is not None:
            state["hidden"], state["cell"] = (tensor.cpu() for tensor in self._recurrent_state)
        return state

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        local = self._local_rollout_state()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(per_rank, local)  # every rank runs this hook; rank 0 writes
        else:
            per_rank = [local]
        checkpoint[CHECKPOINT_KEY] = {"per_rank": per_rank}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None or self.environment is None:
            return  # loading weights for inference, or an old checkpoint: nothing to resume
        per_rank = saved["per_rank"]
        if len(per_rank) != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint was written by {len(per_rank)} process(es) but this run has {self.trainer.world_size}: "
                "resume with the same --devices/--num-nodes (each process owns its own videos)"
            )
        local = per_rank[self.global_rank]
        self.environment.load_state_dict({"cursors": local["cursors"]})
        if bool(local["has_recurrent_state"]):
            self._recurrent_state = (local["hidden"], local["cell"])
        else:
            self._recurrent_state = None

    def on_fit_start(self) -> None:
        if self._recurrent_state is not None:
            self._recurrent_state = tuple(tensor.to(self.device) for tensor in self._recurrent_state)
