"""Training (Algorithm 1) and its checkpoints."""

from fmn_core.engine.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from fmn_core.engine.config import TrainConfig, parse_overrides
from fmn_core.engine.recipes import RECIPES, load_recipe, preset, recipe_names, save_config
from fmn_core.engine.trainer import TrainingDivergedError, TrainResult, train_stage1, train_stage2

__all__ = [
    "RECIPES",
    "CheckpointError",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "load_checkpoint",
    "load_recipe",
    "model_from_checkpoint",
    "parse_overrides",
    "preset",
    "recipe_names",
    "save_checkpoint",
    "save_config",
    "train_stage1",
    "train_stage2",
]
