"""The re-ID training options beyond the paper: off by default, each doing what it says, each bad value refused.

The losses, random erasing, P x K batches, BNNeck and the Lite input sizes have their own tests beside the code
they change (test_losses.py, test_loading.py, test_model.py); this file holds the configuration, the learning-rate
schedules, the optimiser and the training steps.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import yaml

from fmn_core.engine import TrainConfig, load_recipe
from fmn_core.engine.checkpoint import CheckpointError, build_model
from fmn_core.engine.config import FIELD_LIMITS, LR_SCHEDULES, OPTIMIZERS
from fmn_core.engine.recipes import RECIPES_DIR
from fmn_core.engine.trainer import (
    WARMUP_START_FACTOR,
    _stage1_step,
    _stage2_step,
    build_optimizer,
    build_scheduler,
    metric_names,
    stage2_model,
)
from fmn_core.losses import batch_hard_triplet_loss, identity_loss
from fmn_core.models import FeatureMaskNetwork

OPTIONS = {"random_erasing": 0.0, "label_smoothing": 0.0, "warmup_epochs": 0, "lr_schedule": "step",
           "optimizer": "sgd", "bn_neck": False, "triplet_weight": 0.0, "triplet_margin": 0.3,
           "instances_per_identity": 0}


def test_every_option_is_off_in_the_defaults_and_both_recipes():
    for config in (TrainConfig(), load_recipe("paper"), load_recipe("cpu")):
        assert {name: getattr(config, name) for name in OPTIONS} == OPTIONS
    numeric = [name for name, value in OPTIONS.items() if isinstance(value, int | float) and type(value) is not bool]
    assert set(numeric) <= set(FIELD_LIMITS)


def test_the_paper_recipe_repeats_no_field_a_new_option_gets_its_paper_value_from_the_dataclass():
    assert yaml.safe_load((RECIPES_DIR / "paper.yaml").read_text()) == {}
    assert load_recipe("paper") == TrainConfig()  # so a new field's default is the paper's recipe, off for options


@pytest.mark.parametrize(("changes", "expected"), [
    ({"random_erasing": 1.5}, r"random_erasing=1.5: must lie in 0..1"),
    ({"label_smoothing": 0.7}, r"label_smoothing=0.7: must lie in 0..0.5"),
    ({"warmup_epochs": -1}, r"warmup_epochs=-1: must lie in 0..1000"),
    ({"lr_schedule": "linear"}, r"lr_schedule='linear': expected one of \('step', 'cosine'\)"),
    ({"optimizer": "adam"}, r"optimizer='adam': expected one of \('sgd', 'adamw'\)"),
    ({"bn_neck": "yes"}, r"bn_neck='yes': expected true or false"),
    ({"triplet_weight": -1.0}, r"triplet_weight=-1.0: must lie in 0..100"),
    ({"triplet_margin": float("nan")}, r"triplet_margin=nan: must be a finite number"),
    ({"instances_per_identity": -2}, r"instances_per_identity=-2: must lie in 0..4096"),
    ({"instances_per_identity": 4, "batch_size": 30},
     r"batch_size=30 is not a multiple of instances_per_identity=4"),
    ({"triplet_weight": 1.0}, r"triplet_weight=1.0 needs instances_per_identity of at least 2, got 0"),
    ({"triplet_weight": 1.0, "instances_per_identity": 1}, r"needs instances_per_identity of at least 2, got 1"),
    ({"bn_neck": True, "batch_size": 1}, r"bn_neck=True needs batch_size of at least 2, got 1"),
    ({"warmup_epochs": 20}, r"stage1_lr_drop_epoch=20: must come after warmup_epochs=20 \(lr_schedule='step'"),
    ({"warmup_epochs": 40}, r"stage1_lr_drop_epoch=20: must come after warmup_epochs=40.*"
                            r"stage2_lr_drop_epoch=35: must come after warmup_epochs=40"),
])
def test_a_bad_option_is_refused_naming_the_field_the_value_and_what_is_accepted(changes, expected):
    with pytest.raises(ValueError, match=expected):
        load_recipe("paper", **changes)


def test_good_combinations_are_accepted():
    load_recipe("cpu", triplet_weight=1.0, instances_per_identity=4, batch_size=32, bn_neck=True, warmup_epochs=5,
                lr_schedule="cosine", optimizer="adamw", random_erasing=0.5, label_smoothing=0.1)
    load_recipe("paper", warmup_epochs=40, lr_schedule="cosine")  # cosine has no drop epoch to come after


def test_the_launchpad_offers_the_new_choices_as_enums():
    from fmn_assets.configs import TRAINING_CHOICES

    assert {member.value for member in TRAINING_CHOICES["lr_schedule"]} == set(LR_SCHEDULES)
    assert {member.value for member in TRAINING_CHOICES["optimizer"]} == set(OPTIMIZERS)
    assert {"efficientnet_lite1", "efficientnet_lite2"} <= {member.value for member in TRAINING_CHOICES["arch"]}


def _rates(config: TrainConfig, stage: int, epochs: int, resume_at: int | None = None) -> list[float]:
    """The learning rate of each epoch, stepping the schedule as the trainer does (after each epoch); with
    ``resume_at``, optimiser and schedule are rebuilt from their state dicts there, as a resumed run does."""
    lr = config.stage(stage).lr
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = build_scheduler(optimizer, config, stage)
    rates = []
    for epoch in range(epochs):
        if epoch == resume_at:
            saved = optimizer.state_dict(), scheduler.state_dict()
            optimizer = torch.optim.SGD([parameter], lr=lr)
            scheduler = build_scheduler(optimizer, config, stage)
            optimizer.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_the_step_schedule_drops_at_the_drop_epoch_and_is_the_paper_s_multisteplr_without_warmup():
    config = load_recipe("paper")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert type(build_scheduler(optimizer, config, 1)) is torch.optim.lr_scheduler.MultiStepLR
    rates = _rates(config, 1, 30)
    assert rates[:20] == pytest.approx([0.1] * 20) and rates[20:] == pytest.approx([0.01] * 10)
    assert _rates(config, 2, 45)[34:36] == pytest.approx([0.1, 0.01])  # stage 2 drops at its own epoch (35)


def test_warmup_ramps_linearly_per_epoch_then_the_step_drop_comes_at_the_same_epoch():
    rates = _rates(load_recipe("paper", warmup_epochs=4), 1, 30)
    ramp = [0.1 * (WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * e / 4) for e in range(4)]
    assert rates[:4] == pytest.approx(ramp) and rates[0] == pytest.approx(0.01)
    assert rates[4:20] == pytest.approx([0.1] * 16) and rates[20:] == pytest.approx([0.01] * 10)


def test_cosine_decays_from_the_full_rate_to_near_zero_by_the_stage_s_end():
    rates = _rates(load_recipe("paper", lr_schedule="cosine"), 1, 30)
    assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.001 and all(a > b for a, b in itertools.pairwise(rates))
    assert rates[15] == pytest.approx(0.05)  # halfway
    warm = _rates(load_recipe("paper", lr_schedule="cosine", warmup_epochs=5), 1, 30)
    assert warm[0] == pytest.approx(0.01) and warm[5] == pytest.approx(0.1) and warm[-1] < 0.001
    assert warm[5:] == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 25)) for e in range(25)], rel=1e-5)


@pytest.mark.parametrize("changes", [{}, {"warmup_epochs": 3}, {"lr_schedule": "cosine", "warmup_epochs": 3},
                                     {"lr_schedule": "cosine"}])
@pytest.mark.parametrize("resume_at", [2, 3, 10])
def test_a_schedule_resumed_from_its_state_dict_continues_as_if_uninterrupted(changes, resume_at):
    config = load_recipe("paper", **changes)
    assert _rates(config, 1, 30, resume_at=resume_at) == _rates(config, 1, 30)


def _tiny(bn_neck: bool = False) -> FeatureMaskNetwork:
    torch.manual_seed(0)
    return FeatureMaskNetwork(4, arch="resnet18", input_size=(64, 32), bn_neck=bn_neck)


def test_adamw_is_the_optimiser_when_asked_and_the_mask_keeps_its_learning_rate_scale():
    model = _tiny()
    model.freeze_grn()
    config = load_recipe("paper", optimizer="adamw", stage2_lr=3e-4, weight_decay=0.05)
    optimizer = build_optimizer(model, config, 2)
    assert type(optimizer) is torch.optim.AdamW
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([3e-4, 3e-4 * config.mask_lr_scale])
    assert all(group["weight_decay"] == 0.05 for group in optimizer.param_groups)
    sgd = build_optimizer(model, load_recipe("paper"), 2)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9


def test_the_training_steps_add_the_triplet_loss_and_smooth_the_labels_only_when_asked():
    images, labels = torch.randn(4, 3, 64, 32), torch.tensor([0, 0, 1, 1])
    plain_config = load_recipe("paper", input_height=64, input_width=32, crop_pad=3)
    options = plain_config.replace(triplet_weight=2.0, instances_per_identity=2, label_smoothing=0.2)
    for stage, step, feature in ((1, _stage1_step, "g"), (2, _stage2_step, "l")):
        model = _tiny().eval()  # eval: the same forward twice
        plain_loss, _ = step(model, images, labels, plain_config)
        loss, stats = step(model, images, labels, options)
        names = metric_names(stage, options)
        assert len(stats) == len(names) and names[-2:] == ["triplet", "count"]
        assert metric_names(stage, plain_config)[-1] == "count" and "triplet" not in metric_names(stage, plain_config)
        out = model(images, branch="grn" if stage == 1 else "all")
        logits = out.grn_logits if stage == 1 else out.lan_logits
        triplet = batch_hard_triplet_loss(getattr(out, feature), labels, 0.3)
        smoothed = identity_loss(logits, labels, 0.2)
        assert triplet > 0 and stats[names.index("triplet")] / 4 == pytest.approx(triplet.item())
        extra = loss - plain_loss - (smoothed - identity_loss(logits, labels))
        assert extra.item() == pytest.approx(2.0 * triplet.item(), rel=1e-4)


def test_stage_2_takes_the_grn_s_neck_frozen_and_refuses_a_grn_trained_without_one():
    config = load_recipe("paper", arch="resnet18", pretrained="none", input_height=64, input_width=32, crop_pad=3,
                         bn_neck=True)
    torch.manual_seed(0)
    grn = build_model(config, 4)
    with torch.no_grad():
        grn.grn_neck.running_mean.fill_(0.5)  # as stage 1 would leave it
    state = {"stage": 1, "complete": True, "config": config.to_dict(), "model": grn.state_dict(), "num_classes": 4}
    model = stage2_model(state, config, 4, "grn.pt")
    assert torch.equal(model.grn_neck.running_mean, grn.grn_neck.running_mean)
    assert not model.train().grn_neck.training and not model.grn_neck.weight.requires_grad
    with pytest.raises(CheckpointError, match="grn.pt was trained with bn_neck=True but stage 2 is configured with "
                                              "bn_neck=False"):
        stage2_model(state, config.replace(bn_neck=False), 4, "grn.pt")
