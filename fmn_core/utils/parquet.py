"""Reading a Parquet table given as input: a missing or damaged file is bad input that names the file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fmn_core.utils.errors import FMNInputError, InputFileNotFoundError


def read_parquet(path: str | Path, expected: str) -> pa.Table:
    """The table at ``path``; ``expected`` says what it should be ("a split table (fmn inspect --out writes them)")."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{path} not found: expected {expected}, a Parquet file")
    try:
        return pq.read_table(path)
    except pa.ArrowInvalid as exc:  # truncated, or not Parquet at all
        raise FMNInputError(f"{path} is not a readable Parquet file ({exc}); expected {expected}") from exc
