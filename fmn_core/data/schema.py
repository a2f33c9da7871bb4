"""The split table: the one shape every dataset reader produces.

Every reader turns a dataset root into a pandas DataFrame with exactly these
columns, so training, evaluation, validation and the Dagster assets never need
to know which dataset a row came from.

Conventions (the ones the standard Market-1501 evaluation expects):

* ``pid`` is the person id as written by the dataset (Market-1501: ``0000`` is a
  distractor and stays in the gallery as an ordinary label; ``-1`` is a junk
  image and is dropped by the reader, with a count in the report, as torchreid
  does).
* ``path`` is absolute in memory, so a table can be used from any working
  folder. On disk (Parquet) it is stored relative to the table's image root
  (the dataset folder the reader read, e.g. ``data/<dataset>``), so a dataset
  and its tables can be moved or pulled by DVC onto another machine; see
  :func:`resolve_image_root` for how a saved table finds its images again.
* ``camid`` is 0-based: camera ``c1`` in a file name becomes ``camid == 0``.
* ``label`` is the training class index, ``0..r-1`` over the train identities
  in ascending ``pid`` order; query and gallery rows carry ``-1``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.parquet import read_parquet

SPLITS: tuple[str, ...] = ("train", "query", "gallery")

#: column name -> pandas dtype of the split table, in column order.
COLUMNS: dict[str, str] = {
    "path": "string",
    "pid": "int64",
    "camid": "int64",
    "split": "string",
    "dataset": "string",
    "filename": "string",
    "label": "int64",
}

#: ``DataFrame.attrs`` key holding the absolute folder the in-memory table's image paths lie under.
IMAGE_ROOT_ATTR = "fmn.image_root"
#: Parquet schema-metadata keys: the image root when the table was written (absolute), and the same
#: folder relative to the table file's own folder (what still resolves after the whole project moves).
IMAGE_ROOT_KEY = b"fmn.image_root"
IMAGE_ROOT_FROM_TABLE_KEY = b"fmn.image_root_from_table"

#: Where the schema is documented for users writing their own manifests.
SCHEMA_DOC = "path:str, pid:int, camid:int (0-based), split:train|query|gallery, dataset:str, filename:str, label:int"


def make_split_table(rows: list[dict], dataset: str) -> pd.DataFrame:
    """Build a typed split table and assign training labels.

    ``rows`` need ``path``, ``pid``, ``camid`` and ``split``; ``filename`` is
    derived from ``path`` when absent. Rows are sorted (split, pid, camid, path)
    so that the same folder always yields the same table.
    """
    frame = pd.DataFrame(rows, columns=["path", "pid", "camid", "split", "filename"])
    if frame["filename"].isna().any():
        missing = frame["filename"].isna()
        frame.loc[missing, "filename"] = frame.loc[missing, "path"].map(lambda p: Path(p).name)
    frame["dataset"] = dataset
    split_order = {name: i for i, name in enumerate(SPLITS)}
    frame = frame.assign(_order=frame["split"].map(split_order))
    frame = frame.sort_values(["_order", "pid", "camid", "path"], kind="stable").drop(columns="_order")
    frame = frame.reset_index(drop=True)
    frame["label"] = relabel(frame)
    return frame.astype(COLUMNS)[list(COLUMNS)]


def relabel(frame: pd.DataFrame) -> pd.Series:
    """Map train pids to 0..r-1 (ascending pid); -1 elsewhere."""
    train = frame["split"] == "train"
    train_pids = sorted(frame.loc[train, "pid"].unique())
    mapping = {pid: index for index, pid in enumerate(train_pids)}
    labels = pd.Series(-1, index=frame.index, dtype="int64")
    labels[train] = frame.loc[train, "pid"].map(mapping).astype("int64")
    return labels


def label_map(frame: pd.DataFrame) -> dict[int, int]:
    """Training label -> original pid, the inverse of :func:`relabel`."""
    train = frame[frame["split"] == "train"]
    pairs = train[["label", "pid"]].drop_duplicates().sort_values("label")
    return {int(label): int(pid) for label, pid in zip(pairs["label"], pairs["pid"], strict=True)}


def num_train_identities(frame: pd.DataFrame) -> int:
    """r, the number of classes the identity classifiers need."""
    return int(frame.loc[frame["split"] == "train", "pid"].nunique())


def split_table_fingerprint(frame: pd.DataFrame) -> str:
    """One hash of a split table's rows (path under its image root, pid, camid, split), order-free.

    Descriptor tables record it, so an evaluation can tell a query table and a gallery table of one
    split table from two tables of different datasets or splits, where equal pid numbers are not
    the same people.
    """
    import hashlib

    root = frame.attrs.get(IMAGE_ROOT_ATTR) or common_image_root(frame["path"].tolist())
    names = relative_image_paths(frame["path"].tolist(), root)
    rows = sorted(f"{n}\t{p}\t{c}\t{s}" for n, p, c, s in zip(names, frame["pid"].astype(int),
                                                                frame["camid"].astype(int), frame["split"],
                                                                strict=True))
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()


def common_image_root(paths: Sequence[str]) -> Path:
    """The deepest folder holding every image: the root a table without a recorded one is stored against."""
    if not len(paths):
        raise FMNInputError("a table with no rows has no image root; pass root= explicitly")
    folders = {os.path.dirname(os.path.abspath(p)) for p in paths}
    return Path(os.path.commonpath(sorted(folders)))


def relative_image_paths(paths: Sequence[str], root: str | Path) -> list[str]:
    """``paths`` relative to ``root`` (POSIX form), as a table stores them on disk.

    Every path must lie under ``root``: a path outside it would not move with
    the dataset, so it is refused with the offending paths named.
    """
    base = os.path.abspath(root)
    prefix = base.rstrip(os.sep) + os.sep
    out, outside = [], []
    for path in paths:
        absolute = os.path.abspath(path)
        if absolute.startswith(prefix):
            out.append(Path(absolute[len(prefix):]).as_posix())
        else:
            outside.append(absolute)
    if outside:
        raise FMNInputError(f"{len(outside)} image path(s) lie outside the image root {base}, so they cannot be stored "
                            f"relative to it (e.g. {outside[:3]}); pass the folder that holds every image as root")
    return out


def image_root_metadata(root: str | Path, table_path: str | Path) -> dict[bytes, bytes]:
    """The schema metadata that lets a saved table find its images again (see :func:`resolve_image_root`)."""
    root = os.path.abspath(root)
    folder = os.path.abspath(Path(table_path).parent)
    return {IMAGE_ROOT_KEY: root.encode(), IMAGE_ROOT_FROM_TABLE_KEY: os.path.relpath(root, folder).encode()}


def resolve_image_root(table_path: str | Path, metadata: dict[bytes, bytes] | None, relative: Sequence[str],
                       root: str | Path | None = None, strict: bool = True) -> Path | None:
    """The folder a saved table's relative image paths resolve against now.

    ``root`` when given (the dataset's new place); otherwise the recorded root
    relative to the table file (it holds after the dataset and its tables moved
    together, e.g. a clone after ``dvc pull``), then the recorded absolute root
    (the table alone was moved or copied). A candidate is accepted when it is a
    folder holding at least one of a few sampled images, so a missing image is
    left to validation while a wrong root is caught here. Returns None for an
    old table whose paths are absolute. With no usable candidate, ``strict``
    raises :class:`~fmn_core.data.report.DatasetLayoutError` naming the roots
    tried; otherwise None.
    """
    metadata = metadata or {}
    table_path = Path(table_path)
    if IMAGE_ROOT_KEY not in metadata:
        if all(os.path.isabs(name) for name in relative):
            return None  # an old table with absolute paths
        # rewritten by another tool that dropped fmn's metadata: relative paths resolve against --root only, never
        # silently against the working folder
        if root is not None:
            return Path(root).expanduser().absolute()
        if not strict:
            return None
        from fmn_core.data.report import DatasetLayoutError

        raise DatasetLayoutError(f"{table_path}: its image paths are relative (e.g. {relative[0]}) but the table "
                                 "does not record the dataset root they are relative to (written by another tool?); "
                                 "pass the dataset root (root=... / --root)")
    recorded = Path(metadata[IMAGE_ROOT_KEY].decode())
    candidates = [Path(root).expanduser().absolute()] if root is not None else []
    if root is None and IMAGE_ROOT_FROM_TABLE_KEY in metadata:
        from_table = os.path.join(table_path.absolute().parent, metadata[IMAGE_ROOT_FROM_TABLE_KEY].decode())
        candidates.append(Path(os.path.normpath(from_table)))
    if root is None and recorded not in candidates:
        candidates.append(recorded)
    sample = [relative[i] for i in sorted({0, len(relative) // 2, len(relative) - 1})] if len(relative) else []
    for candidate in candidates:
        if candidate.is_dir() and (not sample or any((candidate / name).exists() for name in sample)):
            return candidate
    if not strict:
        return None
    from fmn_core.data.report import DatasetLayoutError

    tried = ", ".join(str(c) for c in candidates)
    example = f" (e.g. {sample[0]} is in none of them)" if sample else ""
    raise DatasetLayoutError(
        f"{table_path}: its image paths are relative to the dataset root, which was {recorded} when the table was "
        f"written; the images are not under {tried}{example}. The dataset has moved: pass its new root "
        f"(root=... / --root), or read the dataset again to write a new table.")


def save_split_table(frame: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write the table as Parquet atomically (temporary file, then rename), image paths relative to ``root``.

    ``root`` defaults to the root the table was read from (``frame.attrs``), else
    the common folder of its images; it goes into the schema metadata.
    """
    from fmn_core.utils.atomic import atomic_write_path

    path = Path(path)
    root = Path(root or frame.attrs.get(IMAGE_ROOT_ATTR) or common_image_root(frame["path"].tolist()))
    stored = frame.assign(path=pd.Series(relative_image_paths(frame["path"].tolist(), root), index=frame.index,
                                         dtype=frame["path"].dtype))
    table = pa.Table.from_pandas(stored, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **image_root_metadata(root, path)})
    with atomic_write_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def require_values(frame: pd.DataFrame, columns: Sequence[str], path: str | Path) -> None:
    """Refuse empty cells: a missing path or pid cannot be guessed, and pandas would fail far from the file."""
    for name in columns:
        empty = frame.index[frame[name].isna()]
        if len(empty):
            raise FMNInputError(f"{path}: column {name!r} has {len(empty)} empty value(s) (rows {empty[:3].tolist()})")


def require_integers(frame: pd.DataFrame, columns: Sequence[str], path: str | Path) -> None:
    """Refuse non-integral ids: astype would truncate 1.5 to 1 without a word."""
    for name in columns:
        column = frame[name]
        if not pd.api.types.is_integer_dtype(column):
            numeric = pd.to_numeric(column, errors="coerce")
            bad = column[numeric.isna() | (numeric != numeric.round())]
            if len(bad):
                raise FMNInputError(f"{path}: column {name!r} must hold integers ({SCHEMA_DOC}); it is "
                                    f"{column.dtype} with values such as {bad.head(3).tolist()} "
                                    f"(rows {bad.index[:3].tolist()})")


def load_split_table(path: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """Read a table written by :func:`save_split_table`, check its columns, make its paths absolute.

    ``root``: where the dataset is now, when it moved without its table (see
    :func:`resolve_image_root`).
    """
    path = Path(path)
    table = read_parquet(path, "a split table (fmn inspect --out writes them)")
    frame = table.to_pandas()
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise FMNInputError(f"{path} is not a split table: missing columns {missing}; expected {SCHEMA_DOC}")
    require_values(frame, list(COLUMNS), path)
    require_integers(frame, [name for name, dtype in COLUMNS.items() if dtype == "int64"], path)
    frame = frame.astype(COLUMNS)[list(COLUMNS)]
    unknown = frame[~frame["split"].isin(SPLITS)]
    if len(unknown):
        raise FMNInputError(f"{path}: column 'split' must be one of {list(SPLITS)}; rows {unknown.index[:3].tolist()} "
                            f"say {sorted(set(unknown['split']))[:3]}")
    wrong = frame.index[frame["label"] != relabel(frame)]
    if len(wrong):  # cross-entropy would index past its classes, or train on swapped identities
        raise FMNInputError(f"{path}: column 'label' must number the train identities 0..r-1 in pid order and be -1 "
                            f"elsewhere; rows {wrong[:3].tolist()} do not (edited by hand? write the table again with "
                            "fmn inspect)")
    relative = frame["path"].tolist()
    base = resolve_image_root(path, table.schema.metadata, relative, root)
    if base is not None:
        prefix = str(base).rstrip(os.sep) + os.sep
        frame["path"] = pd.Series([prefix + name for name in relative], index=frame.index, dtype=COLUMNS["path"])
        frame.attrs[IMAGE_ROOT_ATTR] = str(base)
    return frame
