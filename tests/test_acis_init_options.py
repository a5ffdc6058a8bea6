"""The init stage's two options beside the paper's BCE: a soft-Dice term (`init_dice_weight`) and fine-tuning the
decoder (`init_train_decoder`), and the recipe flags that set them."""

from __future__ import annotations

import dataclasses

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from test_acis import TINY, tiny_batch, tiny_module
from zoo.acis.module import ActorCriticModule, prepare_batch
from zoo.acis.networks import state_pyramid

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_init_mask_loss_adds_the_weighted_soft_dice_loss_to_the_bce():
    logit = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    probability = torch.sigmoid(logit)
    bce = F.binary_cross_entropy_with_logits(logit, target)
    dice = 2 * (probability * target).sum() / (probability.sum() + target.sum())
    assert float(tiny_module(mode="BL-Trunc", sampled_states=True).init_mask_loss(logit, target)) == pytest.approx(float(bce))
    weighted = tiny_module(mode="BL-Trunc", sampled_states=True, init_dice_weight=0.5)
    assert float(weighted.init_mask_loss(logit, target)) == pytest.approx(float(bce + 0.5 * (1 - dice)))


def test_the_dice_term_pushes_a_faint_small_leaf_up_harder_than_bce_alone():
    """A leaf of 4 pixels in 400, predicted faintly (p = 0.1 everywhere): the Dice term's gradient raises the leaf's
    logits more than twice as hard as the pixel-mean BCE does."""
    target = torch.zeros(20, 20)
    target[:2, :2] = 1.0
    pulls = []
    for weight in (0.0, 1.0):
        logit = torch.full((20, 20), float(torch.logit(torch.tensor(0.1))), requires_grad=True)
        tiny_module(mode="BL-Trunc", sampled_states=True, init_dice_weight=weight).init_mask_loss(logit, target).backward()
        pulls.append(float(-logit.grad[:2, :2].sum()))
    assert pulls[0] > 0 and pulls[1] > 2 * pulls[0]


def fit_two_steps(module: ActorCriticModule) -> ActorCriticModule:
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, DataLoader([tiny_batch()] * 2, batch_size=None))
    return module


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_the_init_update_trains_with_the_dice_term_it_is_given(weight):
    """Same seed, same start: the actor after two updates differs between the BCE and the BCE + Dice stage."""
    actors = []
    for dice_weight in (0.0, weight):
        module = tiny_module(mode="BL-Trunc", sampled_states=True, curriculum=[[0, 1]], init_dice_weight=dice_weight)
        torch.manual_seed(1)
        actors.append([p.detach().clone() for p in fit_two_steps(module).actor.parameters()])
    same = all(torch.equal(a, b) for a, b in zip(*actors))
    assert same == (weight == 0.0)


def test_init_train_decoder_moves_the_decoder_weights_but_not_its_batch_norm_statistics():
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, batch_norm=True).to_dict()
    module = ActorCriticModule(config, mode="BL-Trunc", sampled_states=True, curriculum=[[0, 1]], init_train_decoder=True)
    weights = [p.detach().clone() for p in module.decoder.parameters()]
    statistics = [b.detach().clone() for name, b in module.decoder.named_buffers() if "running" in name]
    module.train()  # as after a module-wide .train(): the stage itself must put the decoder's BatchNorm in eval mode
    fit_two_steps(module)
    assert any(not torch.equal(a, b) for a, b in zip(weights, module.decoder.parameters()))
    after = [b for name, b in module.decoder.named_buffers() if "running" in name]
    assert statistics and all(torch.equal(a, b) for a, b in zip(statistics, after))


def test_init_train_decoder_is_refused_outside_the_init_stage():
    with pytest.raises(ValueError, match="init stage"):
        tiny_module(mode="AC", init_train_decoder=True)


def test_the_recipe_flags_override_the_profiles_init_options():
    from recipes._acis_common import build_parser, profile_settings
    from recipes.acis_cvppp import CVPPP

    def schedule(*flags):
        args = build_parser(CVPPP).parse_args(["--data-dir", "x", "--profile", "cpu", *flags])
        return profile_settings(CVPPP, args)[1]

    assert schedule().init_dice_weight == 1.0 and schedule().init_train_decoder
    changed = schedule("--init-dice-weight", "0", "--no-init-train-decoder")
    assert changed.init_dice_weight == 0.0 and not changed.init_train_decoder
    assert CVPPP.embedded_schedule.init_dice_weight == 0.0 and not CVPPP.embedded_schedule.init_train_decoder
    with pytest.raises(SystemExit, match="--init-dice-weight"):
        schedule("--init-dice-weight", "-1")


@pytest.mark.parametrize("flags", [["--profile", "cpu"], ["--profile", "cpu", "--init-dice-weight", "0",
                                                          "--no-init-train-decoder"], ["--profile", "embedded"]])
def test_the_card_notes_keep_the_last_stage_and_name_the_init_options_in_force(flags):
    from types import SimpleNamespace

    from recipes._acis_common import build_parser, notes, profile_settings
    from recipes.acis_cvppp import CVPPP

    args = build_parser(CVPPP).parse_args(["--data-dir", "x", *flags])
    schedule = profile_settings(CVPPP, args)[1]
    items = notes(CVPPP, args, False, SimpleNamespace(config=CVPPP.cpu_config))
    assert any(item.startswith("Last stage:") for item in items)
    assert any("soft-Dice loss per matched instance" in item for item in items) == bool(schedule.init_dice_weight)
    assert any("decoder is fine-tuned" in item for item in items) == schedule.init_train_decoder


def test_the_cvae_epochs_init_epochs_init_rollout_and_critic_warmup_flags_override_the_profile():
    from recipes._acis_common import build_parser, profile_settings
    from recipes.acis_cvppp import CVPPP

    def schedule(*flags):
        return profile_settings(CVPPP, build_parser(CVPPP).parse_args(["--data-dir", "x", "--profile", "cpu", *flags]))[1]

    assert schedule().cvae_epochs == CVPPP.cpu_schedule.cvae_epochs
    assert schedule("--cvae-epochs", "7").cvae_epochs == 7
    with pytest.raises(SystemExit, match="--cvae-epochs"):
        schedule("--cvae-epochs", "0")
    assert not schedule().init_sample_actions and schedule("--init-sample-actions").init_sample_actions
    assert schedule().critic_repeats and not schedule("--no-critic-repeats").critic_repeats
    assert schedule().init_epochs == CVPPP.cpu_schedule.init_epochs
    assert schedule("--init-epochs", "120").init_epochs == 120
    with pytest.raises(SystemExit, match="--init-epochs"):
        schedule("--init-epochs", "0")
    assert schedule().init_rollout == CVPPP.cpu_schedule.init_rollout
    assert schedule("--init-rollout", "9").init_rollout == 9
    with pytest.raises(SystemExit, match="--init-rollout"):
        schedule("--init-rollout", "0")
    assert schedule().critic_warmup == CVPPP.cpu_schedule.critic_warmup
    assert schedule("--critic-warmup", "0").critic_warmup == 0
    with pytest.raises(SystemExit, match="--critic-warmup"):
        schedule("--critic-warmup", "-1")


def test_share_stages_picks_which_checkpoints_come_from_the_pretrained_run(tmp_path):
    from recipes._acis_common import build_parser, source_of
    from recipes.acis_cvppp import CVPPP

    def sources(*flags):
        args = build_parser(CVPPP).parse_args(["--data-dir", "x", *flags])
        return [source_of(args, tmp_path / "own", stage).parent.parent.parent.name for stage in ("preproc", "cvae", "init")]

    assert sources() == ["own"] * 3
    assert sources("--pretrained-run", str(tmp_path / "base")) == ["base"] * 3
    assert sources("--pretrained-run", str(tmp_path / "base"), "--share-stages", "preproc", "cvae") == ["base", "base", "own"]
    with pytest.raises(SystemExit, match="leading part"):
        sources("--pretrained-run", str(tmp_path / "base"), "--share-stages", "cvae", "init")


@pytest.mark.parametrize("flags,message", [(["--share-stages", "preproc", "--stage", "preproc"], "--stage preproc"),
                                           (["--stage", "init"], "--stage init")])
def test_a_stage_taken_from_the_pretrained_run_is_not_trained_here(tmp_path, flags, message):
    from recipes.acis_cvppp import main

    with pytest.raises(SystemExit, match=message):
        main(["--data-dir", str(tmp_path), "--profile", "cpu", "--run-dir", str(tmp_path / "run"),
              "--pretrained-run", str(tmp_path / "base"), *flags])


@pytest.mark.parametrize("sample", [None, True])
def test_only_a_sampling_init_stage_trains_sigma_through_the_mask_loss(sample):
    """With beta 0, sigma's output rows of the head get a gradient only from the masks (the termination unit does not
    read the head), hence only when the init stage decodes a sample: decoding the mean leaves sigma to the KL alone."""
    module = tiny_module(mode="BL-Trunc", sampled_states=True, curriculum=[[0, 1]], rollout=2, beta_kl=0.0,
                         init_dice_weight=1.0, init_sample_actions=sample)
    optimizer = torch.optim.SGD(module.actor.parameters(), lr=0.0)  # the gradients stay for reading
    module.optimizers = lambda: optimizer
    module.manual_backward = lambda loss: loss.backward()
    module.clip_gradients = lambda *args, **kwargs: None
    torch.manual_seed(1)
    image, gts = prepare_batch(tiny_batch(), module.config)
    aux = module.preproc.channels(image)
    module.sampled_state_update(image, aux, state_pyramid(image, aux, module.config.levels), gts)
    gradient = module.actor.head.net[-1].weight.grad.abs()
    latent = module.config.latent_size
    assert gradient[:latent].sum() > 0
    assert (gradient[latent:].sum() > 0) == bool(sample)


def test_the_training_time_counts_the_stages_taken_from_the_pretrained_run_at_its_recorded_times(tmp_path):
    import json

    from recipes._acis_common import build_parser, training_record
    from recipes.acis_cvppp import CVPPP

    base = tmp_path / "base"
    base.mkdir()
    (base / "timings.json").write_text(json.dumps({"cvae": 600.0, "init": 900.0, "train": 480.0}))
    (base / "results.json").write_text(json.dumps({"command": "python -m recipes.acis_cvppp --seed 1"}))
    args = build_parser(CVPPP).parse_args(["--data-dir", "x", "--pretrained-run", str(base), "--run-dir",
                                           str(tmp_path / "run")])
    text, command = training_record(args, {"train": 300.0, "eval": 60.0})
    assert command == "python -m recipes.acis_cvppp --seed 1"
    # the base run's own last stage is not this run's: this run's 5 min count, and a missing stage says so
    assert text == (f"preproc not recorded in {base}, cvae 10.0 min in {base}, init 15.0 min in {base}, train 5.0 min; "
                    "30 min for what was recorded")
    own = build_parser(CVPPP).parse_args(["--data-dir", "x", "--run-dir", str(tmp_path / "own")])
    assert training_record(own, {"preproc": 60.0, "cvae": 60.0, "init": 60.0, "train": 60.0}) == (
        "preproc 1.0 min, cvae 1.0 min, init 1.0 min, train 1.0 min; 4 min in all", None)


def test_a_continued_stage_and_a_base_run_without_results_are_reported_as_recorded(tmp_path):
    import json

    from recipes._acis_common import build_parser, training_record
    from recipes._run_dir import RunDirectory
    from recipes.acis_cvppp import CVPPP

    base = tmp_path / "base"
    with RunDirectory(base, command=["python", "-m", "recipes.acis_cvppp", "--stage", "init", "--init-epochs", "120"]):
        pass  # a run of the init stage only: no results.json
    (base / "timings.json").write_text(json.dumps({"preproc": 60.0, "cvae": 60.0, "init": 1200.0,
                                                   "epochs": {"init": [60, 120]}}))
    args = build_parser(CVPPP).parse_args(["--data-dir", "x", "--pretrained-run", str(base), "--run-dir",
                                           str(tmp_path / "run")])
    text, command = training_record(args, {"train": 60.0})
    assert command == "python -m recipes.acis_cvppp --stage init --init-epochs 120"
    # the init stage's first 60 epochs ran elsewhere: its 20 min are not the stage's time, nor the sum the whole
    assert f"init 20.0 min (epochs 60-120 only) in {base}" in text
    assert text.endswith("; 23 min for what was recorded")


def test_a_stage_whose_checkpoint_records_its_training_time_is_reported_whole(tmp_path):
    import torch

    from recipes._acis_common import build_parser, training_record
    from recipes._run_dir import STATE_KEY
    from recipes.acis_cvppp import CVPPP

    def checkpoint(run_dir, folder, epochs, seconds):
        path = run_dir / "checkpoints" / folder / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({STATE_KEY: {"complete": True, "epochs": epochs, "identity": None, "train_seconds": seconds}}, path)

    base, run = tmp_path / "base", tmp_path / "run"
    for folder, epochs, seconds in (("preproc", 40, 120.0), ("cvae", 200, 600.0), ("init", 240, 4800.0)):
        checkpoint(base, folder, epochs, seconds)
    checkpoint(run, "train-BL", 8, 300.0)
    args = build_parser(CVPPP).parse_args(["--data-dir", "x", "--pretrained-run", str(base), "--run-dir", str(run),
                                           "--ablation", "BL"])
    # timings.json holds only the init's last continuation and nothing for the others: the checkpoints know better
    text, _ = training_record(args, {"init": 60.0, "train": 30.0})
    assert text == (f"preproc 2.0 min (all 40 epochs) in {base}, cvae 10.0 min (all 200 epochs) in {base}, "
                    f"init 80.0 min (all 240 epochs) in {base}, train 5.0 min (all 8 epochs); 97 min in all")
