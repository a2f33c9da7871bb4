"""The one base of every error that bad input raises in fmn_core.

A dataset that does not read, a configuration out of range, a damaged checkpoint,
a model that does not export: running again with the same input fails the same
way. Callers can tell these from the failures worth retrying (a lost node, a full
disk, a killed process) by this base alone; fmn_assets maps it, in one place, to a
Dagster failure that is not retried, and the CLI to exit code 2.
"""

from __future__ import annotations


class FMNInputError(ValueError):
    """Input that cannot be used as given; the message says what was expected and where."""


class InputFileNotFoundError(FMNInputError, FileNotFoundError):
    """An input file (a checkpoint, a split table, a model) that is not where it was given."""
