"""The one place where fmn_core's bad-input errors become Dagster failures.

Every error fmn_core raises for input it cannot use derives from ``FMNInputError``
(fmn_core/utils/errors.py): a dataset that does not read, a configuration out of
range, a damaged or missing checkpoint, a model that does not export. Running the
step again with the same input fails the same way, so the failure is not retried
(the retry policy of the training steps is for lost nodes and killed processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from fmn_core.utils.errors import FMNInputError


@contextmanager
def bad_input_fails_the_step(what: str, advice: str = "") -> Iterator[None]:
    """``with bad_input_fails_the_step("descriptor extraction for 'x'"):`` -> a non-retried dg.Failure."""
    try:
        yield
    except FMNInputError as exc:
        description = f"{what}: {exc}" + (f" {advice}" if advice else "")
        raise dg.Failure(allow_retries=False, description=description) from exc
