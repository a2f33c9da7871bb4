"""Every ``FMN_*`` environment variable the asset graph reads: its default, what it accepts, one parser.

A variable with a value it cannot use is refused with one line naming the variable, the value and what is
accepted, never taken silently as the default (``FMN_EXECUTOR=kubernetes`` once ran on the multiprocess executor)
and never as a traceback. ``python3 run.py main`` checks them all before anything starts
(:func:`setting_problems`); the definitions read each through its function here, so a code server that loads the
project with a bad value fails with the same line.

The variables of ``fmn_core`` itself (``FMN_THREADS``, ``FMN_OFFLINE``, ``FMN_DEBUG``, ``FMN_CACHE_DIR``) live
in ``fmn_core.utils.env`` and ``fmn_core.utils.threads``; :func:`setting_problems` checks those too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster._utils.schedules import is_valid_cron_string  # not re-exported at the top level

from fmn_assets.execution.celery_queues import BACKEND_ENV, BROKER_ENV
from fmn_core.utils.env import FLAG_VARIABLES, flag
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.threads import thread_setting

#: the executors ``FMN_EXECUTOR`` may name (fmn_assets/definitions.py); empty means the first
EXECUTORS = ("multiprocess", "in_process", "k8s", "celery")


class EnvironmentSettingError(FMNInputError):
    """An ``FMN_*`` variable holds a value that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Setting:
    """One variable: its name, its default (as text), what it accepts (for the error) and how it is read."""

    name: str
    default: str
    accepts: str
    parse: Callable[[str], Any]

    def value(self) -> Any:
        """The variable's value, parsed; an :class:`EnvironmentSettingError` when it is not one it accepts."""
        raw = os.environ.get(self.name, "").strip() or self.default
        try:
            return self.parse(raw)
        except (ValueError, TypeError):
            shown = os.environ.get(self.name, "")
            raise EnvironmentSettingError(f"{self.name}={shown!r}: expected {self.accepts}") from None


def _executor(raw: str) -> str:
    name = raw.lower()
    if name not in EXECUTORS:
        raise ValueError(name)
    return name


def _cron(raw: str) -> str:
    if raw and not is_valid_cron_string(raw):
        raise ValueError(raw)
    return raw


def _seconds(low: float, high: float, kind: type = float) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value
    return parse


def _folder(raw: str) -> str:
    path = Path(raw).expanduser()
    if raw and path.exists() and not path.is_dir():  # a folder not made yet is created by the first step
        raise ValueError(raw)
    return raw


def _broker_url(raw: str) -> str:
    if raw and "://" not in raw:
        raise ValueError(raw)
    return raw


PROJECT_DIR = Setting("FMN_PROJECT_DIR", "", "the project's folder, not a file (empty: the working directory)",
                      _folder)
EXECUTOR = Setting("FMN_EXECUTOR", "multiprocess", f"one of {', '.join(EXECUTORS)} (empty: multiprocess)", _executor)
OBSERVE_CRON = Setting("FMN_OBSERVE_CRON", "0 * * * *", "a cron string such as '0 * * * *' (hourly, the default)",
                       _cron)
RETRAIN_CRON = Setting("FMN_RETRAIN_CRON", "", "a cron string such as '0 3 * * 0' (Sundays 03:00), or empty for no "
                                               "fixed cadence", _cron)
AUTOMATION_SECONDS = Setting("FMN_AUTOMATION_SECONDS", "30", "a whole number of seconds from 1 to 86400 "
                                                             "(default 30)", _seconds(1, 86400, int))
RETRY_DELAY_S = Setting("FMN_RETRY_DELAY_S", "15", "seconds from 0 to 3600 before a failed training step is "
                                                   "retried (default 15)", _seconds(0, 3600))
CELERY_BROKER = Setting(BROKER_ENV, "", "a broker URL such as redis://10.0.0.5:6379/0", _broker_url)
CELERY_BACKEND = Setting(BACKEND_ENV, "", "a result-store URL such as redis://10.0.0.5:6379/1", _broker_url)

SETTINGS = (PROJECT_DIR, EXECUTOR, OBSERVE_CRON, RETRAIN_CRON, AUTOMATION_SECONDS, RETRY_DELAY_S, CELERY_BROKER,
            CELERY_BACKEND)


def setting_problems() -> list[str]:
    """One line per ``FMN_*`` variable (this package's and fmn_core's) whose value cannot be used."""
    problems = []
    for setting in SETTINGS:
        try:
            setting.value()
        except EnvironmentSettingError as exc:
            problems.append(str(exc))
    for name in FLAG_VARIABLES:
        try:
            flag(name)
        except FMNInputError as exc:
            problems.append(str(exc))
    try:
        thread_setting()
    except FMNInputError as exc:
        problems.append(str(exc))
    if EXECUTOR.name in os.environ and _quiet(EXECUTOR) == "celery":
        problems += [f"FMN_EXECUTOR=celery needs {s.name} ({s.accepts})" for s in (CELERY_BROKER, CELERY_BACKEND)
                     if not os.environ.get(s.name, "").strip()]
    return problems


def _quiet(setting: Setting) -> Any:
    try:
        return setting.value()
    except EnvironmentSettingError:
        return None
