"""Users' own data: a CSV manifest.

Schema (header row required, extra columns ignored)::

    path,pid,camid,split
    images/0001_a.jpg,1,0,train
    images/0002_b.jpg,2,1,query

* ``path``: image file, absolute or relative to the manifest's folder.
* ``pid``: integer person id (``0`` and up; ``-1`` marks junk and is dropped,
  counted, as in Market-1501).
* ``camid``: integer camera id, ``0`` and up (0-based).
* ``split``: ``train``, ``query`` or ``gallery``.

Rows that break the schema are skipped and reported with their line numbers.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from fmn_core.data.assemble import LoadedDataset, assemble
from fmn_core.data.image_check import ImageCheck
from fmn_core.data.report import DatasetError, DatasetLayoutError, DatasetReport
from fmn_core.data.schema import SPLITS

REQUIRED_COLUMNS = ("path", "pid", "camid", "split")
_EXTRA = "\0extra"  # DictReader's key for fields beyond the header (an empty one: a trailing comma, accepted)
_INT64_MAX = 2**63 - 1


def read_custom(manifest: str | Path, dataset: str = "custom", check_images: ImageCheck = "header",
                strict: bool = True) -> LoadedDataset:
    """Read a CSV manifest (or a folder holding ``manifest.csv``)."""
    manifest = Path(manifest).expanduser().absolute()
    if manifest.is_dir():
        manifest = manifest / "manifest.csv"
    if not manifest.is_file():
        raise DatasetLayoutError(
            f"custom: manifest {manifest} does not exist; expected a CSV file with columns "
            f"{','.join(REQUIRED_COLUMNS)} (or a folder holding manifest.csv)")
    base = manifest.parent
    report = DatasetReport(dataset, str(manifest))
    rows: list[dict] = []
    malformed: list[str] = []
    missing_files: list[str] = []
    junk: list[str] = []
    duplicates: list[str] = []
    first_line: dict[str, int] = {}
    try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = manifest.read_bytes()[:exc.start].count(b"\n") + 1
        raise DatasetError(f"custom: {manifest} is not UTF-8 text (line {line}, byte {exc.start}: "
                           f"{exc.object[exc.start:exc.end]!r}); save the manifest as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey=_EXTRA)
    header = [name.strip() for name in (reader.fieldnames or [])]
    absent = [name for name in REQUIRED_COLUMNS if name not in header]
    if absent:
        raise DatasetError(f"custom: {manifest} lacks the columns {absent}; its header is {header}, "
                           f"expected at least {','.join(REQUIRED_COLUMNS)}")
    for raw in _rows(reader, manifest):
        line_no = reader.line_num
        extra = [v for v in raw.pop(_EXTRA, None) or [] if v.strip()]
        if extra:
            malformed.append(f"{manifest}:{line_no}: {len(extra)} more fields than the header ({extra[:3]})")
            continue
        record = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        problem = _row_problem(record)
        if problem:
            malformed.append(f"{manifest}:{line_no}: {problem}")
            continue
        path = Path(record["path"]).expanduser()
        path = path if path.is_absolute() else base / path
        if int(record["pid"]) == -1:
            junk.append(str(path))
            continue
        if str(path) in first_line:  # the same image twice would count twice, or sit in two splits at once
            duplicates.append(f"{manifest}:{line_no}: {path} (first on line {first_line[str(path)]})")
            continue
        first_line[str(path)] = line_no
        if not path.is_file():
            missing_files.append(f"{manifest}:{line_no}: {path}")
            continue
        rows.append({"path": str(path), "pid": int(record["pid"]), "camid": int(record["camid"]),
                     "split": record["split"], "filename": path.name})
    report.add("malformed_row", "warning", "manifest rows that break the schema; skipped", malformed)
    report.add("missing_file", "warning", "manifest rows whose image file does not exist; skipped", missing_files)
    report.add("duplicate_row", "warning", "manifest rows repeating an earlier row's image; the first is kept",
               duplicates)
    report.add("junk_image", "info", "pid -1 rows, dropped as junk", junk)
    # saved tables are relative to the manifest's folder, or to the folder holding it and every image
    image_root = Path(os.path.commonpath([str(base), *(os.path.dirname(row['path']) for row in rows)]))
    return assemble(rows, report, check_images, strict, image_root=image_root)


def _rows(reader: csv.DictReader, manifest: Path):
    """The reader's rows; a CSV it cannot parse (an unclosed quote swallowing the file) is an error with its line."""
    try:
        yield from reader
    except csv.Error as exc:
        raise DatasetError(f"custom: {manifest}:{reader.line_num}: cannot parse the CSV ({exc}); an unclosed quote?"
                           ) from None


def _row_problem(record: dict[str, str]) -> str | None:
    if not record["path"]:
        return "empty path"
    for column in ("pid", "camid"):
        try:
            value = int(record[column])
        except ValueError:
            return f"{column}={record[column]!r} is not an integer"
        if abs(value) > _INT64_MAX:
            return f"{column}={record[column]} is too large (at most {_INT64_MAX})"
    if int(record["pid"]) < -1:
        return f"pid={record['pid']} is negative (only -1, junk, is allowed)"
    if int(record["camid"]) < 0:
        return f"camid={record['camid']} is negative; camera ids are 0-based"
    if record["split"] not in SPLITS:
        return f"split={record['split']!r} is not one of {'/'.join(SPLITS)}"
    return None
