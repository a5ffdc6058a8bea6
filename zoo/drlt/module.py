"""`DRLTModule`: Algorithm 1 of Zhang et al. (2017) as a LightningModule with manual optimisation.

One `training_step` = one pass of lines 4-12 over B episode slots (`zoo.drlt.env.TrackingEnvironment`): the next T
frames of each slot's episode (cached feature maps) go through the FC + LSTM once, N location sequences are sampled
around μ as one batched draw, rewarded with Eq. 2 (first phase) or Eq. 3 (second phase), the baseline b_t is the
mean reward of step t over the N episodes, and the loss is minus Eq. 7. Adam's learning rate decays exponentially
from `lr_start` to `lr_end` over `total_updates` updates.

Reading of the paper, stated where it is not explicit:
- The credit of action l_t is its own reward r_t (`credit="step"`), the quantity whose mean Algorithm 1 takes as
  b_t. l_t is never fed back into the network, so later rewards do not depend on it and adding them (`credit=
  "return"`, reward-to-go) only adds variance; both are offered.
- Eq. 2 is computed on the raw sample l_t (so that μ outside [0, 1] still gets a signal), Eq. 3 on l_t clamped to a
  valid box.
- The recurrent state of an episode is carried (detached) from one T-frame chunk to the next, as tracking does.
- T may grow during training (`chunk_schedule`, a curriculum: the paper's T = 10 cannot teach memory longer than 10
  frames, and its Fig. 4 shows longer T helping); each entry (T, fraction) applies from that fraction of the updates.
- The paper stops "when the reward stops increasing"; here whole validation sequences, disjoint from training, are
  tracked every epoch (`validation_tracks`), and the recipe keeps the best epoch by their success AUC and stops
  early when it no longer improves.

Lightning's `global_step` counts optimizer steps; the module keeps its own counters (`updates`, `env_steps`,
buffers, so they are checkpointed). The exploration noise of update k on rank r is drawn from a generator seeded
by (seed, r, k), so a resumed run draws the same noise as an uninterrupted one; the environment (episode slots and
its generator) and the carried recurrent states are saved per rank in the checkpoint as plain tensors
(`weights_only`-safe).
"""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from zoo.drlt.env import TrackingEnvironment, TrainingTrack, distance_reward, iou_reward
from zoo.drlt.model import DRLTTracker
from zoo.drlt.networks import GaussianLocationPolicy, as_location
from zoo.metrics.otb import SUCCESS_THRESHOLDS
from zoo.rl.policy_gradient import reinforce_loss, rewards_to_go

CHECKPOINT_KEY = "drlt_rollout_state"


class DRLTModule(pl.LightningModule):
    def __init__(
        self,
        tracker_config: dict,
        updates_per_epoch: int,
        total_updates: int,
        chunk_schedule: tuple[tuple[int, float], ...] = ((10, 0.0),),
        slots: int = 8,
        episode_length: int | None = 40,
        random_start: bool = True,
        reverse_prob: float = 0.5,
        flip_prob: float = 0.5,
        episodes: int = 5,
        sigma: float = 0.01,
        lr_start: float = 1e-5,
        lr_end: float = 1e-6,
        eq2_fraction: float = 0.6,
        credit: str = "step",
        gradient_clip: float = 0.0,
        seed: int = 0,
        tracks: list[TrainingTrack] | None = None,
        validation_tracks: list[TrainingTrack] | None = None,
    ):
        super().__init__()
        if credit not in {"step", "return"}:
            raise ValueError(f"credit must be 'step' or 'return', got {credit!r}")
        if not 0.0 <= eq2_fraction <= 1.0:
            raise ValueError(f"eq2_fraction must lie in [0, 1], got {eq2_fraction}")
        if episodes < 2:
            raise ValueError(f"episodes (N) must be ≥ 2 for the per-step baseline to mean anything, got {episodes}")
        chunk_schedule = tuple((int(steps), float(fraction)) for steps, fraction in chunk_schedule)
        if not chunk_schedule or chunk_schedule[0][1] != 0.0 or any(steps < 1 for steps, _ in chunk_schedule):
            raise ValueError(f"chunk_schedule must start at fraction 0 with T ≥ 1, got {chunk_schedule}")
        self.save_hyperparameters(ignore=["tracks", "validation_tracks"])
        self.hparams.chunk_schedule = [list(entry) for entry in chunk_schedule]
        self.automatic_optimization = False
        self.tracker = DRLTTracker(**tracker_config)
        self.tracks = tracks
        self.validation_tracks = validation_tracks or []
        self.environment: TrackingEnvironment | None = None
        self.policy = GaussianLocationPolicy(sigma, seed)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("env_steps", torch.zeros((), dtype=torch.long))
        # wall-clock seconds of training, carried through resumes (a resumed run reports its whole training time)
        self.register_buffer("train_seconds", torch.zeros((), dtype=torch.float64))
        self._step_started: float | None = None
        self._episode_state: dict | None = None
        self._validation_scores: list[tuple[float, float]] = []

    # -- schedule ------------------------------------------------------------------------------------------------
    @property
    def eq3_from_update(self) -> int:
        return round(self.hparams.eq2_fraction * self.hparams.total_updates)

    @property
    def reward_phase(self) -> str:
        """'eq2' for the first `eq2_fraction` of the updates (paper: 300 of 500 epochs), then 'eq3'."""
        return "eq2" if int(self.updates) < self.eq3_from_update else "eq3"

    @property
    def steps_per_chunk(self) -> int:
        """T of the current update: the last `chunk_schedule` entry whose fraction of the updates has been reached."""
        done = int(self.updates)
        steps = self.hparams.chunk_schedule[0][0]
        for entry_steps, fraction in self.hparams.chunk_schedule:
            if done >= round(fraction * self.hparams.total_updates):
                steps = entry_steps
        return int(steps)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.Adam(self.tracker.recurrent.parameters(), lr=hp.lr_start)
        gamma = (hp.lr_end / hp.lr_start) ** (1.0 / max(hp.total_updates - 1, 1))
        return [optimizer], [torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)]

    def setup(self, stage: str) -> None:
        """Each process draws its own episodes (its generator is seeded with its rank) from all training tracks."""
        if stage == "fit" and self.tracks is not None:
            hp = self.hparams
            self.environment = TrackingEnvironment(
                self.tracks, slots=hp.slots, episode_length=hp.episode_length, random_start=hp.random_start,
                reverse_prob=hp.reverse_prob, flip_prob=hp.flip_prob, seed=hp.seed * 1_000_003 + self.global_rank)

    def train_dataloader(self):
        # The environment lives in the module; the loader only paces the epoch (same count on every rank).
        return DataLoader(range(self.hparams.updates_per_epoch), batch_size=None)

    def val_dataloader(self):
        # Every rank tracks every validation sequence, so all ranks log the same score without a gather.
        return DataLoader(range(len(self.validation_tracks)), batch_size=None)

    # -- Algorithm 1 ---------------------------------------------------------------------------------------------
    def _noise_seed(self) -> int:
        return (self.hparams.seed * 1_000_003 + self.global_rank * 7_919 + int(self.updates)) % (2**63)

    def _state_for(self, chunk) -> dict:
        """The recurrent state each slot starts this chunk with: fresh where an episode starts, carried elsewhere."""
        fresh = self.tracker.recurrent.initial_state(chunk.first_features.to(self.device),
                                                     chunk.first_boxes.to(self.device))
        carried = self._episode_state
        if carried is None:
            return fresh
        restart = chunk.restart.to(self.device)
        state = {}
        for name, value in fresh.items():
            if name == "lstm":
                keep = (~restart).float().view(1, -1, 1)
                state[name] = tuple(tensor * keep for tensor in carried["lstm"])
            else:
                state[name] = torch.where(restart.view(-1, *([1] * (value.ndim - 1))), value, carried[name])
        return state

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._step_started is not None:
            self.train_seconds += time.perf_counter() - self._step_started

    def training_step(self, batch, batch_idx):
        if self.environment is None:
            raise RuntimeError("DRLTModule has no training tracks: pass tracks=[TrainingTrack(...), ...]")
        hp = self.hparams
        chunk = self.environment.next_chunk(self.steps_per_chunk)
        features, location_inputs = chunk.features.to(self.device), chunk.location_inputs.to(self.device)
        targets, valid = chunk.targets.to(self.device), chunk.valid.to(self.device)

        mu, state = self.tracker.recurrent(features, location_inputs, self._state_for(chunk))
        self._episode_state = _detached(state)

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
             "train/updates": float(self.updates), "train/env_steps": float(self.env_steps),
             "train/steps_per_chunk": float(features.shape[1])},
            on_step=True, on_epoch=False,
        )
        return losses["loss_actor"].detach()

    # -- validation: whole sequences, tracked as at test time --------------------------------------------------
    def validation_step(self, index, batch_idx):
        track = self.validation_tracks[int(index)]
        known = torch.nonzero(track.known).flatten()
        first = int(known[0])
        locations = self.tracker.predict_locations(track.features[first:], track.locations[first])
        truth = track.locations[first:]
        scored = torch.isfinite(truth).all(-1)
        scored[0] = False  # frame 1 is given
        ious = iou_reward(locations[scored], truth[scored])
        repeated = iou_reward(truth[:1].expand(int(scored.sum()), 4), truth[scored])
        self._validation_scores.append((_success_auc(ious), float(ious.mean()) if len(ious) else 0.0,
                                        _success_auc(repeated)))

    def on_validation_epoch_end(self) -> None:
        if not self._validation_scores:
            return
        scores = torch.tensor(self._validation_scores)
        self._validation_scores = []
        self.log_dict({"val/auc": scores[:, 0].mean(), "val/iou": scores[:, 1].mean(),
                       "val/auc_repeat_first_box": scores[:, 2].mean(), "val/updates": float(self.updates)},
                      sync_dist=False, rank_zero_only=False)

    # -- exact resume ---------------------------------------------------------------------------------------------
    def _local_rollout_state(self) -> dict:
        state = {"has_episode_state": torch.tensor(self._episode_state is not None)}
        if self.environment is not None:
            state["environment"] = self.environment.state_dict()
        if self._episode_state is not None:
            episode = dict(self._episode_state)
            hidden, cell = episode.pop("lstm")
            state["episode"] = {"hidden": hidden.cpu(), "cell": cell.cpu(),
                                **{name: value.cpu() for name, value in episode.items()}}
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
                "resume with the same --devices/--num-nodes (each process draws its own episodes)"
            )
        local = per_rank[self.global_rank]
        self.environment.load_state_dict(local["environment"])
        if bool(local["has_episode_state"]):
            episode = dict(local["episode"])
            self._episode_state = {"lstm": (episode.pop("hidden"), episode.pop("cell")), **episode}
        else:
            self._episode_state = None

    def on_fit_start(self) -> None:
        if self._episode_state is not None:
            self._episode_state = _to_device(self._episode_state, self.device)


def _success_auc(ious: torch.Tensor) -> float:
    """OTB success AUC of one sequence: the mean over the 21 thresholds of the share of frames with IoU > threshold."""
    thresholds = torch.as_tensor(SUCCESS_THRESHOLDS, dtype=ious.dtype)
    return float((ious[None, :] > thresholds[:, None]).float().mean()) if len(ious) else 0.0


def _detached(state: dict) -> dict:
    return {name: tuple(t.detach() for t in value) if name == "lstm" else value.detach()
            for name, value in state.items()}


def _to_device(state: dict, device) -> dict:
    return {name: tuple(t.to(device) for t in value) if name == "lstm" else value.to(device)
            for name, value in state.items()}
