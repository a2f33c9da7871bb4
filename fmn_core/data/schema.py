"""The split table: the one shape every dataset reader produces.

Every reader turns a dataset root into a pandas DataFrame with exactly these
columns, so training, evaluation, validation and the Dagster assets never need
to know which dataset a row came from.

Conventions (the ones the standard Market-1501 evaluation expects):

* ``pid`` is the person id as written by the dataset (Market-1501: ``0000`` is a
  distractor and stays in the gallery as an ordinary label; ``-1`` is a junk
  image and is dropped by the reader, with a count in the report, as torchreid
  does).
* ``path`` is absolute, so a saved table can be used from any working folder.
* ``camid`` is 0-based: camera ``c1`` in a file name becomes ``camid == 0``.
* ``label`` is the training class index, ``0..r-1`` over the train identities
  in ascending ``pid`` order; query and gallery rows carry ``-1``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def save_split_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as Parquet atomically (temporary file, then rename)."""
    from fmn_core.utils.atomic import atomic_write_path

    path = Path(path)
    with atomic_write_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return path


def load_split_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_split_table` and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split table not found: expected a Parquet file at {path}")
    frame = pd.read_parquet(path)
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(f"{path} is not a split table: missing columns {missing}; expected {SCHEMA_DOC}")
    return frame.astype(COLUMNS)[list(COLUMNS)]
