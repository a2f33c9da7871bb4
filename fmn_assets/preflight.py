"""A run checked before it starts: the run config's values, recipes and launchers, and the executor's broker.

Dagster checks a run config's names and types before a run; the ranges of the values (``nodes: 0``), whether a
recipe exists and trains, whether a launcher can start, and whether the Celery broker answers are only found
when a step runs, after the steps before it have worked for minutes. ``python3 run.py main`` asks
:func:`run_problems` first and starts nothing when it finds any; the steps refuse the same inputs themselves
without retrying (``fmn_assets.configs.StepConfig``), for runs launched from the UI or by automation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from fmn_assets.configs import FMNTrainingConfig, GRNTrainingConfig, StepConfig
from fmn_assets.environment import CELERY_BROKER, EXECUTOR
from fmn_core.engine.config import TrainConfig
from fmn_core.engine.recipes import config_file, load_recipe
from fmn_core.utils.errors import FMNInputError

#: seconds the broker of FMN_EXECUTOR=celery has to answer before the run is refused
BROKER_TIMEOUT_S = 5.0


def _step_configs(job: dg.JobDefinition, processed: dict[str, Any]) -> tuple[dict[str, StepConfig], list[str]]:
    """Each node's Config object built from the processed run config, as its step would build it."""
    built, problems = {}, []
    for node in job.nodes:
        compute_fn = getattr(node.definition, "compute_fn", None)
        if compute_fn is None or not hasattr(compute_fn, "has_config_arg") or not compute_fn.has_config_arg():
            continue
        config_class = compute_fn.get_config_arg().annotation
        if not (isinstance(config_class, type) and issubclass(config_class, StepConfig)):
            continue
        values = processed.get("ops", {}).get(node.name, {}).get("config", {}) or {}
        try:
            built[node.name] = config_class(**values)
        except dg.Failure as exc:
            problems.append(f"ops.{node.name}.config: {exc.description}")
    return built, problems


def _grn_config(built: dict[str, StepConfig], grn_checkpoint: Path) -> TrainConfig | None:
    """The GRN's training configuration: this run's, or the one written beside the existing checkpoint."""
    grn = next((c for c in built.values() if isinstance(c, GRNTrainingConfig)), None)
    try:
        if grn is not None:
            return grn.train_config()
        if config_file(grn_checkpoint).is_file():
            return load_recipe(config_file(grn_checkpoint))
    except FMNInputError:
        return None  # the GRN's own check reports it
    return None


def config_problems(job: dg.JobDefinition, run_config: dict, grn_checkpoint: Path) -> list[str]:
    """Every reason the run config would fail a step, one line each; [] when it would not."""
    try:
        processed = dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as exc:
        return [f"{error.message}" for error in exc.errors] or [str(exc)]
    built, problems = _step_configs(job, processed)
    grn_config = _grn_config(built, grn_checkpoint)
    for name, config in built.items():
        found = config.problems_with(grn_config) if isinstance(config, FMNTrainingConfig) else config.problems()
        problems += [f"ops.{name}.config: {problem}" for problem in found]
    return problems


def executor_problems() -> list[str]:
    """Whether the executor ``FMN_EXECUTOR`` names can take the run: the Celery broker must answer."""
    if EXECUTOR.value() != "celery":
        return []
    from kombu import Connection

    url = CELERY_BROKER.value()
    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # kombu raises the transport's own errors (redis, amqp, OSError)
        return [f"FMN_EXECUTOR=celery: the Celery broker {CELERY_BROKER.name}={url} does not answer "
                f"({type(exc).__name__}: {exc}); start it and its workers (deploy/celery/), or unset FMN_EXECUTOR "
                "to run on this machine"]
    return []
