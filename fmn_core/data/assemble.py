"""The last step every reader shares: check images, build the table, report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmn_core.data.image_check import ImageCheck, find_unreadable
from fmn_core.data.report import DatasetReport, check_split_consistency
from fmn_core.data.schema import make_split_table, save_split_table


@dataclass
class LoadedDataset:
    """A split table and the report of how it was read."""

    table: pd.DataFrame
    report: DatasetReport

    @property
    def name(self) -> str:
        return self.report.dataset

    def save(self, path: str | Path) -> Path:
        """Write the table as Parquet (atomically) and the report next to it."""
        from fmn_core.utils.atomic import atomic_write_text

        path = save_split_table(self.table, path)
        atomic_write_text(Path(path).with_suffix(".report.json"), self.report.to_json())
        return path


def assemble(rows: list[dict], report: DatasetReport, check_images: ImageCheck = "header",
             strict: bool = True) -> LoadedDataset:
    """Drop unreadable images (counted), build the table, add whole-table findings.

    With ``strict`` any error finding raises :class:`DatasetError`; otherwise the
    table is returned together with the report for the caller to judge.
    """
    bad = find_unreadable([row["path"] for row in rows], check_images)
    if bad:
        bad_paths = {path for path, _ in bad}
        report.add("unreadable_image", "warning",
                   f"images that cannot be read ({bad[0][1]} ...); skipped",
                   examples=[f"{path}: {reason}" for path, reason in bad], count=len(bad))
        rows = [row for row in rows if row["path"] not in bad_paths]
    table = make_split_table(rows, report.dataset)
    check_split_consistency(table, report)
    report.record_counts(table)
    if strict:
        report.raise_for_errors()
    return LoadedDataset(table, report)
