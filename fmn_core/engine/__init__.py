"""Training (Algorithm 1) and its checkpoints."""

from fmn_core.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from fmn_core.engine.config import PRESETS, TrainConfig, parse_overrides, preset
from fmn_core.engine.trainer import TrainingDivergedError, TrainResult, train_stage1, train_stage2

__all__ = [
    "PRESETS",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "load_checkpoint",
    "model_from_checkpoint",
    "parse_overrides",
    "preset",
    "save_checkpoint",
    "train_stage1",
    "train_stage2",
]
