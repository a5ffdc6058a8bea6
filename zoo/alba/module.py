"""ALBA training (Gowda, Eustratiadis et al., BMVC 2020, Sec. 3.2) in one LightningModule with manual optimisation:
the supervised warm-up of both networks on the greedy oracle's targets, then REINFORCE on the video reward.

Input format (`Episode`, `Frame`): one video (or clip) per episode; per frame the proposals already in processing
order (`zoo.alba.env.confidence_order`): masks (N, H, W) bool, appearance features (N, F), optional boxes (N, 4)
(x0, y0, x1, y1, x1 / y1 exclusive; taken from the masks when absent), the RGB image (H, W, 3) uint8 (may be None
when the networks take no RGB), the flow (H, W, 2) as estimated (the module standardises it per frame,
`zoo.alba.networks.standardise_flow`) and the ground-truth label map (H, W) (0 background, 255 void; only needed for
training). The module crops the network inputs itself (`selection_inputs` / `assignment_inputs` at `net.size`), so
tests run on tiny frames and crops; a batch is a list of episodes (a DataLoader with `collate_fn=list`).

``mode="warmup"`` (Sec. 3.2 "Supervised Pre-Training"): the greedy oracle (`greedy_oracle`) is run on each episode
and its actions are replayed through `step` / `end_frame`, so every proposal's assignment input shows the slots the
oracle has built so far (teacher forcing). Losses, summed:
- selection: cross-entropy on the oracle's `select` targets, class weights (reject, accept) = (1, 4) as in the
  authors' `supervised/train.py` (seeds.md §3; the paper says only "log-loss"): accepting is the rarer class among
  Mask R-CNN's low-threshold proposals;
- assignment: cross-entropy over the K + 1 logits (slots, then "new") on the oracle's `assign` targets, unavailable
  slots masked by the network (probability 0); proposals whose target is `IGNORE` (rejected by the oracle) are not
  fed to the assignment network at all (the loss keeps ``ignore_index=IGNORE`` as a guard).
Adam, lr 1e-4 (Sec. 3.2). `assignment_loss="pairwise"` trains the Table 1 row "A" instead (Sec. 4.1: a network that
"takes in two proposals and predicts whether they belong to the same object"): the same per-slot scores, each read
on its own by a sigmoid and trained by binary cross-entropy (`pairwise_loss`), decided by `pairwise_decision` (the
most confident slot above 0.5, else new); no softmax relates the slots. Run it with `rollout(assign="pairwise")`.

``mode="rl"`` (Sec. 3.2 "Training with Reinforcement Learning", vanilla policy gradient): each episode is rolled out
with the current policy, proposals in confidence order; the selection decision of a frame's proposals is sampled
from its softmax, and every accepted proposal's assignment is sampled from the masked softmax over the slots in use
and "new", the grouping state moving on after each decision (`step`), frame by frame (`end_frame`). Sampling uses a
generator seeded by (seed, updates, rank), so a resumed run takes the same actions as one that never stopped. The
rewards are r_t = `frame_scores` (J&F per frame under the video's Hungarian matching), each decision is credited with
the return G_t of its frame (`decision_returns`, gamma 0.99), normalised over the episode's trained decisions, and
the loss is −Σ_d log π(a_d)·Â_d summed over an episode's decisions of the trained policy, averaged over the batch's
episodes. Adam, lr 1e-5 (the authors' code; the paper gives no RL rate). Consequences of the per-frame credit: all
decisions of a frame share one credit; even constant rewards credit earlier frames more (G_t sums more terms), as
the paper's discounted return does; a one-frame episode normalises to zero credits and teaches nothing, so RL
episodes should span several frames. The reward needs the ground truth's first frame to hold an object
(`frame_scores` raises otherwise): the data side must skip such clips.

Credit (`credit`, `rollouts`):
- "episode" (default, the paper and the authors' code): the frame returns normalised over the episode's decisions, as
  above, one rollout per episode;
- "group" (this port's, not the paper's): each episode is rolled out `rollouts` >= 2 times and a decision of frame t
  is credited with its rollout's G_t against the mean and std of the other rollouts' G_t (`group_credits`). Why:
  per-episode normalisation gives earlier frames positive credit whatever was done there. On the videos of
  `tests/test_alba_learning.py`, with warm-up labels that mark the exact proposal "reject" (`selection_rule=
  "accepted"`), "episode" drove every accept probability to 1 without improving while "group" learned to reject
  the wrong proposal in 10-20 updates; with the default labels both learned.

Which decisions are trained (`rl_policies`):
- "assignment" (default, the paper: "then train the assignment network with reinforcement learning"); the
  selection network is frozen (requires_grad False) and only samples;
- "selection" (the authors' released code, whose RL trains only the selection network);
- "both": both networks, the credits normalised over all decisions of the episode.
The log-probabilities are recomputed after the rollout from the stored inputs, in one batched pass per network with
gradients (the rollout itself runs without gradients); the networks have no dropout or batch-norm, so this is the
same distribution the actions were sampled from.

Evaluation: `act(episode)` is the arg-max policy (accept iff the accept logit is larger; the largest allowed
assignment logit) and returns the (T, H, W) uint8 label maps, ids 1..K (at most K = 20).

Counters and resume: `updates` (optimiser steps) and `decisions` (selection + assignment decisions of every process
so far) are buffers, so they are in the checkpoint; a checkpoint of one mode refuses to resume in the other
(`on_load_checkpoint`). To start RL from a warm-up run, build an RL module and call `load_networks` with the
warm-up checkpoint (network weights only; counters and optimiser restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from zoo.alba.env import (
    GAMMA, IGNORE, REJECT, GroupingState, decision_returns, end_frame, frame_scores, greedy_oracle,
    group_credits, overlap_assignment, rank_assignment, step,
)
from zoo.alba.networks import (
    ACCEPT_LOGIT, REJECT_LOGIT, ALBANetConfig, AssignmentNetwork, SelectionNetwork, assignment_inputs,
    selection_inputs, standardise_flow,
)

MODES = ("warmup", "rl")
SELECT_RULES = ("network", "all")
ASSIGN_RULES = ("network", "rank", "overlap", "pairwise")
ASSIGNMENT_LOSSES = ("relational", "pairwise")
RL_POLICIES = ("assignment", "selection", "both")
CREDITS = ("episode", "group")
SELECT_WEIGHTS = (1.0, 4.0)  # (reject, accept): the authors' `supervised/train.py`
DEFAULT_LR = {"warmup": 1e-4, "rl": 1e-5}


# -- input format ----------------------------------------------------------------------------------------------------


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """`datamodules.vos_io.mask_box` as ints; the whole frame for an empty mask."""
    from datamodules.vos_io import mask_box as tight_box

    box = tight_box(mask)
    if box is None:
        return 0, 0, mask.shape[1], mask.shape[0]
    return tuple(int(value) for value in box)


@dataclass
class Frame:
    """One frame of an episode: proposals in processing order (masks (N, H, W) bool, features (N, F)), image
    (H, W, 3) uint8 or None, flow (H, W, 2), ground truth (H, W) or None, boxes (N, 4) or None (from the masks)."""

    masks: np.ndarray
    features: np.ndarray
    flow: np.ndarray
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def __post_init__(self):
        self.masks = np.asarray(self.masks, dtype=bool)
        height, width = np.asarray(self.flow).shape[:2]
        self.masks = self.masks.reshape(-1, height, width)
        features = np.asarray(self.features, dtype=np.float32)
        self.features = features.reshape(len(self.masks), features.shape[-1] if features.ndim == 2 else -1)
        if self.boxes is None:
            self.boxes = np.array([mask_box(m) for m in self.masks], dtype=np.float64).reshape(-1, 4)
        if len(self.boxes) != len(self.masks):
            raise ValueError(f"{len(self.boxes)} boxes for {len(self.masks)} proposals")

    @property
    def shape(self) -> tuple[int, int]:
        return self.masks.shape[1:]

    @property
    def standardised_flow(self) -> np.ndarray:
        """`standardise_flow(self.flow)`, computed once (warm-up epochs and RL rollouts revisit frames)."""
        if getattr(self, "_standardised_flow", None) is None:
            self._standardised_flow = standardise_flow(self.flow)
        return self._standardised_flow

    def selection_crops(self, config: ALBANetConfig) -> torch.Tensor:
        """(N, C, S, S) selection inputs of every proposal, computed once per network input configuration: they
        depend only on the frame, never on the grouping state."""
        key = (config.size, config.context, config.rgb)
        cached = getattr(self, "_selection_crops", None)
        if cached is None or cached[0] != key:
            flow = self.standardised_flow
            crops = [selection_inputs(self.image, flow, m, b, config) for m, b in zip(self.masks, self.boxes)]
            stacked = torch.stack(crops) if crops else torch.zeros(0, config.base_channels, config.size, config.size)
            self._selection_crops = cached = (key, stacked)
        return cached[1]


@dataclass
class Episode:
    frames: list[Frame]
    name: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, int]:
        return self.frames.shape if hasattr(self.frames, "shape") else self.frames[0].shape

    def ground_truth(self) -> np.ndarray:
        if hasattr(self.frames, "ground_truth"):  # lazy frames (`zoo.alba.inputs.VideoFrames`): labels only
            return self.frames.ground_truth()
        if any(frame.labels is None for frame in self.frames):
            raise ValueError(f"episode {self.name!r}: every frame needs its ground-truth label map for training")
        return np.stack([np.asarray(frame.labels) for frame in self.frames])


# -- decisions -------------------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """One decision of a rollout, with the inputs to recompute its log-probability.

    kind: "selection" (action REJECT_LOGIT / ACCEPT_LOGIT) or "assignment" (action = logit index 0..K).
    inputs: selection: {"inputs", "features"}; assignment: {"base", "used" (slot indices in use), "slots" (the used
    slots' (n, 2, S, S) uint8 masks), "new_allowed", "features"}. Empty when not stored (the policy is not trained).
    """

    kind: str
    frame: int
    action: int
    inputs: dict = field(default_factory=dict)


@dataclass
class Rollout:
    labels: np.ndarray  # (T, H, W) uint8
    decisions: list[Decision]


def _compact(inputs: dict) -> dict:
    used = inputs["available"].nonzero(as_tuple=True)[0]
    return {"base": inputs["base"], "used": used, "slots": inputs["slots"][used].to(torch.uint8),
            "new_allowed": inputs["new_allowed"].clone()}


def _expand(compact: list[dict], max_objects: int) -> dict[str, torch.Tensor]:
    """Stack compact assignment inputs back into the network's (B, ...) arguments."""
    base = torch.stack([c["base"] for c in compact])
    slots = base.new_zeros(len(compact), max_objects, 2, *base.shape[-2:])
    available = torch.zeros(len(compact), max_objects, dtype=torch.bool)
    for row, c in enumerate(compact):
        slots[row, c["used"]] = c["slots"].to(base.dtype)
        available[row, c["used"]] = True
    return {"base": base, "slots": slots, "available": available,
            "new_allowed": torch.stack([torch.as_tensor(c["new_allowed"]) for c in compact]).bool(),
            "features": torch.stack([torch.as_tensor(c["features"]) for c in compact])}


def pairwise_decision(logits: torch.Tensor, threshold: float = 0.0) -> int:
    """The simple assignment network A of Sec. 4.1 ("takes in two proposals and predicts whether they belong to the
    same object"): each slot's logit read on its own as "same object" (sigmoid > 0.5, i.e. logit > 0), the most
    confident such slot taken, else a new object (the best slot when none is free). (K + 1,) masked logits."""
    slots, new = logits[:-1], logits[-1]
    lowest = torch.finfo(logits.dtype).min
    best = int(slots.argmax())
    if slots[best] > lowest and (slots[best] > threshold or new == lowest):
        return best
    return len(slots)  # "new"


def pairwise_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every (proposal, slot in use) pair: 1 for the oracle's slot, 0 for the others (a
    proposal the oracle sends to a new object is 0 for every slot); the "new" logit is not trained."""
    slots = logits[:, :-1]
    available = slots > torch.finfo(slots.dtype).min
    same = F.one_hot(targets.clamp(max=slots.shape[1]), slots.shape[1] + 1)[:, :-1].to(slots.dtype)
    if not available.any():
        return slots.sum() * 0.0
    return F.binary_cross_entropy_with_logits(slots[available], same[available])


def reinforce_loss(log_probs: torch.Tensor, credits: torch.Tensor) -> torch.Tensor:
    """−Σ_d log π(a_d)·Â_d over one episode's decisions (credits are not differentiated)."""
    if log_probs.shape != credits.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and credits {tuple(credits.shape)} must match")
    return -(log_probs * credits.detach().to(log_probs.dtype)).sum()


def teacher_forced(episode: Episode, config: ALBANetConfig, selection_rule: str = "overlap") -> dict:
    """The warm-up inputs and targets of one episode: the oracle's actions replayed through `step` / `end_frame`.

    Returns {"selection": {"inputs" (P, C, S, S), "features" (P, F), "targets" (P,) long (1 = accept)},
    "assignment": list of compact assignment inputs (one per proposal the oracle assigns, state before its
    decision), "assign_targets" (A,) long, "oracle": the `OracleResult`}; P counts every proposal, A those with a
    target other than IGNORE.
    """
    oracle = greedy_oracle([frame.masks for frame in episode.frames], episode.ground_truth(), config.max_objects,
                           selection_rule=selection_rule)
    state = GroupingState.start(*episode.shape, config.max_objects)
    sel_inputs, sel_features, sel_targets, assign, assign_targets = [], [], [], [], []
    for t, frame in enumerate(episode.frames):
        flow = frame.standardised_flow
        crops = frame.selection_crops(config)
        for i, mask in enumerate(frame.masks):
            sel_inputs.append(crops[i])
            sel_features.append(torch.from_numpy(frame.features[i]))
            sel_targets.append(int(oracle.select[t][i]))
            target = int(oracle.assign[t][i])
            if target != IGNORE:
                compact = _compact(assignment_inputs(frame.image, flow, mask, frame.boxes[i], state, config))
                compact["features"] = torch.from_numpy(frame.features[i])
                assign.append(compact)
                assign_targets.append(target)
            step(state, mask, int(oracle.actions[t][i]))
        end_frame(state)
    count = len(sel_inputs)
    size, channels = config.size, config.base_channels
    return {
        "selection": {
            "inputs": torch.stack(sel_inputs) if count else torch.zeros(0, channels, size, size),
            "features": torch.stack(sel_features) if count else torch.zeros(0, config.feature_dim),
            "targets": torch.tensor(sel_targets, dtype=torch.long),
        },
        "assignment": assign,
        "assign_targets": torch.tensor(assign_targets, dtype=torch.long),
        "oracle": oracle,
    }


# -- the module ------------------------------------------------------------------------------------------------------


class GroupingPolicy:
    """The grouping policy over an episode, shared by `ALBAModule` (training) and `zoo.alba.model.ALBASegmenter`
    (inference): needs `config` (ALBANetConfig), `selection`, `assignment` and `device`."""

    # -- networks on stored inputs -------------------------------------------------------------------------------

    def selection_logits(self, inputs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.selection(inputs.to(self.device), features.to(self.device))

    def assignment_logits(self, compact: list[dict]) -> torch.Tensor:
        batch = {key: value.to(self.device) for key, value in _expand(compact, self.config.max_objects).items()}
        logits = self.assignment(batch["base"], batch["slots"], batch["features"], batch["available"],
                                 batch["new_allowed"])
        allowed = torch.cat([batch["available"], batch["new_allowed"][:, None]], dim=1)
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)  # also when `assignment` is replaced

    # -- rollouts ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def rollout(self, episode: Episode, generator: torch.Generator | None = None, store: tuple[str, ...] = (),
                select: str = "network", assign: str = "network") -> Rollout:
        """Run the grouping process over an episode: sampled actions with `generator`, arg-max without. `store`
        names the kinds of decisions whose inputs are kept (to recompute their log-probabilities).

        `select` / `assign` give the baselines of Table 1: select "all" accepts every proposal (vanilla); assign
        "rank" gives each accepted proposal the id of its rank in the frame (`rank_assignment`), "overlap" the
        object its previous-frame mask overlaps most (`overlap_assignment`). Scripted decisions are not recorded.
        """
        if select not in SELECT_RULES or assign not in ASSIGN_RULES:
            raise ValueError(f"select must be one of {SELECT_RULES} and assign one of {ASSIGN_RULES}, "
                             f"got {select!r}, {assign!r}")
        config = self.config
        state = GroupingState.start(*episode.shape, config.max_objects)
        labels, decisions = [], []
        for t, frame in enumerate(episode.frames):
            flow = frame.standardised_flow
            count = len(frame.masks)
            accepted = 0
            if count and select == "all":
                accept = torch.ones(count, dtype=torch.bool)
                features = torch.from_numpy(frame.features)
            elif count:
                crops = frame.selection_crops(config)
                features = torch.from_numpy(frame.features)
                logits = self.selection_logits(crops, features).float().cpu()
                if generator is None:
                    accept = logits[:, ACCEPT_LOGIT] > logits[:, REJECT_LOGIT]
                else:
                    accept = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1) == ACCEPT_LOGIT
            for i in range(count):
                chosen = ACCEPT_LOGIT if accept[i] else REJECT_LOGIT
                if select == "network":
                    stored = {"inputs": crops[i], "features": features[i]} if "selection" in store else {}
                    decisions.append(Decision("selection", t, chosen, stored))
                if chosen == REJECT_LOGIT:
                    step(state, frame.masks[i], REJECT)
                    continue
                accepted += 1
                if assign in ("rank", "overlap"):
                    scripted = (rank_assignment(state, accepted - 1) if assign == "rank"
                                else overlap_assignment(state, frame.masks[i]))
                    step(state, frame.masks[i], scripted)
                    continue
                compact = _compact(assignment_inputs(frame.image, flow, frame.masks[i], frame.boxes[i], state, config))
                compact["features"] = features[i]
                logits = self.assignment_logits([compact]).float().cpu()[0]
                if assign == "pairwise":
                    action = pairwise_decision(logits)
                elif generator is None:
                    action = int(logits.argmax())
                else:
                    action = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
                decisions.append(Decision("assignment", t, action, compact if "assignment" in store else {}))
                step(state, frame.masks[i], action)
            labels.append(end_frame(state))
        return Rollout(np.stack(labels) if labels else np.zeros((0, *episode.shape), np.uint8), decisions)

    def act(self, episode: Episode) -> np.ndarray:
        """The arg-max policy's (T, H, W) uint8 label maps of a video (ids 1..K, 0 background)."""
        return self.rollout(episode).labels

    def log_probs(self, decisions: list[Decision]) -> torch.Tensor:
        """log π(a_d) of stored decisions, recomputed with gradients, in the order given."""
        out = torch.zeros(len(decisions), device=self.device)
        for kind in ("selection", "assignment"):
            rows = [d for d, decision in enumerate(decisions) if decision.kind == kind]
            if not rows:
                continue
            chosen = [decisions[d] for d in rows]
            if kind == "selection":
                logits = self.selection_logits(torch.stack([c.inputs["inputs"] for c in chosen]),
                                               torch.stack([c.inputs["features"] for c in chosen]))
            else:
                logits = self.assignment_logits([c.inputs for c in chosen])
            actions = torch.tensor([c.action for c in chosen], device=self.device)
            picked = F.log_softmax(logits.float(), dim=-1).gather(1, actions[:, None]).squeeze(1)
            out = out.index_put((torch.tensor(rows, device=self.device),), picked)
        return out



class ALBAModule(GroupingPolicy, pl.LightningModule):
    def __init__(
        self,
        net: dict | None = None,
        mode: str = "warmup",
        rl_policies: str = "assignment",
        lr: float | None = None,
        select_weights: tuple[float, float] = SELECT_WEIGHTS,
        selection_rule: str = "overlap",
        gamma: float = GAMMA,
        seed: int = 0,
        credit: str = "episode",
        rollouts: int = 1,
        assignment_loss: str = "relational",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if assignment_loss not in ASSIGNMENT_LOSSES:
            raise ValueError(f"assignment_loss must be one of {ASSIGNMENT_LOSSES}, got {assignment_loss!r}")
        if credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got {credit!r}")
        if rollouts < 1 or (credit == "group" and rollouts < 2):
            raise ValueError(f"rollouts must be >= 1, and >= 2 with credit='group' (got {rollouts})")
        if rl_policies not in RL_POLICIES:
            raise ValueError(f"rl_policies must be one of {RL_POLICIES}, got {rl_policies!r}")
        net = dict(net.to_dict() if isinstance(net, ALBANetConfig) else (net or {}))
        self.save_hyperparameters({"net": net, "mode": mode, "rl_policies": rl_policies,
                                   "lr": DEFAULT_LR[mode] if lr is None else float(lr),
                                   "select_weights": tuple(float(w) for w in select_weights),
                                   "selection_rule": selection_rule, "gamma": float(gamma), "seed": int(seed),
                                   "credit": credit, "rollouts": int(rollouts),
                                   # recorded only when not the default, so earlier runs' checkpoints still resume
                                   **({"assignment_loss": assignment_loss} if assignment_loss != "relational" else {})})
        self.automatic_optimization = False
        self.config = ALBANetConfig(**net)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.selection = SelectionNetwork(self.config)
            self.assignment = AssignmentNetwork(self.config)
        if mode == "rl":  # the policy not trained only samples (and DDP sees no unused parameter)
            for name in self.frozen_policies:
                getattr(self, name).requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("decisions", torch.zeros((), dtype=torch.long))

    @property
    def trained_policies(self) -> tuple[str, ...]:
        if self.hparams.mode == "warmup" or self.hparams.rl_policies == "both":
            return ("selection", "assignment")
        return (self.hparams.rl_policies,)

    @property
    def frozen_policies(self) -> tuple[str, ...]:
        return tuple(name for name in ("selection", "assignment") if name not in self.trained_policies)

    # -- training ------------------------------------------------------------------------------------------------

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {}).get("mode", self.hparams.mode)
        if saved != self.hparams.mode:
            raise ValueError(f"the checkpoint was trained in mode '{saved}', not '{self.hparams.mode}': resume it "
                             f"with --mode {saved}, or start a '{self.hparams.mode}' run from its weights with "
                             f"`load_networks` in another run directory")

    def load_networks(self, checkpoint) -> None:
        """Copy the selection / assignment weights of a checkpoint (a path or a loaded dict) into this module."""
        if not isinstance(checkpoint, dict):
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = checkpoint.get("state_dict", checkpoint)
        weights = {k: v for k, v in state.items() if k.startswith(("selection.", "assignment."))}
        missing = self.load_state_dict(weights, strict=False).missing_keys
        missing = [k for k in missing if k.startswith(("selection.", "assignment."))]
        if missing:
            raise ValueError(f"the checkpoint lacks network weights: {missing[:3]}...")

    def _zero_loss(self) -> torch.Tensor:
        return 0.0 * sum(p.sum() for p in self.parameters() if p.requires_grad)

    def _teacher_forced(self, episode: Episode) -> dict:
        """`teacher_forced` once per episode object and input configuration: the oracle's targets and the crops do
        not change between epochs (no augmentation), so later epochs only run the networks."""
        key = (tuple(sorted(self.config.to_dict().items())), self.hparams.selection_rule)
        cached = getattr(episode, "_teacher_forced", None)
        if cached is None or cached[0] != key:
            cached = (key, teacher_forced(episode, self.config, self.hparams.selection_rule))
            episode._teacher_forced = cached
        return cached[1]

    def warmup_loss(self, episodes: list[Episode]) -> tuple[torch.Tensor, dict, int]:
        data = [self._teacher_forced(e) for e in episodes]
        inputs = torch.cat([d["selection"]["inputs"] for d in data])
        features = torch.cat([d["selection"]["features"] for d in data])
        targets = torch.cat([d["selection"]["targets"] for d in data]).to(self.device)
        compact = [c for d in data for c in d["assignment"]]
        assign_targets = torch.cat([d["assign_targets"] for d in data]).to(self.device)
        logged, loss = {}, self._zero_loss()
        if len(targets):
            weights = torch.tensor(self.hparams.select_weights, device=self.device)
            logits = self.selection_logits(inputs, features).float()
            select_loss = F.cross_entropy(logits, targets, weight=weights)
            loss = loss + select_loss
            logged["train/loss_selection"] = select_loss.detach()
            logged["train/selection_accuracy"] = (logits.argmax(-1) == targets).float().mean()
        if compact:
            logits = self.assignment_logits(compact).float()
            if self.hparams.get("assignment_loss", "relational") == "pairwise":
                assign_loss = pairwise_loss(logits, assign_targets)
            else:
                assign_loss = F.cross_entropy(logits, assign_targets, ignore_index=IGNORE)
            loss = loss + assign_loss
            logged["train/loss_assignment"] = assign_loss.detach()
            if self.hparams.get("assignment_loss", "relational") == "pairwise":
                chosen = torch.tensor([pairwise_decision(row) for row in logits.detach().cpu()], device=self.device)
            else:
                chosen = logits.argmax(-1)
            logged["train/assignment_accuracy"] = (chosen == assign_targets).float().mean()
        return loss, logged, len(targets) + len(compact)

    def rl_loss(self, episodes: list[Episode], generator: torch.Generator) -> tuple[torch.Tensor, dict, int]:
        trained, rollouts = self.trained_policies, int(self.hparams.rollouts)
        losses, scores, taken = [], [], 0
        for episode in episodes:
            truth = episode.ground_truth()
            runs = [self.rollout(episode, generator, store=trained) for _ in range(rollouts)]
            rewards = [frame_scores(run.labels, truth) for run in runs]
            taken += sum(len(run.decisions) for run in runs)
            scores += [float(np.mean(r)) for r in rewards]
            decisions = [[d for d in run.decisions if d.kind in trained] for run in runs]
            frames = [[d.frame for d in chosen] for chosen in decisions]
            if self.hparams.credit == "group":
                credits = group_credits(rewards, frames, self.hparams.gamma)
            else:
                credits = [decision_returns(r, f, self.hparams.gamma) for r, f in zip(rewards, frames)]
            for chosen, credit in zip(decisions, credits):
                if chosen:
                    losses.append(reinforce_loss(self.log_probs(chosen), credit.to(self.device)))
        loss = torch.stack(losses).sum() / (len(episodes) * rollouts) if losses else self._zero_loss()
        if losses:
            loss = loss + self._zero_loss()  # every trained parameter in the graph, whichever decisions occurred
        return loss, {"train/reward": torch.tensor(float(np.mean(scores)))}, taken

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Episodes stay as they are: the networks' inputs are moved when they are built, and Lightning's default
        would rebuild every dataclass of the batch (copying its frames and dropping the per-episode caches)."""
        return batch

    def training_step(self, batch: list[Episode], batch_idx: int):
        if self.hparams.mode == "warmup":
            loss, logged, taken = self.warmup_loss(batch)
        else:
            generator = torch.Generator().manual_seed(
                int(self.hparams.seed) * 1_000_003 + int(self.updates) * 101 + self.global_rank
            )
            loss, logged, taken = self.rl_loss(batch, generator)
        total = self.trainer.strategy.reduce(torch.tensor(float(taken), device=self.device), reduce_op="sum")
        self.decisions += int(total)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.updates += 1
        logged["train/loss"] = loss.detach()
        logged["train/decisions"] = float(taken)
        self.log_dict(logged, on_step=True, on_epoch=True, batch_size=max(len(batch), 1))
        return loss.detach()

    def configure_optimizers(self):
        parameters = [p for name in self.trained_policies for p in getattr(self, name).parameters()]
        return torch.optim.Adam(parameters, lr=self.hparams.lr)
