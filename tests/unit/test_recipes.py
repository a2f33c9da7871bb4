"""Recipes as files: the packaged ones, bases, the configuration written beside a checkpoint, typed overrides."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from fmn_core.engine import RECIPES, TrainConfig, load_recipe, parse_overrides, recipe_names, save_config
from fmn_core.engine.config import STAGES, StageSettings
from fmn_core.engine.recipes import RECIPES_DIR, recipe_changes
from fmn_core.utils.errors import FMNInputError


def test_the_packaged_recipes_are_the_paper_the_cpu_demo_the_real_data_recipe_and_the_ablation_rows():
    assert recipe_names() == ["ablation/constant_mask", "ablation/lan_from_grn", "ablation/no_rank", "cpu", "cpu_reid",
                              "paper"]
    paper = load_recipe("paper")
    # section 4.2 as stated: ResNet-50 from ImageNet, SGD momentum 0.9, lr 0.1 -> 0.01 after 20 / 35 epochs, alpha 0.5,
    # the mask at Pool1 of a 224x224 input (Table 5's 56x56 mask)
    assert (paper.arch, paper.pretrained, paper.masked_layer, paper.input_size) == ("resnet50", "imagenet", "pool1",
                                                                                    (224, 224))
    assert (paper.momentum, paper.stage1_lr, paper.stage1_lr_drop_epoch, paper.stage2_lr_drop_epoch, paper.lr_gamma,
            paper.alpha) == (0.9, 0.1, 20, 35, 0.1, 0.5)
    cpu = load_recipe("cpu")
    assert (cpu.arch, cpu.input_size, cpu.masked_layer) == ("efficientnet_lite0", (128, 64), "res2")
    reid = load_recipe("cpu_reid")  # the cpu recipe with the bag of tricks at 160x64; the paper's keeps them off
    assert {k for k, v in reid.to_dict().items() if v != cpu.to_dict()[k]} == {
        "input_height", "stage1_epochs", "stage2_epochs", "bn_neck", "label_smoothing", "random_erasing",
        "triplet_weight", "instances_per_identity", "warmup_epochs", "lr_schedule"}
    assert (reid.input_size, reid.lr_schedule, reid.bn_neck) == ((160, 64), "cosine", True)
    assert (paper.bn_neck, paper.label_smoothing, paper.random_erasing, paper.triplet_weight) == (False, 0.0, 0.0, 0.0)
    assert {"paper": paper, "cpu": cpu, "cpu_reid": reid} == RECIPES
    for row, change in (("no_rank", {"rank_weight": 0.0}), ("lan_from_grn", {"lan_init": "grn"}),
                        ("constant_mask", {"mask_mode": "constant"})):
        recipe = load_recipe(f"ablation/{row}")
        differs = {k: v for k, v in recipe.to_dict().items() if v != cpu.to_dict()[k]}
        assert differs == change == recipe_changes(f"ablation/{row}"), row


def test_a_recipe_file_changes_its_base_and_overrides_change_the_recipe(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: cpu\nbatch_size: 16\nstage1_lr: 1\n")  # an int is taken for a float
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "longer.yaml").write_text("base: ../mine.yaml\nstage1_epochs: 12\n")
    config = load_recipe(tmp_path / "sub" / "longer.yaml", seed=3)
    assert (config.arch, config.batch_size, config.stage1_lr, config.stage1_epochs, config.seed) == (
        "efficientnet_lite0", 16, 1.0, 12, 3)
    assert type(config.stage1_lr) is float


@pytest.mark.parametrize(("text", "expected"), [
    ("base: cpu\nbatch_sise: 16\n", r"unknown training option\(s\) \['batch_sise'\]"),
    ("base: cpu\nbatch_size: sixteen\n", "batch_size='sixteen': expected an integer"),
    ("base: cpu\nnormalize_global: 1\n", "normalize_global=1: expected true or false"),
    ("base: nope\n", "unknown recipe 'nope': expected one of"),
    ("base: loop.yaml\n", "is its own base"),
    ("- a list\n", "expected a mapping of training options, got list"),
    ("base: cpu\nalpha: [0.5\n", "is not valid YAML"),
])
def test_a_bad_recipe_file_is_refused_naming_the_file_and_the_field(tmp_path, text, expected):
    path = tmp_path / "loop.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected) as error:
        load_recipe(path)
    assert "loop.yaml" in str(error.value)
    assert path.read_text() == text  # never rewritten


def test_the_configuration_written_beside_a_checkpoint_is_a_recipe_of_the_same_run(tmp_path):
    config = load_recipe("cpu", seed=7, channels_last=None, stage2_epochs=3)
    written = save_config(config, tmp_path / "grn.config.yaml")
    assert yaml.safe_load(written.read_text())["seed"] == 7  # every field, readable
    assert load_recipe(written) == config
    assert not list(tmp_path.glob("*.tmp*"))


def test_overrides_are_parsed_with_the_field_types():
    parsed = parse_overrides(["batch_size=64", "alpha=0.3", "channels_last=none", "mask_mean_one=yes", "amp=bf16"])
    assert parsed == {"batch_size": 64, "alpha": 0.3, "channels_last": None, "mask_mean_one": True, "amp": "bf16"}
    assert TrainConfig(**parsed).validate()
    for pair, expected in (("batch_size=1.5", "batch_size takes an integer"), ("alpha=high", "alpha takes a number"),
                           ("mask_mean_one=maybe", "takes true or false"), ("channels_last=2", "or none"),
                           ("lr=0.1", "unknown option 'lr'"), ("batch_size", "expects name=value")):
        with pytest.raises(ValueError, match=expected):
            parse_overrides([pair])


def test_every_field_has_a_type_the_recipes_can_hold():
    """A new TrainConfig field of another type would need a reader: fail here, not in a user's run."""
    for field in dataclasses.fields(TrainConfig):
        value = getattr(load_recipe("paper"), field.name)
        assert yaml.safe_load(yaml.safe_dump(value)) == value, field.name
    assert all(path.suffix == ".yaml" for path in RECIPES_DIR.rglob("*") if path.is_file())


def test_each_stage_reads_its_own_epochs_rate_and_drop_and_names_their_fields():
    config = TrainConfig().replace(stage1_epochs=3, stage1_lr=0.2, stage1_lr_drop_epoch=2, stage2_epochs=5,
                                   stage2_lr=0.04, stage2_lr_drop_epoch=4)
    assert config.stage(1) == StageSettings(1, 3, 0.2, 2) and config.stage(2) == StageSettings(2, 5, 0.04, 4)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for stage in STAGES:
        settings = config.stage(stage)
        named = (settings.epochs_field, settings.lr_field, settings.lr_drop_epoch_field)
        assert set(named) <= fields  # the names are real fields, holding the values
        assert tuple(getattr(config, name) for name in named) == (settings.epochs, settings.lr, settings.lr_drop_epoch)
    with pytest.raises(FMNInputError, match=r"stage 3: expected one of \(1, 2\)"):
        config.stage(3)
    with pytest.raises(FMNInputError, match="stage2_epochs=0: the step trains at least 1 epoch"):
        config.replace(stage2_epochs=0).require_epochs(2, "the step")


def test_the_dataclass_defaults_are_the_papers_recipe():
    """One home for the paper's recipe: TrainConfig's defaults; paper.yaml names it without repeating a value."""
    assert load_recipe("paper") == TrainConfig()
    assert yaml.safe_load((RECIPES_DIR / "paper.yaml").read_text()) == {}
    # section 4.2 / Table 5: ResNet-50 masked at Pool1 of a 224x224 input is a 56x56 mask
    assert (TrainConfig().arch, TrainConfig().masked_layer, TrainConfig().input_size) == ("resnet50", "pool1",
                                                                                          (224, 224))


#: load_recipe("cpu").to_dict() as recorded at commit 9e31d8c, before the paper's values moved from paper.yaml into
#: the dataclass defaults: the CPU demo must train exactly as it did.
CPU_BEFORE_THE_MOVE = {
    'alpha': 0.5,
    'amp': 'auto',
    'arch': 'efficientnet_lite0',
    'batch_size': 32,
    'bn_neck': False,
    'channels_last': None,
    'checkpoint_every': 1,
    'crop_pad': 6,
    'decode_workers': 0,
    'device': 'auto',
    'flip_prob': 0.5,
    'input_height': 128,
    'input_width': 64,
    'instances_per_identity': 0,
    'label_smoothing': 0.0,
    'lan_init': 'theta_o',
    'log_mask_max': 1.0,
    'lr_gamma': 0.1,
    'lr_schedule': 'step',
    'margin': 0.1,
    'mask_cell': 1,
    'mask_lr_scale': 0.1,
    'mask_mean_one': False,
    'mask_form': 'amplify',  # added after the move (the signed-mask study); the default keeps the paper's form
    'mask_mode': 'learned',
    'masked_layer': 'res2',
    'momentum': 0.9,
    'normalize_global': True,
    'optimizer': 'sgd',
    'pretrained': 'imagenet',
    'random_erasing': 0.0,
    'rank_weight': 1.0,
    'seed': 0,
    'stage1_epochs': 8,
    'stage1_lr': 0.05,
    'stage1_lr_drop_epoch': 6,
    'stage2_epochs': 8,
    'stage2_lr': 0.05,
    'stage2_lr_drop_epoch': 6,
    'triplet_margin': 0.3,
    'triplet_weight': 0.0,
    'warmup_epochs': 0,
    'weight_decay': 0.0005,
}


def test_the_cpu_recipe_resolves_as_before_the_paper_values_moved():
    assert load_recipe("cpu").to_dict() == CPU_BEFORE_THE_MOVE
