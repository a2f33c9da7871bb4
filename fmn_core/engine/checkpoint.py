"""Checkpoints: atomic to write, safe to load, explicit about what they hold.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so
it loads with ``torch.load(weights_only=True)`` (no arbitrary pickle). It
holds the weights, the full training configuration, the identity count and
label map (training label -> person id), the stage and epoch, optimiser and
scheduler state, the per-epoch history and the library versions.
"""

from __future__ import annotations

import hashlib
import io
import platform
from pathlib import Path
from typing import Any

import torch

from fmn_core.engine.config import TrainConfig
from fmn_core.models import FeatureMaskNetwork
from fmn_core.utils.atomic import atomic_write_bytes
from fmn_core.utils.errors import FMNInputError, InputFileNotFoundError

FORMAT = "fmn-checkpoint/1"
REQUIRED_KEYS = ("format", "stage", "epoch", "complete", "model", "config", "num_classes", "label_map")


class CheckpointError(FMNInputError):
    """A checkpoint is unreadable or does not fit what it is loaded into."""


def library_versions() -> dict[str, str]:
    # torchvision's distribution version, read without importing it (see models.backbone); its build (+cu130)
    # is torch's, which torch.__version__ records
    from importlib.metadata import version

    from fmn_core._version import __version__
    from fmn_core.utils.machine import machine_description

    return {"fmn_core": __version__, "torch": str(torch.__version__), "torchvision": version("torchvision"),
            "python": platform.python_version(), "machine": machine_description(with_threads=False)}


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: TrainConfig, stage: int, epoch: int,
                    complete: bool, label_map: dict[int, int], optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, history: list[dict] | None = None, extra: dict | None = None,
                    diagnostics: dict | None = None, threads: dict[str, list[int]] | None = None) -> Path:
    """Serialise to memory, then write with a temporary file and a rename."""
    state = {
        "format": FORMAT,
        "stage": int(stage),
        "epoch": int(epoch),
        "complete": bool(complete),
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
        "config": config.to_dict(),
        "num_classes": int(_unwrap(model).num_classes),
        "label_map": {int(k): int(v) for k, v in label_map.items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "history": list(history or []),
        "versions": library_versions(),
        "extra": dict(extra or {}),
        "diagnostics": dict(diagnostics or {}),
        #: per stage, the CPU thread counts it trained with ([] on a GPU): the one setting besides the seed and
        #: the machine that changes the result
        "threads": {stage_name: [int(n) for n in counts] for stage_name, counts in (threads or {}).items()},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _first_sentence(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text.split(". ")[0]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; any damage becomes a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise InputFileNotFoundError(f"{path} is a folder; give the checkpoint file in it (grn.pt or fmn.pt)")
    if not path.is_file():
        raise InputFileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip, pickle and unpickler errors all mean "damaged file"
        raise CheckpointError(
            f"checkpoint {path} ({path.stat().st_size} bytes) is truncated, corrupt or not a checkpoint of this "
            f"project ({type(exc).__name__}: {_first_sentence(exc)}); train again or "
            f"restore it (dvc pull)") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an FMN checkpoint (expected format {FORMAT!r})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    shapes = {"config": dict, "model": dict, "label_map": dict, "stage": int, "epoch": int, "num_classes": int}
    wrong = [f"{key} is {type(state[key]).__name__}, expected {kind.__name__}" for key, kind in shapes.items()
             if not isinstance(state[key], kind)]
    if not wrong and not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        wrong.append("model holds values that are not tensors")
    if wrong:  # written by something else under our format tag, or edited
        raise CheckpointError(f"checkpoint {path} is malformed: {'; '.join(wrong)}")
    return state


def weights_fingerprint(weights: dict[str, torch.Tensor]) -> str:
    """A short hash of a network's weights (names, dtypes, shapes and values).

    Descriptors from two networks are not comparable; descriptor tables and ONNX
    files carry this hash so a search can refuse a gallery made by another model.
    """
    digest = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def model_from_checkpoint(state: dict[str, Any], *, expect_arch: str | None = None,
                          expect_num_classes: int | None = None, source: str = "checkpoint") -> FeatureMaskNetwork:
    """Rebuild the network a checkpoint was saved from and load its weights."""
    config = TrainConfig.from_dict(state["config"])
    if expect_arch is not None and config.arch != expect_arch:
        raise CheckpointError(f"{source} holds a {config.arch} network, but {expect_arch} was expected")
    if expect_num_classes is not None and state["num_classes"] != expect_num_classes:
        raise CheckpointError(f"{source} was trained for {state['num_classes']} identities, but the training "
                              f"split has {expect_num_classes}: it belongs to another dataset or split")
    model = build_model(config, state["num_classes"], pretrained="none")
    load_weights(model, state["model"], source)
    return model


def build_model(config: TrainConfig, num_classes: int, pretrained: str | None = None) -> FeatureMaskNetwork:
    """The network ``config`` describes; ``pretrained`` overrides its initial weights ('none' before loading)."""
    return FeatureMaskNetwork(num_classes, arch=config.arch,
                              pretrained=config.pretrained if pretrained is None else pretrained,
                              masked_layer=config.masked_layer, input_size=config.input_size,
                              log_mask_max=config.log_mask_max, normalize_global=config.normalize_global,
                              constant_mask=config.mask_mode == "constant", mask_cell=config.mask_cell,
                              mask_mean_one=config.mask_mean_one, bn_neck=config.bn_neck,
                              mask_form=config.mask_form)


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict`` with a message that says what does not fit."""
    target = _unwrap(model)
    own = target.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    mismatched = [f"{k}: {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit this network ({getattr(target, 'arch', '?')}, "
            f"{getattr(target, 'num_classes', '?')} identities): missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatches {mismatched[:3]}")
    target.load_state_dict(weights)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
