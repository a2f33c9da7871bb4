"""Training configuration: every hyper-parameter of section 4.2; the defaults are the paper's recipe.

What the paper states is used as stated: SGD with momentum 0.9, learning rate
0.1 dropping to 0.01 after 20 epochs (stage 1, the GRN) and after 35 epochs
(stage 2, MN + LAN), flip + crop augmentation, alpha = 0.5, ResNet-50
initialised from ImageNet, masking at Pool1 (a 56x56 mask, so 224x224 input).

What it leaves open is a parameter, with these defaults: total epochs (30 and
45: "until the network converges"), batch size 32, weight decay 5e-4, a
single learning-rate drop (x0.1), the ranking margin m = 0.1 and its weight 1,
crop by 10-pixel padding, no dropout, the LAN initialised from the GRN's
starting weights (theta_o, Algorithm 1) rather than from the fine-tuned GRN.

Beyond the paper, the options every re-ID practitioner expects (random erasing,
label smoothing, warmup and a cosine schedule, AdamW, BNNeck, a batch-hard
triplet loss with P x K identity batches) are fields too, all off by default:
the ``paper`` and ``cpu`` recipes train exactly as without them.

This dataclass is the one schema of a training run, and its defaults are the
one home of the paper's recipe: ``TrainConfig()`` is what ``paper`` resolves to.
The recipes that fill it (``paper``, ``cpu``, one file per ablation row) are YAML
files in ``fmn_core/configs``, read by ``fmn_core.engine.recipes``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from fmn_core.models.backbone import ARCHITECTURES, maskable_layers
from fmn_core.models.mixing import MASK_FORMS
from fmn_core.utils.device import device_spelling_problem
from fmn_core.utils.errors import FMNInputError

AMP_MODES = ("auto", "none", "bf16", "fp16")
MASK_MODES = ("learned", "constant")
LAN_INITS = ("theta_o", "grn")
LR_SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adamw")
#: Algorithm 1's two stages: 1 fine-tunes the GRN, 2 trains the MN and LAN on the frozen GRN.
STAGES = (1, 2)


@dataclass(frozen=True)
class StageSettings:
    """What one stage trains with: the three settings the stages do not share, and the fields that hold them.

    :meth:`TrainConfig.stage` is the one place that maps a stage to its fields, so the trainer, the CLI and the
    orchestrators cannot pick different ones; the field names are for messages that tell a user what to change.
    """

    stage: int
    epochs: int
    lr: float
    lr_drop_epoch: int

    @staticmethod
    def field_name(stage: int, setting: str) -> str:
        """The TrainConfig field of ``setting`` ('epochs', 'lr' or 'lr_drop_epoch') for ``stage``."""
        return f"stage{stage}_{setting}"

    @property
    def epochs_field(self) -> str:
        return self.field_name(self.stage, "epochs")

    @property
    def lr_field(self) -> str:
        return self.field_name(self.stage, "lr")

    @property
    def lr_drop_epoch_field(self) -> str:
        return self.field_name(self.stage, "lr_drop_epoch")


@dataclass
class TrainConfig:
    """Hyper-parameters of both training stages (Algorithm 1)."""

    arch: str = "resnet50"
    pretrained: str = "imagenet"  # 'imagenet' (torch cache only), 'none', or a .pth path
    masked_layer: str = "pool1"
    input_height: int = 224  # Table 5: Pool1 of a 224x224 input gives the 56x56 mask
    input_width: int = 224
    batch_size: int = 32
    stage1_epochs: int = 30
    stage1_lr: float = 0.1
    stage1_lr_drop_epoch: int = 20
    stage2_epochs: int = 45
    stage2_lr: float = 0.1
    stage2_lr_drop_epoch: int = 35
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    margin: float = 0.1
    rank_weight: float = 1.0
    alpha: float = 0.5
    flip_prob: float = 0.5
    crop_pad: int = 10
    log_mask_max: float = 1.0  # B of the bounded mask exp(B tanh(ReLU(z)/B)): a mask in [1, e^B]
    normalize_global: bool = True  # standardise g before the MN's FC (see fmn_core.models.mixing)
    mask_lr_scale: float = 0.1  # the MN learns at this fraction of the stage-2 learning rate
    mask_cell: int = 1  # the MN predicts one value per cell x cell block of the mask (1: every position)
    mask_mean_one: bool = False  # divide each mask by its spatial mean: attention moves, it does not amplify
    mask_form: str = "amplify"  # eq. (1)-(2)'s [1, e^B]; 'signed': [e^-B, e^B], a mask that can also suppress
    mask_mode: str = "learned"  # 'constant': mask = 1, the control without the MN
    lan_init: str = "theta_o"  # Algorithm 1; 'grn' starts the LAN from the fine-tuned GRN (an ablation)
    # Not in the paper, all off by default; each applies to both stages and leaves eq. 1-6 as they are.
    random_erasing: float = 0.0  # probability per image of erasing a random box (Zhong et al.; data.loading)
    label_smoothing: float = 0.0  # of the identity cross-entropy (eq. 4); eq. 5 keeps the plain softmax
    warmup_epochs: int = 0  # linear warmup, stepped per epoch, from WARMUP_START_FACTOR of the stage's lr
    lr_schedule: str = "step"  # 'step': x lr_gamma at stageN_lr_drop_epoch; 'cosine': to 0 by the stage's end
    optimizer: str = "sgd"  # 'sgd' with momentum (the paper's); 'adamw' (torch defaults, weight_decay; no momentum)
    bn_neck: bool = False  # BNNeck: BatchNorm1d between g / l and their (bias-free) identity classifiers
    triplet_weight: float = 0.0  # batch-hard triplet loss on g (stage 1) / l (stage 2), added to the CE
    triplet_margin: float = 0.3  # its margin, in Euclidean distance between the un-normalised features
    instances_per_identity: int = 0  # K > 0: P x K batches, P = batch_size / K identities (0: random batches)
    seed: int = 0
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', ...
    amp: str = "auto"  # 'auto' = bf16 on CUDA, none on CPU
    channels_last: bool | None = None  # None = on for CUDA
    checkpoint_every: int = 1
    decode_workers: int = 0  # 0 = one per CPU, at most 8

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    def validate(self) -> TrainConfig:
        """Raise ValueError naming every field whose value cannot work."""
        wrong_type = [f"{name}={value!r}: expected {_describe(FIELD_TYPES[name])}" for name, value in
                      self.to_dict().items() if not _has_type(value, FIELD_TYPES[name])]
        if wrong_type:  # the range checks below would fail on a wrong type with a TypeError instead
            raise FMNInputError("invalid training configuration: " + "; ".join(wrong_type))
        problems = [f"{f.name}={getattr(self, f.name)}: must be a finite number" for f in dataclasses.fields(self)
                    if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        problems += [problem for name in FIELD_LIMITS if (problem := limit_problem(name, getattr(self, name)))]
        if self.arch not in ARCHITECTURES:
            problems.append(f"arch={self.arch!r}: expected one of {sorted(ARCHITECTURES)}")
        elif self.masked_layer not in maskable_layers(self.arch):
            problems.append(f"masked_layer={self.masked_layer!r}: expected one of "
                            f"{sorted(maskable_layers(self.arch))} for {self.arch}")
        if self.mask_form not in MASK_FORMS:
            problems.append(f"mask_form={self.mask_form!r}: expected one of {MASK_FORMS}")
        if self.mask_mode not in MASK_MODES:
            problems.append(f"mask_mode={self.mask_mode!r}: expected one of {MASK_MODES}")
        if self.lan_init not in LAN_INITS:
            problems.append(f"lan_init={self.lan_init!r}: expected one of {LAN_INITS}")
        if self.amp not in AMP_MODES:
            problems.append(f"amp={self.amp!r}: expected one of {AMP_MODES}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule={self.lr_schedule!r}: expected one of {LR_SCHEDULES}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r}: expected one of {OPTIMIZERS}")
        problems += self._option_problems()
        if 2 * self.crop_pad >= min(self.input_height, self.input_width):
            problems.append(f"crop_pad={self.crop_pad}: must be below half the smaller input side "
                            f"({min(self.input_height, self.input_width)} pixels)")
        if device_spelling_problem("device", self.device):
            problems.append(device_spelling_problem("device", self.device))
        if problems:
            raise FMNInputError("invalid training configuration: " + "; ".join(problems))
        return self

    def _option_problems(self) -> list[str]:
        """Combinations of the re-ID options that cannot work, each naming both fields."""
        problems = []
        if self.instances_per_identity > 0 and self.batch_size % self.instances_per_identity:
            problems.append(f"batch_size={self.batch_size} is not a multiple of instances_per_identity="
                            f"{self.instances_per_identity}: a P x K batch holds P identities of K images each")
        if self.triplet_weight > 0 and self.instances_per_identity < 2:
            problems.append(f"triplet_weight={self.triplet_weight} needs instances_per_identity of at least 2, got "
                            f"{self.instances_per_identity}: batch-hard mining needs two images of each identity in "
                            "every batch")
        if self.bn_neck and self.batch_size < 2:
            problems.append(f"bn_neck=True needs batch_size of at least 2, got {self.batch_size}: BatchNorm "
                            "cannot normalise a batch of one")
        if self.warmup_epochs > 0 and self.lr_schedule == "step":
            problems += [f"{s.lr_drop_epoch_field}={s.lr_drop_epoch}: must come after warmup_epochs="
                         f"{self.warmup_epochs} (lr_schedule='step' drops the rate after the warmup); use a later "
                         "drop or fewer warmup epochs" for s in map(self.stage, STAGES)
                         if s.lr_drop_epoch <= self.warmup_epochs]
        return problems

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stage(self, stage: int) -> StageSettings:
        """Epochs, learning rate and drop epoch of ``stage`` (1 or 2), with the fields they come from."""
        if stage not in STAGES:
            raise FMNInputError(f"stage {stage!r}: expected one of {STAGES}")
        values = [getattr(self, StageSettings.field_name(stage, setting))
                  for setting in ("epochs", "lr", "lr_drop_epoch")]
        return StageSettings(stage, *values)

    def require_epochs(self, stage: int, what: str = "a training") -> TrainConfig:
        """Refuse 0 epochs for ``stage``: an untrained network would be written as a finished checkpoint.

        ``validate`` allows 0 (an ablation wraps a GRN in an untrained stage 2); every training entry point
        (the CLI, the Dagster steps, a run's pre-flight check) asks this instead.
        """
        settings = self.stage(stage)
        if settings.epochs < 1:
            raise FMNInputError(f"{settings.epochs_field}={settings.epochs}: {what} trains at least 1 epoch")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (a recipe file, a checkpoint, an orchestrator's config), checking names and types.

        Unknown keys are refused (a typo should not be silently ignored); an integer is accepted for a float.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise FMNInputError(f"unknown training option(s) {unknown}; known options are {sorted(known)}")
        converted = {name: float(value) if FIELD_TYPES[name] is float and type(value) is int else value
                     for name, value in values.items()}
        return cls(**converted).validate()

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes})


#: The range of every numeric field: a value outside it is refused by ``validate`` naming the field, the value and
#: the range. The bounds are generous (the paper trains 30 + 45 epochs at batch 32), but finite: a recipe asking for
#: 10**22 epochs or a 100000-pixel input is a typo, not an experiment. 0 epochs is allowed here because
#: bench/ablation.py wraps a GRN in an untrained stage 2 to score it alone; training steps refuse it themselves.
#: ``(low, high, open_low)``: with ``open_low`` the low bound itself is excluded (a learning rate of 0 learns nothing).
FIELD_LIMITS: dict[str, tuple[float, float, bool]] = {
    "input_height": (32, 1024, False),
    "input_width": (32, 1024, False),
    "batch_size": (1, 4096, False),
    "stage1_epochs": (0, 1000, False),
    "stage2_epochs": (0, 1000, False),
    "stage1_lr": (0, 10, True),
    "stage2_lr": (0, 10, True),
    "stage1_lr_drop_epoch": (0, 1000, False),
    "stage2_lr_drop_epoch": (0, 1000, False),
    "lr_gamma": (0, 1, True),
    "momentum": (0, 1, False),
    "weight_decay": (0, 1, False),
    "margin": (0, 1, False),
    "rank_weight": (0, 100, False),
    "alpha": (0, 1, False),
    "flip_prob": (0, 1, False),
    "crop_pad": (0, 256, False),
    "log_mask_max": (0, 10, True),
    "mask_lr_scale": (0, 100, False),
    "mask_cell": (1, 1024, False),
    "seed": (0, 2**63 - 1, False),
    "checkpoint_every": (1, 1000, False),
    "decode_workers": (0, 256, False),
    "random_erasing": (0, 1, False),
    "label_smoothing": (0, 0.5, False),  # beyond 0.5 the true class would get less than half the target mass
    "warmup_epochs": (0, 1000, False),
    "triplet_weight": (0, 100, False),
    "triplet_margin": (0, 100, False),
    "instances_per_identity": (0, 4096, False),
}


def _bound(value: float) -> str:
    return "2**63-1" if value == 2**63 - 1 else f"{value:g}"


def limit_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is out of ``name``'s range (FIELD_LIMITS), or None when it is within it."""
    low, high, open_low = FIELD_LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None  # the type and finiteness checks speak for these
    if (value > low if open_low else value >= low) and value <= high:
        return None
    shown = f"{value:.4g}" if isinstance(value, int) and abs(value) > 10**6 else repr(value)
    interval = f"({_bound(low)}, {_bound(high)}]" if open_low else f"{_bound(low)}..{_bound(high)}"
    return f"{name}={shown}: must lie in {interval}"


#: Each field's real type (``typing.get_type_hints``: not the annotation strings of ``from __future__``).
FIELD_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)


def _alternatives(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _has_type(value: Any, hint: Any) -> bool:
    for kind in _alternatives(hint):
        if (kind is type(None) and value is None) or (kind is bool and isinstance(value, bool)):
            return True
        if kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
            return kind is float or isinstance(value, int)
        if kind is str and isinstance(value, str):
            return True
    return False


def _describe(hint: Any) -> str:
    words = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "none"}
    return " or ".join(words[kind] for kind in _alternatives(hint))


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _from_text(raw: str, hint: Any) -> Any:
    """One ``--set`` value as the field's type; ValueError when it is not one."""
    kinds, lowered = _alternatives(hint), raw.strip().lower()
    if type(None) in kinds and lowered in ("none", "auto"):
        return None
    if bool in kinds:
        if lowered in _TRUE + _FALSE:
            return lowered in _TRUE
        raise ValueError
    if int in kinds:
        return int(raw)
    if float in kinds:
        return float(raw)
    return raw


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["batch_size=64", "amp=none"]`` -> typed values, by the TrainConfig field types.

    A wrong name or a value of the wrong type is an error naming the option and what it takes.
    """
    out = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep:
            raise FMNInputError(f"--set expects name=value, got {pair!r}")
        if name not in FIELD_TYPES:
            raise FMNInputError(f"--set {pair}: unknown option {name!r}; the options are "
                                f"{', '.join(sorted(FIELD_TYPES))}")
        try:
            out[name] = _from_text(raw, FIELD_TYPES[name])
        except ValueError:
            raise FMNInputError(f"--set {pair}: {name} takes {_describe(FIELD_TYPES[name])}, got {raw!r}") from None
    return out
