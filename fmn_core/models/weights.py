"""What both backbones share about pretrained weights: the error for missing ones and the offline switch.

Kept apart from :mod:`fmn_core.models.backbone` and :mod:`fmn_core.models.efficientnet_lite` so that the
backbone factory can import the Lite0 builder without the builder importing the factory back.
"""

from __future__ import annotations

from fmn_core.utils.env import OFFLINE, flag
from fmn_core.utils.errors import InputFileNotFoundError


class WeightsUnavailableError(InputFileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


#: environment variable that forbids downloads ("1", "true", "yes", "on"): for air-gapped machines and test runs.
OFFLINE_ENV = OFFLINE


def is_offline() -> bool:
    """Whether :data:`OFFLINE_ENV` forbids downloads; read at call time so tests and subprocesses can set it."""
    return flag(OFFLINE_ENV)
