"""Dagster assets for the Feature Mask Network: validated splits -> GRN -> FMN -> descriptors -> metrics.

Model code lives in ``fmn_core``; this package only orchestrates it.
"""

from fmn_assets.definitions import defs

__all__ = ["defs"]
