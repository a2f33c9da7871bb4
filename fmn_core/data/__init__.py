"""Datasets: readers that turn a dataset root into one split table.

Every reader returns a :class:`LoadedDataset` (``.table``, ``.report``); the
table schema is in :mod:`fmn_core.data.schema`. Pick a reader by name with
:func:`read_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fmn_core.data.assemble import LoadedDataset
from fmn_core.data.cuhk01 import read_cuhk01
from fmn_core.data.cuhk03 import read_cuhk03
from fmn_core.data.custom import read_custom
from fmn_core.data.image_check import ImageCheck
from fmn_core.data.market_style import read_dukemtmc, read_market1501
from fmn_core.data.report import DatasetError, DatasetLayoutError, DatasetReport, Finding
from fmn_core.data.schema import COLUMNS, SPLITS, label_map, load_split_table, num_train_identities, save_split_table
from fmn_core.utils.errors import FMNInputError


def read_synthetic(root: str | Path, check_images: ImageCheck = "header", strict: bool = True) -> LoadedDataset:
    """The generated Market-style dataset, read by the real Market-1501 reader."""
    return read_market1501(root, check_images=check_images, strict=strict, dataset="synthetic")


#: dataset name -> reader(root, check_images=..., strict=...)
DATASET_READERS: dict[str, Callable[..., LoadedDataset]] = {
    "synthetic": read_synthetic,
    "market1501": read_market1501,
    "dukemtmc_reid": read_dukemtmc,
    "cuhk01": read_cuhk01,
    "cuhk03_detected": lambda root, **kw: read_cuhk03(root, kind="detected", **kw),
    "cuhk03_labeled": lambda root, **kw: read_cuhk03(root, kind="labeled", **kw),
    "custom": read_custom,
}


def read_dataset(name: str, root: str | Path, **kwargs) -> LoadedDataset:
    """Read dataset ``name`` from ``root``; ``kwargs`` go to the reader."""
    try:
        reader = DATASET_READERS[name]
    except KeyError:
        raise FMNInputError(f"unknown dataset {name!r}; expected one of {sorted(DATASET_READERS)}") from None
    return reader(root, **kwargs)


__all__ = [
    "COLUMNS", "DATASET_READERS", "SPLITS", "DatasetError", "DatasetLayoutError", "DatasetReport", "Finding",
    "LoadedDataset", "label_map", "load_split_table", "num_train_identities", "read_cuhk01", "read_cuhk03",
    "read_custom",
    "read_dataset", "read_dukemtmc", "read_market1501", "read_synthetic", "save_split_table",
]
