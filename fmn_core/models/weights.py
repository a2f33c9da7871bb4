"""What both backbones share about pretrained weights: the error for missing ones and the offline switch.

Kept apart from :mod:`fmn_core.models.backbone` and :mod:`fmn_core.models.efficientnet_lite` so that the
backbone factory can import the Lite0 builder without the builder importing the factory back.
"""

from __future__ import annotations

import os

from fmn_core.utils.errors import InputFileNotFoundError


class WeightsUnavailableError(InputFileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


#: environment variable that forbids downloads ("1", "true", "yes", "on"): for air-gapped machines and test runs.
OFFLINE_ENV = "FMN_OFFLINE"
_TRUTHY = frozenset({"1", "true", "yes", "on"})


def is_offline() -> bool:
    """Whether :data:`OFFLINE_ENV` forbids downloads; read at call time so tests and subprocesses can set it."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUTHY
