"""Run configuration, one ``Config`` class per stage, editable in the launchpad.

Choices are enums, so a wrong value is refused by Dagster's config check
before the run starts. Training options left empty take the preset's value
(``cpu``: the CPU demo; ``paper``: ResNet-50 at section 4.2's settings).
"""

from enum import Enum, StrEnum

import dagster as dg
from pydantic import Field

from fmn_core.engine.config import TrainConfig, preset


class SyntheticPreset(StrEnum):
    tiny = "tiny"
    small = "small"
    medium = "medium"
    market = "market"


class ImageCheckMode(StrEnum):
    none = "none"
    header = "header"
    decode = "decode"


class TrainingPreset(StrEnum):
    cpu = "cpu"
    paper = "paper"


class Backbone(StrEnum):
    resnet18 = "resnet18"
    resnet34 = "resnet34"
    resnet50 = "resnet50"
    resnet101 = "resnet101"
    efficientnet_lite0 = "efficientnet_lite0"


class MaskedLayer(StrEnum):
    pool1 = "pool1"
    res2 = "res2"
    res3 = "res3"
    res4 = "res4"


class MaskMode(StrEnum):
    learned = "learned"
    constant = "constant"


class LanInit(StrEnum):
    theta_o = "theta_o"
    grn = "grn"


class SyntheticDatasetConfig(dg.Config):
    """What the synthetic_dataset asset generates into data/synthetic."""

    preset: SyntheticPreset = Field(SyntheticPreset.small, description="size of the generated dataset")
    seed: int = Field(0, description="seed of the generated dataset")


class DatasetSplitsConfig(dg.Config):
    """How the dataset of the partition is found and read."""

    root: str = Field("", description="dataset folder (custom: the manifest CSV); empty = data/<partition>")
    check_images: ImageCheckMode = Field(ImageCheckMode.header, description="how the reader checks image files")
    strict: bool = Field(True, description="fail on dataset errors (train/test overlap, empty split)")
    split_id: int = Field(0, ge=0, description="cuhk01 only: 0 = the fixed sorted 485/486 split, 1.. = seeded "
                                               "random splits")


class GRNTrainingConfig(dg.Config):
    """Stage 1 (Algorithm 1, lines 1-2): fine-tune the GRN."""

    preset: TrainingPreset = TrainingPreset.cpu
    arch: Backbone | None = None
    pretrained: str | None = Field(None, description="'imagenet' (Lite0: the packaged file; ResNets: the torch hub "
                                                     "cache, downloaded when missing), 'none' or a .pth file")
    masked_layer: MaskedLayer | None = Field(None, description="layer the stage-2 mask applies to (Table 5)")
    input_height: int | None = Field(None, ge=32)
    input_width: int | None = Field(None, ge=32)
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    lr_drop_epoch: int | None = Field(None, ge=0)
    seed: int | None = None
    device: str = Field("auto", description="'auto' (a GPU when present), 'cpu', 'cuda', 'cuda:1'")
    processes: int = Field(1, ge=1, description="more than 1: DistributedDataParallel through torchrun")

    def train_config(self) -> TrainConfig:
        """The full training configuration (both stages' fields) this run trains the GRN with."""
        changes = {name: value.value if isinstance(value, Enum) else value for name, value in (
            ("arch", self.arch), ("pretrained", self.pretrained), ("masked_layer", self.masked_layer),
            ("input_height", self.input_height), ("input_width", self.input_width),
            ("batch_size", self.batch_size), ("stage1_epochs", self.epochs), ("stage1_lr", self.lr),
            ("stage1_lr_drop_epoch", self.lr_drop_epoch), ("seed", self.seed)) if value is not None}
        return preset(self.preset.value, device=self.device, **changes)


class FMNTrainingConfig(dg.Config):
    """Stage 2 (Algorithm 1, line 3): train MN + LAN on the frozen GRN.

    The backbone, input size and every option not set here come from the GRN
    checkpoint's configuration, so the two stages always agree.
    """

    masked_layer: MaskedLayer | None = None
    batch_size: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    lr_drop_epoch: int | None = Field(None, ge=0)
    margin: float | None = Field(None, ge=0, allow_inf_nan=False, description="ranking-loss margin m of eq. (5)")
    rank_weight: float | None = Field(None, ge=0, allow_inf_nan=False)
    alpha: float | None = Field(None, ge=0, le=1, description="GRN/LAN weight of eq. (6)")
    mask_mode: MaskMode | None = Field(None, description="'constant': mask = 1, the control without the MN")
    lan_init: LanInit | None = Field(None, description="'grn': LAN from the fine-tuned GRN instead of theta_o")
    log_mask_max: float | None = Field(None, gt=0, allow_inf_nan=False,
                                       description="bound B of the mask exp(B tanh(ReLU(z)/B))")
    device: str = "auto"
    processes: int = Field(1, ge=1)

    def train_config(self, grn_config: TrainConfig) -> TrainConfig:
        changes = {name: value.value if isinstance(value, Enum) else value for name, value in (
            ("masked_layer", self.masked_layer), ("batch_size", self.batch_size), ("stage2_epochs", self.epochs),
            ("stage2_lr", self.lr), ("stage2_lr_drop_epoch", self.lr_drop_epoch), ("margin", self.margin),
            ("rank_weight", self.rank_weight), ("alpha", self.alpha), ("mask_mode", self.mask_mode),
            ("lan_init", self.lan_init), ("log_mask_max", self.log_mask_max)) if value is not None}
        return grn_config.replace(device=self.device, **changes)


class DescriptorConfig(dg.Config):
    """Descriptor extraction (section 3.4)."""

    batch_size: int = Field(256, ge=1)
    flip: bool = Field(False, description="average with the mirrored image's features (not in the paper)")
    device: str = "auto"


class EvaluationConfig(dg.Config):
    """Evaluation and re-ranking (sections 3.5 and 4.2)."""

    rerank: bool = True
    k1: int = Field(20, ge=1, description="k-reciprocal neighbourhood size")
    k2: int = Field(6, ge=1, description="query-expansion neighbourhood size (at most k1)")
    lambda_value: float = Field(0.3, ge=0, le=1, description="weight of the original distance")
    max_rank: int = Field(50, ge=1)
    ranked_list_queries: int = Field(4, ge=1, le=50, description="queries shown in the ranked-list picture")
    heatmap_images: int = Field(8, ge=1, le=64, description="images shown in the mask / activation picture")


class OnnxExportConfig(dg.Config):
    """The ONNX export and its parity check against PyTorch."""

    opset: int = Field(18, ge=18, description="ONNX opset (18 or newer, up to what the installed onnx knows)")
    dynamic_batch: bool = Field(True, description="accept any batch size (false: batches of exactly 1)")
    outputs: list[str] = Field(["fmn", "grn", "lan"], description="descriptors in the graph, from fmn (eq. 6), grn "
                                                                  "and lan; anything else fails the step")
    tolerance: float = Field(1e-4, ge=0, allow_inf_nan=False,
                             description="largest allowed |onnxruntime - PyTorch| per descriptor value")
    parity_queries: int = Field(8, ge=1, le=256, description="query images of the dataset used in the parity check")
    parity_gallery: int = Field(24, ge=2, le=1024, description="gallery images of the dataset used in the parity check")


class ModelCardConfig(dg.Config):
    """What only a person can add to the model card."""

    contact: str = Field("", description="who answers questions about this model (added to the card when set)")
