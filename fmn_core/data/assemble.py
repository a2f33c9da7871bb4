"""The last step every reader shares: check images, build the table, report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fmn_core.data.image_check import ImageCheck, find_unreadable
from fmn_core.data.report import DatasetReport, check_split_consistency
from fmn_core.data.schema import IMAGE_ROOT_ATTR, common_image_root, make_split_table, save_split_table


@dataclass
class LoadedDataset:
    """A split table and the report of how it was read.

    ``image_root`` is the folder every image lies under (the dataset folder for
    folder-based datasets): saved tables store their paths relative to it.
    """

    table: pd.DataFrame
    report: DatasetReport
    image_root: Path | None = field(default=None)

    def __post_init__(self) -> None:
        if self.image_root is None and len(self.table):
            self.image_root = common_image_root(self.table["path"].tolist())
        if self.image_root is not None:
            self.table.attrs[IMAGE_ROOT_ATTR] = str(self.image_root)

    @property
    def name(self) -> str:
        return self.report.dataset

    def save(self, path: str | Path) -> Path:
        """Write the table as Parquet (atomically) and the report next to it, both with relative paths."""
        from fmn_core.utils.atomic import atomic_write_text

        path = save_split_table(self.table, path, self.image_root)
        report = Path(path).with_suffix(".report.json")
        atomic_write_text(report, self.report.to_json(relative_to=report.parent))
        return path


def assemble(rows: list[dict], report: DatasetReport, check_images: ImageCheck = "header",
             strict: bool = True, image_root: Path | None = None) -> LoadedDataset:
    """Drop unreadable images (counted), build the table, add whole-table findings.

    With ``strict`` any error finding raises :class:`DatasetError`; otherwise the
    table is returned together with the report for the caller to judge.
    ``image_root``: the folder every image lies under (saved tables are relative to it).
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
    return LoadedDataset(table, report, image_root)
