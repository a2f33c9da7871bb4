"""Run configuration, one ``Config`` class per stage, editable in the launchpad.

Choices are enums, so a wrong value is refused by Dagster's config check
before the run starts. Training takes a recipe (``cpu``: the CPU demo; ``paper``:
ResNet-50 at section 4.2's settings; a row of fmn_core/configs/ablation; any YAML
file) plus ``overrides``, every TrainConfig field under its own name; enums and
types come from fmn_core, and ``TrainConfig.from_dict`` validates the result.
"""

import dataclasses
import shutil
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, ValidationError, create_model, model_validator

from fmn_assets.execution.launchers import Launcher, torchrun_command
from fmn_assets.promotion import DEFAULT_COMPARED, DEFAULT_TOLERANCE, SCORE_METRICS, SCORE_ROWS, parse_compared
from fmn_core.data.synthetic import SYNTHETIC_PRESETS
from fmn_core.engine.config import (
    AMP_MODES,
    FIELD_TYPES,
    LAN_INITS,
    LR_SCHEDULES,
    MASK_MODES,
    OPTIMIZERS,
    TrainConfig,
)
from fmn_core.engine.recipes import load_recipe, recipe_names
from fmn_core.models.backbone import ARCHITECTURES, LITE_MASKABLE_LAYERS, MASKABLE_LAYERS
from fmn_core.models.mixing import MASK_FORMS
from fmn_core.retrieval.descriptors import DESCRIPTOR_KINDS
from fmn_core.retrieval.reranking import K1, K2, LAMBDA_VALUE
from fmn_core.utils.device import DEVICE_CHOICES, device_spelling_problem
from fmn_core.utils.errors import FMNInputError


def _choices(name: str, values) -> type[StrEnum]:
    """An enum of the core's own constants, so a wrong value is refused in the launchpad before the run."""
    return StrEnum(name, {value: value for value in sorted(values)})


def validation_text(exc: ValidationError) -> str:
    """pydantic's errors as ``field=value: what is wrong`` lines joined by '; ' (no URLs, no model dump)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        given = f"={error['input']!r}" if "input" in error and not isinstance(error["input"], dict) else ""
        parts.append(f"{where}{given}: {error['msg']}")
    return "; ".join(parts)


class StepConfig(dg.Config):
    """Base of every stage's config: a value out of range fails the step at once, naming the field, and is not
    retried (pydantic checks ranges when the step builds its config, after Dagster's own check of names and
    types; the training steps' retry policy would otherwise run a config error three times)."""

    @model_validator(mode="wrap")
    @classmethod
    def _refused_without_retry(cls, values: Any, handler: Any) -> Any:
        try:
            return handler(values)
        except ValidationError as exc:
            raise dg.Failure(description=f"{cls.__name__}: {validation_text(exc)}", allow_retries=False) from None

    def problems(self) -> list[str]:
        """What makes this config unusable beyond its fields' ranges (a recipe, a launcher); [] when nothing."""
        return []


#: The synthetic generator's presets (fmn_core.data.synthetic.SYNTHETIC_PRESETS); 'small' is the main job's.
SyntheticPreset = _choices("SyntheticPreset", SYNTHETIC_PRESETS)
DEFAULT_SYNTHETIC_PRESET = "small"


class ImageCheckMode(StrEnum):
    none = "none"
    header = "header"
    decode = "decode"


class DatasetSplitsConfig(StepConfig):
    """How the dataset of the partition is found and read."""

    root: str = Field("", description="dataset folder (custom: the manifest CSV); empty = data/<partition>")
    check_images: ImageCheckMode = Field(ImageCheckMode.header, description="how the reader checks image files")
    strict: bool = Field(True, description="fail on dataset errors (train/test overlap, empty split)")
    split_id: int = Field(0, ge=0, description="cuhk01 only: 0 = the fixed sorted 485/486 split, 1.. = seeded "
                                               "random splits")
    synthetic_preset: SyntheticPreset | None = Field(
        None, description="synthetic only: generate this preset into the dataset folder first (an identical dataset "
                          "there is reused, another generated one replaced); empty: use the dataset that is there, "
                          f"generating '{DEFAULT_SYNTHETIC_PRESET}' when the folder does not exist")
    synthetic_seed: int = Field(0, ge=0, description="synthetic only, with synthetic_preset: the generator's seed")

    def problems(self) -> list[str]:
        if self.root and not Path(self.root).expanduser().exists():
            return [f"root={self.root!r}: no such file or folder (the dataset folder, or a custom manifest CSV)"]
        return []


#: Options with a fixed set of values, from the constants fmn_core validates against.
TRAINING_CHOICES: dict[str, type[StrEnum]] = {
    "arch": _choices("Backbone", ARCHITECTURES),
    "masked_layer": _choices("MaskedLayer", {*MASKABLE_LAYERS, *LITE_MASKABLE_LAYERS}),
    "mask_mode": _choices("MaskMode", MASK_MODES),
    "mask_form": _choices("MaskForm", MASK_FORMS),
    "lan_init": _choices("LanInit", LAN_INITS),
    "amp": _choices("AmpMode", AMP_MODES),
    "lr_schedule": _choices("LrSchedule", LR_SCHEDULES),
    "optimizer": _choices("Optimizer", OPTIMIZERS),
}

#: Every TrainConfig field, optional: the launchpad's form of ``fmn train-stage1 --set NAME=VALUE``. Built from the
#: dataclass, so a new training option appears here without being written again.
TrainingOverrides: type[dg.Config] = create_model(
    "TrainingOverrides", __base__=dg.Config, __module__=__name__,
    __doc__="Training options that replace the recipe's (any TrainConfig field, fmn_core/engine/config.py).",
    **{field.name: (TRAINING_CHOICES.get(field.name, FIELD_TYPES[field.name]) | None, None)
       for field in dataclasses.fields(TrainConfig)})


def _changes(overrides: dg.Config) -> dict:
    return {name: value.value if isinstance(value, Enum) else value
            for name, value in overrides.model_dump(exclude_none=True).items()}


class DistributedTraining(StepConfig):
    """Where a stage trains: one process (default), torchrun on this host, or torchrun across nodes."""

    processes: int = Field(1, ge=1, description="more than 1: DistributedDataParallel through torchrun, this many "
                                                "processes per node (one per GPU)")
    nodes: int = Field(1, ge=1, description="more than 1: torchrun on this many nodes (c10d rendezvous), started "
                                            "by `launcher`; every node sees the same project folder")
    launcher: Launcher = Field(Launcher.local, description="local: this host only; srun: Slurm starts one torchrun "
                                                           "per node; command: launch_command does")
    launch_command: list[str] = Field([], description="srun: extra srun options (e.g. [--partition=gpu]); command: "
                                                      "the prefix that starts its argument once per node")
    rendezvous: str = Field("", description="host[:port] of the c10d rendezvous on one node (srun: empty = the "
                                            "allocation's first node)")

    def problems(self) -> list[str]:
        return self.launch_problems()

    def launch_problems(self) -> list[str]:
        """A launcher that cannot start: a missing launch_command or rendezvous, or a program not on this PATH."""
        try:
            command = torchrun_command("torchrun", [], self.processes, self.nodes, self.launcher, self.launch_command,
                                       self.rendezvous)
        except ValueError as exc:
            return [str(exc)]
        program = command[0]
        if program != "torchrun" and shutil.which(program) is None:
            return [f"{'launch_command' if self.launcher is Launcher.command else 'launcher: srun'}: {program!r} is "
                    "not a program on this host's PATH; no training was started"]
        return []


RECIPE_HELP = (f"a recipe name ({', '.join(recipe_names())}) or a YAML recipe file; see fmn_core/configs")


class GRNTrainingConfig(DistributedTraining):
    """Stage 1 (Algorithm 1, lines 1-2): fine-tune the GRN with a recipe, some options changed."""

    recipe: str = Field("cpu", description=RECIPE_HELP)
    overrides: TrainingOverrides = Field(default_factory=TrainingOverrides,
                                         description="options that replace the recipe's, e.g. stage1_epochs: 2")

    def train_config(self) -> TrainConfig:
        """The full training configuration (both stages' fields) this run trains the GRN with."""
        return load_recipe(self.recipe, **_changes(self.overrides))

    def problems(self) -> list[str]:
        try:
            self.train_config().require_epochs(1, "grn_checkpoint")
        except FMNInputError as exc:
            return [str(exc), *self.launch_problems()]
        return self.launch_problems()


class FMNTrainingConfig(DistributedTraining):
    """Stage 2 (Algorithm 1, line 3): train MN + LAN on the frozen GRN.

    Without a recipe, the GRN checkpoint's configuration is the base, so the two stages always agree.
    """

    recipe: str = Field("", description="empty: the GRN checkpoint's configuration; else " + RECIPE_HELP +
                                        " (it must agree with the GRN on backbone and input size)")
    overrides: TrainingOverrides = Field(default_factory=TrainingOverrides,
                                         description="options that replace the base's, e.g. mask_mode: constant")

    def train_config(self, grn_config: TrainConfig) -> TrainConfig:
        # a recipe of its own keeps the run's seed and device from the GRN (a seed study sets them there)
        base = load_recipe(self.recipe, seed=grn_config.seed, device=grn_config.device) if self.recipe else grn_config
        return base.replace(**_changes(self.overrides))

    def problems_with(self, grn_config: TrainConfig | None) -> list[str]:
        """Like ``problems``, with the training configuration checked when the GRN's is known."""
        try:
            if grn_config is not None:
                self.train_config(grn_config).require_epochs(2, "fmn_checkpoint")
            elif self.recipe:
                load_recipe(self.recipe, **_changes(self.overrides)).require_epochs(2, "fmn_checkpoint")
        except FMNInputError as exc:
            return [str(exc), *self.launch_problems()]
        return self.launch_problems()


class DescriptorConfig(StepConfig):
    """Descriptor extraction (section 3.4)."""

    batch_size: int = Field(256, ge=1)
    flip: bool = Field(False, description="average with the mirrored image's features (not in the paper)")
    device: str = Field("auto", description=DEVICE_CHOICES)

    def problems(self) -> list[str]:
        problem = device_spelling_problem("device", self.device)
        return [problem] if problem else []


class EvaluationConfig(StepConfig):
    """Evaluation and re-ranking (sections 3.5 and 4.2)."""

    rerank: bool = True
    k1: int = Field(K1, ge=1, description="k-reciprocal neighbourhood size")
    k2: int = Field(K2, ge=1, description="query-expansion neighbourhood size (at most k1)")
    lambda_value: float = Field(LAMBDA_VALUE, ge=0, le=1, description="weight of the original distance")
    max_rank: int = Field(50, ge=1)
    ranked_list_queries: int = Field(4, ge=1, le=50, description="queries shown in the ranked-list picture")
    heatmap_images: int = Field(8, ge=1, le=64, description="images shown in the mask / activation picture")

    def problems(self) -> list[str]:
        return [f"k2={self.k2}: must be at most k1={self.k1}"] if self.k2 > self.k1 else []


class OnnxExportConfig(StepConfig):
    """The ONNX export and its parity check against PyTorch."""

    opset: int = Field(18, ge=18, description="ONNX opset (18 or newer, up to what the installed onnx knows)")
    dynamic_batch: bool = Field(True, description="accept any batch size (false: batches of exactly 1)")
    outputs: list[str] = Field(["fmn", "grn", "lan"], description="descriptors in the graph, from fmn (eq. 6), grn "
                                                                  "and lan; anything else fails the step")
    tolerance: float = Field(1e-4, ge=0, allow_inf_nan=False,
                             description="largest allowed |onnxruntime - PyTorch| per descriptor value")
    parity_queries: int = Field(8, ge=1, le=256, description="query images of the dataset used in the parity check")
    parity_gallery: int = Field(24, ge=2, le=1024, description="gallery images of the dataset used in the parity check")

    def problems(self) -> list[str]:
        unknown = [name for name in self.outputs if name not in DESCRIPTOR_KINDS]
        if unknown or not self.outputs:
            return [f"outputs={self.outputs}: expected a non-empty list of {', '.join(DESCRIPTOR_KINDS)}"]
        return []


class DeploymentAction(StrEnum):
    auto = "auto"
    promote = "promote"
    rollback = "rollback"


class DeploymentConfig(StepConfig):
    """The promotion gate: which model the partition deploys (the champion), and the operator's overrides."""

    action: DeploymentAction = Field(DeploymentAction.auto, description=(
        "auto: the latest trained model (the challenger) replaces the deployed one only if it is not worse on the "
        "compared scores by more than the tolerance; promote: deploy a candidate by hand; rollback: deploy an "
        "earlier champion again. Both by hand need a reason"))
    compare: list[str] = Field(list(DEFAULT_COMPARED), description=(
        "scores compared on the same split table, as ROW.METRIC: ROW one of " + ", ".join(SCORE_ROWS)
        + "; METRIC one of " + ", ".join(SCORE_METRICS)))
    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0, le=100, allow_inf_nan=False,
                             description="points (of 100) a challenger may lose on a compared score and be promoted")
    candidate: str = Field("", description="promote: the md5 of the fmn.pt to deploy (a challenger in the "
                                           "history); empty: the latest trained")
    rollback_to: str = Field("", description="rollback: the md5 of an earlier champion's fmn.pt; empty: the one "
                                             "deployed before the current one")
    operator: str = Field("", description="who decided (recorded with the decision; empty: the user running it)")
    reason: str = Field("", description="why (required for promote and rollback; recorded with the decision)")
    flip: bool = Field(False, description="descriptors averaged with the mirrored image (as descriptor_tables' flip)")

    def problems(self) -> list[str]:
        found = []
        try:
            parse_compared(self.compare)
        except ValueError as exc:
            found.append(str(exc))
        if self.action is not DeploymentAction.auto and not self.reason.strip():
            found.append(f"action={self.action.value} needs a reason (recorded with the decision)")
        return found


class ModelCardConfig(StepConfig):
    """What only a person can add to the model card."""

    contact: str = Field("", description="who answers questions about this model (added to the card when set)")
