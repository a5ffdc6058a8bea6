"""IVOS-W's agent LightningModule on synthetic interactive videos whose hard frames are known: counters, the ε
schedule, the random pre-fill of the replay buffer before any update, the target network's stochastic hard copies,
exact resume (and its refusal under other ablation flags), the ablation flags, the greedy `recommend`, and a learning
test where the trained agent beats the random policy on held-out videos with other hard frames."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import zoo.ivosw.module as ivosw_module
from zoo.ivosw.module import (
    TARGET_STREAM, IVOSWAgentModule, Round, play_episode, seeded_generator,
)
from zoo.rl.dqn import epsilon_schedule

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FRAMES = 12


class HardFramesVideo:
    """A synthetic interactive session. An annotated frame is segmented well (0.92, +0.01 per repeat: annotating a
    frame twice gives little); an easy frame is propagated well from the annotated ones (0.85, −0.01 per frame of
    distance to the nearest annotated frame); a hard frame stays bad (0.3) until it is annotated itself. So the
    frames worth annotating are the hard ones, which show as the lowest q. Oracle setting: q is the J&F."""

    def __init__(self, key: str, hard: tuple[int, ...], first: int, num_frames: int = FRAMES):
        self.key, self.hard, self.first, self.num_frames = key, set(hard), first, num_frames
        self.counts = torch.zeros(num_frames)
        self.resets = 0

    def quality(self) -> torch.Tensor:
        annotated = self.counts.nonzero().flatten()
        distance = (torch.arange(self.num_frames)[:, None] - annotated[None]).abs().min(1).values.float()
        easy = 0.85 - 0.01 * distance
        hard = torch.tensor([n in self.hard for n in range(self.num_frames)])
        unannotated = torch.where(hard, torch.tensor(0.3), easy)
        return torch.where(self.counts > 0, (0.91 + 0.01 * self.counts).clamp(max=1.0), unannotated)

    def _round(self, frame: int) -> Round:
        self.counts[frame] += 1
        q = self.quality()
        return Round(frame, q, q.clone())

    def reset(self) -> Round:
        self.resets += 1
        self.counts.zero_()
        return self._round(self.first)

    def annotate(self, frame: int) -> Round:
        return self._round(frame)


def videos(seed: int, count: int = 3) -> list[HardFramesVideo]:
    """Videos with 3 hard frames at random places each (never the user's first frame)."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for index in range(count):
        order = torch.randperm(FRAMES, generator=generator).tolist()
        made.append(HardFramesVideo(f"video{seed}-{index}", tuple(order[1:4]), first=order[0]))
    return made


TINY = dict(hidden=16, head_hidden=16, batch_size=8, buffer_capacity=400, warmup_transitions=40,
            updates_per_episode=3, random_runs=6, epsilon_steps=50, lr=1e-3, seed=0)


def make_module(train_videos=None, **overrides) -> IVOSWAgentModule:
    module = IVOSWAgentModule(**{**TINY, **overrides})
    module.videos = videos(0) if train_videos is None else train_videos
    return module


def make_trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                      num_sanity_val_steps=0, **kwargs)


def final_performance(video: HardFramesVideo, choose, rounds: int = 5) -> float:
    return float(play_episode(video, rounds, choose).performance[-1])


# -- counters and the ε schedule --------------------------------------------------------------------------------------


def test_counters_count_episodes_decisions_and_updates(tmp_path):
    module = make_module()
    make_trainer(tmp_path, 2).fit(module)
    assert int(module.episodes) == 6  # 3 videos, 2 epochs
    assert int(module.environment_steps) == 6 * 4  # T = 5 rounds: 4 decisions each
    assert int(module.updates) == 6 * 3
    assert len(module.replay) == 40 + 6 * 4  # the random pre-fill, then every episode's transitions


def test_exploration_follows_the_epsilon_schedule(tmp_path, monkeypatch):
    used, draws = [], []
    greedy = ivosw_module.epsilon_greedy

    def recording(q, epsilon, generator=None, valid_actions=None):
        used.append(epsilon)
        draws.append(generator.get_state())
        return greedy(q, epsilon, generator, valid_actions)

    monkeypatch.setattr(ivosw_module, "epsilon_greedy", recording)
    module = make_module()
    make_trainer(tmp_path, 2).fit(module)
    expected = [epsilon_schedule(step, 0.7, 0.25, 50) for step in range(24)]
    assert used == pytest.approx(expected)  # one ε per decision, at the count of decisions before it
    assert module.epsilon == pytest.approx(epsilon_schedule(24, 0.7, 0.25, 50))
    # each episode explores with draws of its own (the generator is seeded by the episode count)
    firsts = [tuple(state.tolist()) for state in draws[::4]]
    assert len(set(firsts)) == 6


# -- the random pre-fill ----------------------------------------------------------------------------------------------


class SpyVideo(HardFramesVideo):
    """Records, for every frame the agent has annotated, whether it is the policy's greedy choice at that state."""

    def __init__(self, *args, module=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.module, self.greedy_hits, self.decisions = module, 0, 0

    def annotate(self, frame: int) -> Round:
        self.decisions += 1
        self.greedy_hits += int(frame == self.module.recommend(self.quality(), self.counts))
        return super().annotate(frame)


def test_random_prefill_fills_the_buffer_before_any_update(tmp_path):
    module = make_module()
    module.videos = [SpyVideo(v.key, tuple(v.hard), v.first, module=module) for v in module.videos]

    seen = {}

    class FirstStep(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault("buffer", len(pl_module.replay))
            seen.setdefault("updates", int(pl_module.updates))

    make_trainer(tmp_path, 1, callbacks=[FirstStep()]).fit(module)
    assert seen == {"buffer": 40, "updates": 0}

    # the pre-fill's frames are drawn uniformly, not by the (untrained) policy: greedy about 1 time in 12
    fresh = make_module()
    fresh.videos = [SpyVideo(v.key, tuple(v.hard), v.first, module=fresh) for v in fresh.videos]
    fresh.collect_random_statistics()
    for video in fresh.videos:
        video.greedy_hits = video.decisions = 0
    fresh.warm_buffer(240)
    decisions = sum(v.decisions for v in fresh.videos)
    assert decisions == 240
    assert sum(v.greedy_hits for v in fresh.videos) < 0.15 * decisions
    histogram = torch.bincount(fresh.replay.storage["action"][:240], minlength=FRAMES)
    assert histogram.min() >= 8, histogram  # every frame drawn (20 expected each)


# -- the target network -----------------------------------------------------------------------------------------------


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_target_network_never_copied_keeps_the_initial_policy(tmp_path):
    module = make_module(target_update_probability=0.0)
    initial = {name: value.clone() for name, value in module.policy.state_dict().items()}
    assert _same(module.target, module.policy)  # both start from the same weights
    make_trainer(tmp_path, 1).fit(module)
    assert int(module.target_copies) == 0 and not _same(module.target, module.policy)
    for name, value in module.target.state_dict().items():
        assert torch.equal(value, initial[name]), name
    assert all(not p.requires_grad for p in module.target.parameters())


def test_target_network_is_hard_copied_with_probability_p_per_update(tmp_path, monkeypatch):
    probability = 0.2
    module = make_module(target_update_probability=probability)
    after_update = []  # (target equals policy, target changed) after every update
    update = module._update

    def recording(generator):
        before = [p.clone() for p in module.target.parameters()]
        loss = update(generator)
        changed = any(not torch.equal(a, b) for a, b in zip(before, module.target.parameters()))
        after_update.append((_same(module.target, module.policy), changed))
        return loss

    monkeypatch.setattr(module, "_update", recording)
    make_trainer(tmp_path, 4).fit(module)  # 12 episodes x 3 = 36 updates
    assert len(after_update) == 36
    # the target moves only by copies (then it equals the policy) and lags behind it in between
    assert all(equal == changed for equal, changed in after_update)
    copies = [u for u, (equal, _) in enumerate(after_update) if equal]
    assert 0 < len(copies) < 36 and len(copies) == int(module.target_copies)
    # at the updates chosen by one seeded uniform per update, the same on every process
    drawn = [u for u in range(36)
             if float(torch.rand((), generator=seeded_generator(0, TARGET_STREAM, u))) < probability]
    assert copies == drawn


def test_gradients_are_clamped_to_plus_minus_one_before_each_step(tmp_path):
    largest = []

    class LargestGradient(Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            largest.append(max(float(p.grad.abs().max()) for p in pl_module.policy.parameters()))

    # δ = 1000 makes the targets, and so the raw gradients, far larger than 1
    make_trainer(tmp_path, 1, callbacks=[LargestGradient()]).fit(make_module(delta=1000.0))
    assert len(largest) == 9 and max(largest) == 1.0


# -- resume -----------------------------------------------------------------------------------------------------------


def test_resume_is_exact(tmp_path):
    settings = dict(target_update_probability=0.3)
    straight = make_module(**settings)
    make_trainer(tmp_path / "a", 4).fit(straight)

    first_half = make_module(**settings)
    trainer = make_trainer(tmp_path / "b", 2)
    trainer.fit(first_half)
    checkpoint = tmp_path / "half.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert "ivosw_agent" in torch.load(checkpoint, weights_only=True)  # the extra state is weights_only-safe

    resumed = make_module(**settings)
    resets = {}

    class NoRandomEpisodesOnResume(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            resets.setdefault("before first step", sum(v.resets for v in pl_module.videos))

    make_trainer(tmp_path / "c", 4, callbacks=[NoRandomEpisodesOnResume()]).fit(resumed, ckpt_path=checkpoint)
    # buffer and statistics came from the checkpoint: no random-policy episode was played again
    assert resets == {"before first step": 0}
    assert int(resumed.episodes) == 12 and int(resumed.target_copies) == int(straight.target_copies) > 0
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=f"{name} differs after resume")
    assert straight.replay.position == resumed.replay.position and len(straight.replay) == len(resumed.replay)
    for key, value in straight.replay.storage.items():
        assert torch.equal(value[: len(straight.replay)], resumed.replay.storage[key][: len(resumed.replay)]), key


@pytest.mark.parametrize("flag", [{"goal_reward": "eq2"}, {"rewards": "aux"}, {"state_features": "counts"},
                                  {"decomposition": False}])
def test_resume_refuses_other_ablation_flags(tmp_path, flag):
    trainer = make_trainer(tmp_path, 1)
    trainer.fit(make_module())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    name = next(iter(flag))
    with pytest.raises(ValueError, match=f"trained with {name}="):
        make_trainer(tmp_path, 2).fit(make_module(**flag), ckpt_path=tmp_path / "m.ckpt")


def test_checkpoint_loads_for_inference(tmp_path):
    module = make_module()
    trainer = make_trainer(tmp_path, 1)
    trainer.fit(module)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = IVOSWAgentModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=True)
    quality, counts = torch.rand(3, FRAMES), torch.randint(0, 3, (3, FRAMES)).float()
    assert torch.equal(loaded.recommend(quality, counts), module.recommend(quality, counts))


# -- flags and inference ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("features", ["both", "quality", "counts"])
def test_state_feature_ablation_hides_the_other_feature(features):
    module = IVOSWAgentModule(**{**TINY, "state_features": features})
    generator = torch.Generator().manual_seed(1)
    quality, counts = torch.rand(2, 4, FRAMES, generator=generator), torch.randint(0, 4, (2, 4, FRAMES)).float()
    q = module.q_values(torch.stack([quality[0], counts[0]], -1))
    new_quality = module.q_values(torch.stack([quality[1], counts[0]], -1))
    new_counts = module.q_values(torch.stack([quality[0], counts[1]], -1))
    assert torch.allclose(q, new_quality) == (features == "counts")
    assert torch.allclose(q, new_counts) == (features == "quality")


def _batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return {"state": torch.rand(4, FRAMES, 2, generator=generator),
            "next_state": torch.rand(4, FRAMES, 2, generator=generator), "action": torch.tensor([0, 3, 5, 11]),
            "aux_reward": torch.tensor([1.0, -1.0, 1.0, -1.0]), "done": torch.tensor([False, False, True, True]),
            "performance": torch.tensor([0.7, 0.8, 0.6, 0.9]), "mu": torch.full((4,), 0.6),
            "sigma": torch.full((4,), 0.1)}


def test_reward_flags_change_the_targets_as_the_ablations_say():
    batch = _batch()
    eq3 = torch.tensor([0.0, 1.0, -1.0, 2.0])  # (P − μ̂ − σ̂) / σ̂
    targets = {}
    for flags in ({}, {"goal_reward": "eq2"}, {"rewards": "goal"}, {"rewards": "aux"}):
        module = IVOSWAgentModule(**{**TINY, **flags})
        with torch.no_grad():  # a target network apart from the policy, so that only one of them picks a'
            for parameter in module.target.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4)))
            next_value = module.q_values(batch["next_state"], module.target)[
                torch.arange(4), module.q_values(batch["next_state"]).argmax(1)]
        out = module.batch_loss(batch)
        targets[tuple(flags.values())] = (out["target_step"], out["target_done"], next_value)
    step, done, next_value = targets[()]
    bootstrap = torch.where(batch["done"], 0.0, 0.95 * next_value)
    torch.testing.assert_close(done, 0.1 * eq3)
    torch.testing.assert_close(step, 0.1 * batch["aux_reward"] + bootstrap)
    torch.testing.assert_close(targets[("eq2",)][1], 0.1 * (eq3 + 1))  # Eq. 2 = Eq. 3 + 1
    torch.testing.assert_close(targets[("goal",)][0], bootstrap)  # r_aux dropped
    torch.testing.assert_close(targets[("aux",)][1], torch.zeros(4))  # r_goal dropped


def test_decomposition_flag_adds_the_terminal_term_of_non_terminal_steps():
    batch = _batch()
    with_it = IVOSWAgentModule(**TINY).batch_loss(batch)
    without = IVOSWAgentModule(**{**TINY, "decomposition": False}).batch_loss(batch)
    torch.testing.assert_close(with_it["loss_step"], without["loss_step"])
    squared = (with_it["q_taken"] - with_it["target_done"]) ** 2
    torch.testing.assert_close(without["loss_done"], squared[2:].sum() / 4)
    torch.testing.assert_close(with_it["loss_done"], squared.mean())


def test_recommend_is_the_greedy_frame_whatever_epsilon():
    module = IVOSWAgentModule(**TINY)
    assert module.epsilon == pytest.approx(0.7)
    quality, counts = torch.rand(5, FRAMES), torch.randint(0, 3, (5, FRAMES)).float()
    expected = module.q_values(torch.stack([quality, counts], -1)).argmax(1)
    for _ in range(3):
        assert torch.equal(module.recommend(quality, counts), expected)
    assert [module.recommend(quality[i], counts[i]) for i in range(5)] == expected.tolist()


def test_a_video_the_random_policy_cannot_change_is_refused():
    class Unchangeable(HardFramesVideo):
        def quality(self) -> torch.Tensor:
            return torch.full((self.num_frames,), 0.5)

    module = make_module(train_videos=[Unchangeable("flat", (), 0)])
    with pytest.raises(ValueError, match="'flat': every random-policy run scores the same after round 2"):
        module.collect_random_statistics()


def test_training_needs_videos_of_one_length(tmp_path):
    with pytest.raises(RuntimeError, match="attach the training videos"):
        make_trainer(tmp_path, 1).fit(make_module(train_videos=[]))
    mixed = [HardFramesVideo("a", (1,), 0), HardFramesVideo("b", (1,), 0, num_frames=FRAMES + 1)]
    with pytest.raises(ValueError, match="same number of frames"):
        make_trainer(tmp_path, 1).fit(make_module(train_videos=mixed))


# -- learning ---------------------------------------------------------------------------------------------------------


def test_trained_agent_beats_random_on_held_out_videos(tmp_path):
    started = time.monotonic()
    torch.manual_seed(0)
    module = make_module(videos(0, count=6), batch_size=32, buffer_capacity=2000, warmup_transitions=200,
                         updates_per_episode=14, epsilon_steps=300, lr=1e-3, hidden=32, head_hidden=32,
                         random_runs=10, target_update_probability=0.05)
    make_trainer(tmp_path, 10).fit(module)
    held_out = videos(1, count=6)
    assert not {v.key for v in held_out} & {v.key for v in module.videos}

    agent = sum(final_performance(v, lambda s: module.recommend(s[:, 0], s[:, 1])) for v in held_out) / 6
    found = [sum(int(v.counts[n] > 0) for n in v.hard) for v in held_out]  # hard frames the agent annotated
    generator = torch.Generator().manual_seed(3)
    random = sum(final_performance(v, lambda s: int(torch.randint(0, FRAMES, (), generator=generator)))
                 for v in held_out for _ in range(20)) / 120
    best = (9 * 0.85 + 3 * 0.92) / 12  # all three hard frames annotated (roughly; propagation lowers easy frames)
    assert agent > random + 0.05, (agent, random)
    assert agent > best - 0.03, (agent, best)
    assert sum(found) >= 0.8 * 3 * len(held_out), found
    assert time.monotonic() - started < 60
