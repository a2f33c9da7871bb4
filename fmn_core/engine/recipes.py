"""Recipes: training configurations as YAML files, and the resolved configuration written beside a checkpoint.

A recipe file holds ``TrainConfig`` fields and, optionally, ``base:``, the recipe it
changes (a name, or a file path relative to this one). The packaged recipes live in
``fmn_core/configs``: ``paper`` (section 4.2), ``cpu`` (the two-core demo) and one file
per ablation row under ``ablation/``. Any other YAML file is a recipe too, including
the ``*.config.yaml`` that training writes beside every checkpoint, so
``fmn train-stage1 --config runs/demo/grn.config.yaml`` trains the same run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fmn_core.engine.config import TrainConfig
from fmn_core.utils.atomic import atomic_write_text
from fmn_core.utils.errors import FMNInputError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "configs"
BASE_KEY = "base"
RECIPE_PATH_HINT = "fmn_core/configs"
#: What a recipe looks like, for the errors about files that are not one.
RECIPE_EXAMPLE = "a YAML mapping of training options, e.g. 'base: cpu' and 'stage1_epochs: 12' on two lines"


def recipe_names() -> list[str]:
    """The packaged recipes by name: ``cpu``, ``paper``, ``ablation/constant_mask``, ..."""
    return sorted(path.relative_to(RECIPES_DIR).with_suffix("").as_posix() for path in RECIPES_DIR.rglob("*.yaml"))


def recipe_path(spec: str | Path, relative_to: Path | None = None) -> Path:
    """A recipe name or file -> the file; an error listing the packaged recipes when neither exists."""
    text = str(spec)
    if text.endswith((".yaml", ".yml")):
        path = Path(text) if relative_to is None or Path(text).is_absolute() else relative_to / text
        if path.is_dir():
            raise FMNInputError(f"recipe {path} is a folder; give a recipe file ({RECIPE_EXAMPLE})")
        if not path.is_file():
            raise FMNInputError(f"recipe file {path} does not exist" if not path.exists() else
                                f"recipe {path} is not a regular file; give a recipe file ({RECIPE_EXAMPLE})")
        return path
    if Path(text).is_dir():
        raise FMNInputError(f"recipe {text} is a folder; give a recipe name ({', '.join(recipe_names())}) or a .yaml "
                            f"file ({RECIPE_EXAMPLE})")
    packaged = RECIPES_DIR / f"{text}.yaml"
    if text and ".." not in Path(text).parts and packaged.is_file():
        return packaged
    raise FMNInputError(f"unknown recipe {text!r}: expected one of {recipe_names()} or a .yaml file")


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise FMNInputError(f"recipe file {path} is not UTF-8 text (byte {exc.start} is 0x{byte:02x}); a recipe is "
                            f"{RECIPE_EXAMPLE}") from None
    except OSError as exc:
        raise FMNInputError(f"recipe file {path} cannot be read ({exc.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FMNInputError(f"recipe file {path} is not valid YAML: {exc}") from None
    if values is None:  # an empty file would silently train the dataclass defaults (ResNet-50, 30 + 45 epochs)
        raise FMNInputError(f"recipe file {path} is empty; a recipe is {RECIPE_EXAMPLE} (the packaged recipes are "
                            f"in {RECIPE_PATH_HINT})")
    if not isinstance(values, dict):
        raise FMNInputError(f"recipe file {path}: expected a mapping of training options, got {type(values).__name__}; "
                            f"a recipe is {RECIPE_EXAMPLE}")
    return values


def recipe_changes(spec: str | Path, relative_to: Path | None = None) -> dict[str, Any]:
    """The fields one recipe file sets itself (without its base): what an ablation row changes."""
    values = _read(recipe_path(spec, relative_to))
    values.pop(BASE_KEY, None)
    return values


def _resolved_dict(spec: str | Path, relative_to: Path | None, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = recipe_path(spec, relative_to)
    if path.resolve() in seen:
        raise FMNInputError(f"recipe {path} is its own base (through {[str(p) for p in seen]})")
    own = _read(path)
    base = own.pop(BASE_KEY, None)
    if base is None:
        return own
    try:
        inherited = _resolved_dict(base, path.parent, (*seen, path.resolve()))
    except ValueError as exc:
        raise FMNInputError(f"{path}, base {base!r}: {exc}") from None
    return {**inherited, **own}


def load_recipe(spec: str | Path, **overrides: Any) -> TrainConfig:
    """The configuration of a recipe (name or file), its bases applied, then ``overrides``; validated."""
    values = _resolved_dict(spec, None, ())
    try:
        return TrainConfig.from_dict({**values, **overrides})
    except ValueError as exc:
        raise FMNInputError(f"recipe {spec}: {exc}") from None


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A packaged recipe with some fields changed (``preset("cpu", batch_size=16)``)."""
    return load_recipe(name, **overrides)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved configuration as a recipe file (atomically): every field, no base."""
    text = "# the resolved training configuration of this run (a recipe: fmn train-stage1 --config THIS_FILE)\n"
    return atomic_write_text(Path(path), text + yaml.safe_dump(config.to_dict(), sort_keys=False))


def config_file(checkpoint: str | Path) -> Path:
    """Where the resolved configuration of a checkpoint is written: ``grn.pt`` -> ``grn.config.yaml``."""
    return Path(checkpoint).with_suffix(".config.yaml")


#: The two top-level recipes, resolved: the paper's and the CPU demo's.
RECIPES: dict[str, TrainConfig] = {name: load_recipe(name) for name in ("paper", "cpu", "cpu_reid")}
