"""Dagster assets for the Feature Mask Network: validated splits -> GRN -> FMN -> descriptors -> metrics.

Model code lives in ``fmn_core``; this package only orchestrates it.

``defs`` (fmn_assets.definitions) is built on first use (PEP 562): the definitions read the ``FMN_*``
variables, and ``python -m fmn_assets.main`` checks those first, so a bad value is one line naming it rather than a
traceback from this import. ``dagster -m fmn_assets`` and ``from fmn_assets import defs`` find it as before.
"""

from __future__ import annotations

from typing import Any

__all__ = ["defs"]


def __getattr__(name: str) -> Any:
    if name == "defs":
        from fmn_assets.definitions import defs

        globals()["defs"] = defs
        return defs
    raise AttributeError(f"module 'fmn_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "defs"})
