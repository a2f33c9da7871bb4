"""Turning artifacts into the metadata the Dagster UI shows."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import pandas as pd

_TYPES = {"int64": "int", "int32": "int", "float64": "float", "float32": "float", "bool": "bool"}


def table_schema(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    """The column schema of a DataFrame, for ``dagster/column_schema``."""
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(name=str(name), type=_TYPES.get(str(dtype), "string" if "str" in str(dtype) else str(dtype)),
                       description=descriptions.get(str(name)))
        for name, dtype in frame.dtypes.items()])


def image_markdown(path: Path, title: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown, which the asset page renders as a picture."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return dg.MetadataValue.md(f"**{title}** (`{path}`)\n\n![{title}](data:image/png;base64,{data})")


def history_markdown(history: list[dict]) -> dg.MetadataValue:
    """Per-epoch training metrics as a Markdown table."""
    if not history:
        return dg.MetadataValue.md("no epochs trained in this run")
    keys = [k for k in history[0] if k not in ("stage",)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in history:
        lines.append("| " + " | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                                       for k in keys) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def records_table(rows: list[dict], first_column: str | None = None) -> dg.MetadataValue:
    """Rows of numbers as a typed Dagster table (the UI sorts and shows it as a table, not as text)."""
    if not rows:
        return dg.MetadataValue.table(records=[], schema=dg.TableSchema(columns=[]))
    keys = list(dict.fromkeys(k for row in rows for k in row))
    if first_column in keys:
        keys.remove(first_column)
        keys.insert(0, first_column)
    types = {k: "string" if any(isinstance(row.get(k), str) for row in rows) else
             "int" if all(isinstance(row.get(k), int) for row in rows if k in row) else "float" for k in keys}
    columns = [dg.TableColumn(name=k, type=types[k]) for k in keys]
    records = [dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                               if v is not None}) for row in rows]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))
