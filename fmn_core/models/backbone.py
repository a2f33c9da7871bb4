"""The ResNet the GRN is built from, and where its ImageNet weights come from.

Weights resolve without ever touching the network unless asked to:

* ``"imagenet"``: torchvision's ``IMAGENET1K_V1`` file, only if it is already
  in the torch hub cache (``$TORCH_HOME/hub/checkpoints``); otherwise a
  :class:`WeightsUnavailableError` says which file to put where.
* a path: a local ``.pth`` state dict (torchvision's file, or any ResNet
  state dict with the same keys).
* ``"none"``: random initialisation (training from scratch).

The ResNet is cut into named stages so the Mixing Network can mask any of
them: ``stem`` (conv1, bn1, relu, maxpool: its output is the paper's Pool1),
``res2`` .. ``res5`` (torchvision's ``layer1`` .. ``layer4``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

ARCHITECTURES: dict[str, tuple[str, int]] = {
    # name -> (torchvision weights enum, width of the pooled feature)
    "resnet18": ("ResNet18_Weights", 512),
    "resnet34": ("ResNet34_Weights", 512),
    "resnet50": ("ResNet50_Weights", 2048),
    "resnet101": ("ResNet101_Weights", 2048),
}

#: stage names in order; the output of each is a place the mask can be applied.
STAGES: tuple[str, ...] = ("stem", "res2", "res3", "res4", "res5")
#: paper name of a masked layer -> the stage whose output it is (Table 5).
MASKABLE_LAYERS: dict[str, str] = {"pool1": "stem", "res2": "res2", "res3": "res3", "res4": "res4"}
#: output stride of each stage's output, for mask sizes (224x224 -> 56x56 at pool1).
STAGE_STRIDES: dict[str, int] = {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


def feature_dim(arch: str) -> int:
    """Width of the globally pooled feature (2048 for ResNet-50: Table 1's descriptor size)."""
    return ARCHITECTURES[_check_arch(arch)][1]


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return arch


def imagenet_weights_file(arch: str) -> tuple[Path, str]:
    """Where torchvision keeps the ImageNet file for ``arch``, and its download URL."""
    enum = getattr(torchvision.models, ARCHITECTURES[_check_arch(arch)][0])
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def load_pretrained_state(arch: str, pretrained: str) -> dict[str, torch.Tensor] | None:
    """Resolve ``pretrained`` ('imagenet', 'none' or a file path) to a state dict, offline."""
    if pretrained in ("none", "", None):
        return None
    if pretrained == "imagenet":
        file, url = imagenet_weights_file(arch)
        if not file.is_file():
            raise WeightsUnavailableError(
                f"ImageNet weights for {arch} are not in the torch cache and will not be downloaded. "
                f"Place {file.name} (from {url}) at {file}, or pass the file's path as the pretrained "
                f"weights, or use pretrained='none' to train from scratch.")
    else:
        file = Path(pretrained).expanduser()
        if not file.is_file():
            raise WeightsUnavailableError(
                f"pretrained weights file {file} does not exist; expected a ResNet state dict (.pth), "
                f"'imagenet' (from the torch cache) or 'none'")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise WeightsUnavailableError(f"cannot read pretrained weights {file}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{file} does not hold a state dict (found {type(state).__name__})")
    return state


def build_resnet(arch: str, pretrained: str = "none") -> nn.Module:
    """A torchvision ResNet with the requested initial weights (fc left as ImageNet's or random)."""
    model = getattr(torchvision.models, _check_arch(arch))(weights=None)
    state = load_pretrained_state(arch, pretrained)
    if state is not None:
        own = model.state_dict()
        backbone_keys = [k for k in own if not k.startswith("fc.")]
        missing = [k for k in backbone_keys if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in backbone_keys
                      if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or mismatched:
            raise WeightsUnavailableError(
                f"pretrained weights do not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected, "
                f"{len(mismatched)} mismatched tensors (e.g. {(missing + unexpected + mismatched)[:3]})")
        fits_fc = all(k in state and state[k].shape == own[k].shape for k in ("fc.weight", "fc.bias"))
        model.load_state_dict({k: v for k, v in state.items() if fits_fc or not k.startswith("fc.")}, strict=fits_fc)
    return model


def resnet_stages(model: nn.Module) -> nn.ModuleDict:
    """Split a torchvision ResNet into the named :data:`STAGES`."""
    return nn.ModuleDict({
        "stem": nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
        "res2": model.layer1,
        "res3": model.layer2,
        "res4": model.layer3,
        "res5": model.layer4,
    })


def stage_channels(arch: str) -> dict[str, int]:
    """Channels of each stage's output (64 at pool1; 256/512/1024/2048 for ResNet-50)."""
    wide = ARCHITECTURES[_check_arch(arch)][1] == 2048
    return {"stem": 64, "res2": 256 if wide else 64, "res3": 512 if wide else 128, "res4": 1024 if wide else 256,
            "res5": 2048 if wide else 512}
