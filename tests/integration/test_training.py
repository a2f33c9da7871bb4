"""Algorithm 1 on the tiny synthetic dataset: learning, freezing, checkpoints, resumption."""

from __future__ import annotations

import pytest
import torch

from fmn_core.data import read_dataset
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.engine import CheckpointError, load_checkpoint, model_from_checkpoint, preset, train_stage1, train_stage2
from fmn_core.engine.checkpoint import load_weights
from fmn_core.engine.progress import read_metrics_log
from fmn_core.engine.trainer import stage2_model
from fmn_core.losses import identity_loss, ranking_loss

FAST = dict(input_height=64, input_width=32, batch_size=16, crop_pad=3, stage1_lr=0.02, stage2_lr=0.02, device="cpu",
            decode_workers=2)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic(root, "tiny")
    return read_dataset("synthetic", root).table


@pytest.fixture(scope="module")
def trained(tiny_table, tmp_path_factory):
    """Both stages once, shared by the tests that only inspect the results."""
    out = tmp_path_factory.mktemp("run")
    config = preset("cpu", stage1_epochs=8, stage1_lr_drop_epoch=6, stage2_epochs=3, stage2_lr_drop_epoch=2, **FAST)
    first = train_stage1(tiny_table, config, out, progress=False)
    second = train_stage2(tiny_table, config, first.checkpoint, out, progress=False)
    return config, first, second, out


def test_stage1_loss_falls_and_accuracy_beats_chance(trained, tiny_table):
    config, first, _, out = trained
    history = read_metrics_log(out / "stage1_metrics.jsonl")
    assert history == first.history and len(history) == config.stage1_epochs
    chance = 1 / tiny_table[tiny_table.split == "train"].pid.nunique()
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert history[-1]["acc"] > 4 * chance, history[-1]
    assert history[0]["lr"] == pytest.approx(config.stage1_lr)  # dropped by lr_gamma after the drop epoch:
    assert history[-1]["lr"] == pytest.approx(config.stage1_lr * config.lr_gamma)


def test_stage2_leaves_the_grn_bit_identical(trained):
    _, first, second, _ = trained
    grn = load_checkpoint(first.checkpoint)["model"]
    fmn = load_checkpoint(second.checkpoint)["model"]
    grn_keys = [k for k in grn if k.startswith(("grn_stages.", "grn_classifier."))]
    assert any("running_mean" in k for k in grn_keys)  # BatchNorm buffers are covered too
    for key in grn_keys:
        assert torch.equal(grn[key], fmn[key]), key
    changed = [k for k in fmn if k.startswith(("mixing.", "lan_stages.", "lan_classifier.")) and k in grn
               and not torch.equal(grn[k], fmn[k])]
    assert any(k.startswith("mixing.") for k in changed) and any(k.startswith("lan_stages.") for k in changed)
    history = second.history
    assert all(row["grn_acc"] == pytest.approx(history[0]["grn_acc"], abs=0.15) for row in history)
    assert {"ce", "rank", "acc"} <= set(history[0])


def test_gradients_reach_mixing_and_lan_but_never_the_frozen_grn(trained, tiny_table):
    config, first, _, _ = trained
    state = load_checkpoint(first.checkpoint)
    model = stage2_model(state, config, state["num_classes"], "grn.pt").train()
    images, labels = torch.randn(4, 3, 64, 32), torch.tensor([0, 1, 2, 3])
    out = model(images)
    (identity_loss(out.lan_logits, labels) + ranking_loss(out.grn_logits, out.lan_logits, labels, 0.5)).backward()
    assert all(p.grad is None and not p.requires_grad for m in model.grn_modules() for p in m.parameters())
    assert model.mixing.transform.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.lan_stages.parameters())
    assert not any(m.training for m in model.grn_stages.modules())  # BatchNorm statistics stay put


def test_checkpoint_round_trip(trained, tmp_path):
    config, _, second, _ = trained
    state = load_checkpoint(second.checkpoint)
    assert state["stage"] == 2 and state["complete"] and state["epoch"] == config.stage2_epochs
    assert state["num_classes"] == len(state["label_map"]) and state["optimizer"] is not None
    assert {"torch", "torchvision", "fmn_core", "python"} <= set(state["versions"])
    model = model_from_checkpoint(state).eval()
    again = model_from_checkpoint(load_checkpoint(second.checkpoint)).eval()
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(model(images).l, again(images).l)


def test_damaged_and_mismatched_checkpoints_fail_clearly(trained, tmp_path):
    _, _, second, _ = trained
    data = second.checkpoint.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt .* truncated, corrupt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")
    state = load_checkpoint(second.checkpoint)
    with pytest.raises(CheckpointError, match="holds a efficientnet_lite0 network, but resnet50 was expected"):
        model_from_checkpoint(state, expect_arch="resnet50")
    with pytest.raises(CheckpointError, match=r"trained for \d+ identities, but the training split has 999"):
        model_from_checkpoint(state, expect_num_classes=999)
    from fmn_core.models import FeatureMaskNetwork

    with pytest.raises(CheckpointError, match="does not fit this network"):
        load_weights(FeatureMaskNetwork(state["num_classes"], arch="resnet34", input_size=(64, 32)), state["model"])


def test_stage2_refuses_an_unfinished_or_foreign_grn(trained, tiny_table, tmp_path):
    config, first, second, _ = trained
    with pytest.raises(CheckpointError, match="not a finished stage-1"):
        train_stage2(tiny_table, config, second.checkpoint, tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="input_height=64 but stage 2 is configured with input_height=128"):
        train_stage2(tiny_table, config.replace(input_height=128), first.checkpoint, tmp_path, progress=False)


class Crash(RuntimeError):
    pass


def _crash_after(epoch_to_crash: int, stage: int):
    def callback(current_stage: int, epoch: int, _: dict) -> None:
        if current_stage == stage and epoch == epoch_to_crash:
            raise Crash(f"killed after epoch {epoch}")
    return callback


#: every re-ID option on: their state (warmup + cosine schedule, AdamW moments, P x K plans, erasing draws, the necks'
#: statistics) must resume exactly too
OPTIONS = dict(random_erasing=0.5, label_smoothing=0.1, warmup_epochs=1, lr_schedule="cosine", optimizer="adamw",
               bn_neck=True, triplet_weight=1.0, instances_per_identity=4, stage1_lr=3e-4, stage2_lr=3e-4)


@pytest.mark.parametrize("options", [{}, OPTIONS], ids=["paper_options", "re_id_options"])
def test_resumed_training_matches_an_uninterrupted_run(tiny_table, tmp_path, options):
    config = preset("cpu", stage1_epochs=3, stage1_lr_drop_epoch=2, stage2_epochs=2, stage2_lr_drop_epoch=1,
                    **{**FAST, **options})
    straight = tmp_path / "straight"
    s1 = train_stage1(tiny_table, config, straight, progress=False)
    s2 = train_stage2(tiny_table, config, s1.checkpoint, straight, progress=False)

    broken = tmp_path / "broken"
    with pytest.raises(Crash):
        train_stage1(tiny_table, config, broken, progress=False, on_epoch_end=_crash_after(2, 1))
    assert (broken / "grn.partial.pt").is_file() and not (broken / "grn.pt").exists()
    r1 = train_stage1(tiny_table, config, broken, progress=False)
    assert r1.resumed_from_epoch == 2 and not (broken / "grn.partial.pt").exists()
    with pytest.raises(Crash):
        train_stage2(tiny_table, config, r1.checkpoint, broken, progress=False, on_epoch_end=_crash_after(1, 2))
    r2 = train_stage2(tiny_table, config, r1.checkpoint, broken, progress=False)
    assert r2.resumed_from_epoch == 1

    for a, b in [(s1, r1), (s2, r2)]:
        wa, wb = load_checkpoint(a.checkpoint)["model"], load_checkpoint(b.checkpoint)["model"]
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), key
        assert [row["loss"] for row in a.history] == [row["loss"] for row in b.history]


def test_partial_checkpoint_from_other_settings_is_not_resumed(tiny_table, tmp_path):
    config = preset("cpu", stage1_epochs=2, stage1_lr_drop_epoch=1, **FAST)
    with pytest.raises(Crash):
        train_stage1(tiny_table, config, tmp_path, progress=False, on_epoch_end=_crash_after(1, 1))
    result = train_stage1(tiny_table, config.replace(seed=5), tmp_path, progress=False)
    assert result.resumed_from_epoch == 0
    (tmp_path / "grn.partial.pt").write_bytes(b"corrupt")
    assert train_stage1(tiny_table, config.replace(stage1_epochs=1), tmp_path, progress=False).resumed_from_epoch == 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="masked_layer='res7'"):
        preset("cpu", masked_layer="res7")
    with pytest.raises(ValueError, match=r"unknown training option\(s\) \['lr'\]"):
        preset("cpu", lr=0.1)
    with pytest.raises(ValueError, match="batch_size=0"):
        preset("paper", batch_size=0)
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        preset("fast")


def test_masks_differ_between_images_and_the_diagnostics_see_it(trained, tiny_table):
    from fmn_core.models.mixing import mask_collapse_reasons

    _, _, second, _ = trained
    state = load_checkpoint(second.checkpoint)
    diagnostics = state["diagnostics"]["mask"]
    assert diagnostics == second.diagnostics and diagnostics["images"] >= 2
    assert mask_collapse_reasons(diagnostics) == [], diagnostics
    model = model_from_checkpoint(state).eval()
    images = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        masks = model(images).mask
    assert masks.shape == (4, *model.mixing.mask_size)
    assert not torch.allclose(masks[0], masks[1]) and not torch.allclose(masks[2], masks[3])


def test_a_constant_mask_counts_as_collapsed(trained, tiny_table, tmp_path):
    from fmn_core.models.mixing import mask_collapse_reasons

    config, first, _, _ = trained
    result = train_stage2(tiny_table, config.replace(stage2_epochs=1, mask_mode="constant"), first.checkpoint,
                          tmp_path, progress=False)
    assert result.diagnostics["variation_across_images"] == 0.0 and result.diagnostics["mean"] == 1.0
    assert any("hardly changes" in reason for reason in mask_collapse_reasons(result.diagnostics))


def test_lan_can_start_from_the_fine_tuned_grn(trained, tiny_table):
    config, first, _, _ = trained
    grn_state = load_checkpoint(first.checkpoint)
    num_classes = grn_state["num_classes"]
    from_o = stage2_model(grn_state, config, num_classes, "grn.pt")
    from_grn = stage2_model(grn_state, config.replace(lan_init="grn"), num_classes, "grn.pt")
    name = next(iter(from_grn.lan_stages.state_dict()))
    assert torch.equal(from_grn.lan_stages.state_dict()[name], from_grn.grn_stages.state_dict()[name])
    assert not torch.equal(from_o.lan_stages.state_dict()[name], from_o.grn_stages.state_dict()[name])
