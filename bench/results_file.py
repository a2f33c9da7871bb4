"""One named entry of a ``docs/results/*.json`` file and its Markdown twin, written atomically.

Scripts that measure one configuration per call (thread stability, paired recipes) keep every entry in one file;
a rerun replaces its own entry and leaves the others as they were.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fmn_core.utils.atomic import atomic_write_text


def record_entry(results: Path, name: str, entry: dict, markdown: Callable[[dict], str]) -> str:
    """Put ``entry`` under ``name`` in ``results`` (JSON) and rewrite its ``.md`` from all entries; the Markdown."""
    entries = json.loads(results.read_text()) if results.is_file() else {}
    entries[name] = entry
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(results, json.dumps(entries, indent=1))
    text = markdown(entries)
    atomic_write_text(results.with_suffix(".md"), text)
    return text
