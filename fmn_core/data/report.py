"""What a dataset reader saw: counts, and every problem with a count and examples.

Readers never drop a file silently and never fail with a bare traceback: each
skipped or suspicious file becomes a :class:`Finding` with a count and a few
example paths, and fatal problems raise :class:`DatasetError` carrying the
whole report.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from fmn_core.utils.errors import FMNInputError

Severity = Literal["error", "warning", "info"]

#: How many example paths a finding keeps.
MAX_EXAMPLES = 5


@dataclass
class Finding:
    """One kind of problem, how often it occurred, and where."""

    kind: str
    severity: Severity
    count: int
    message: str
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = f"[{self.severity}] {self.kind}: {self.message} (count={self.count})"
        if self.examples:
            text += "\n    e.g. " + "\n         ".join(self.examples)
        return text


@dataclass
class DatasetReport:
    """Counts per split plus findings; serialisable for Dagster metadata."""

    dataset: str
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, severity: Severity, message: str, examples: list[str] | None = None,
            count: int | None = None) -> None:
        """Record a finding; ``count`` defaults to the number of examples given."""
        examples = list(examples or [])
        total = len(examples) if count is None else int(count)
        if total == 0:
            return
        self.findings.append(Finding(kind, severity, total, message, examples[:MAX_EXAMPLES]))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def count(self, kind: str) -> int:
        """Total count of findings of one kind (0 when absent)."""
        return sum(f.count for f in self.findings if f.kind == kind)

    def record_counts(self, table: pd.DataFrame) -> None:
        """Store images / identities / cameras per split of the final table."""
        self.counts = {}
        for split, part in table.groupby("split", sort=False):
            self.counts[str(split)] = {
                "images": len(part),
                "identities": int(part["pid"].nunique()),
                "cameras": int(part["camid"].nunique()),
            }

    def raise_for_errors(self) -> None:
        """Raise :class:`DatasetError` when any finding is an error."""
        if self.errors:
            raise DatasetError(self)

    def to_dict(self, relative_to: str | Path | None = None) -> dict:
        """The report as plain data; with ``relative_to``, the form written to disk.

        On disk the root is relative to ``relative_to`` (the report file's folder)
        and example paths under the root relative to the root, so the report
        moves with the dataset like the split table does.
        """
        if relative_to is None:
            return {"dataset": self.dataset, "root": self.root, "counts": self.counts,
                    "findings": [asdict(f) for f in self.findings]}
        base = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
        prefix = os.path.abspath(base).rstrip(os.sep) + os.sep
        findings = [{**asdict(f), "examples": [e[len(prefix):] if e.startswith(prefix) else e for e in f.examples]}
                    for f in self.findings]
        root = os.path.relpath(os.path.abspath(self.root), os.path.abspath(relative_to))
        return {"dataset": self.dataset, "root": root,
                "paths": "root relative to this file's folder; example paths under the root relative to it",
                "counts": self.counts, "findings": findings}

    def to_json(self, relative_to: str | Path | None = None) -> str:
        return json.dumps(self.to_dict(relative_to), indent=2)

    def to_markdown(self) -> str:
        """A short Markdown summary, used as Dagster metadata and CLI output."""
        lines = [f"**{self.dataset}** at `{self.root}`", "", "| split | images | identities | cameras |",
                 "|---|---:|---:|---:|"]
        for split, c in self.counts.items():
            lines.append(f"| {split} | {c['images']} | {c['identities']} | {c['cameras']} |")
        if self.findings:
            lines += ["", "| severity | finding | count | example |", "|---|---|---:|---|"]
            for f in self.findings:
                example = f"`{f.examples[0]}`" if f.examples else ""
                lines.append(f"| {f.severity} | {f.kind}: {f.message} | {f.count} | {example} |")
        return "\n".join(lines)

    def __str__(self) -> str:
        head = f"{self.dataset} at {self.root}: " + ", ".join(
            f"{split} {c['images']} images / {c['identities']} ids" for split, c in self.counts.items())
        return "\n".join([head, *(str(f) for f in self.findings)])


class DatasetError(FMNInputError):
    """A dataset cannot be used as it is; the message lists every problem found."""

    def __init__(self, report_or_message: DatasetReport | str):
        self.report = report_or_message if isinstance(report_or_message, DatasetReport) else None
        if self.report is not None:
            problems = "\n".join(str(f) for f in self.report.errors)
            # the warnings often say why (48 malformed names -> an empty train split): show them too
            causes = [f for f in self.report.findings if f.severity == "warning"]
            message = f"dataset {self.report.dataset!r} at {self.report.root} is not usable:\n{problems}"
            if causes:
                message += "\nwhat the reader skipped, which may be why:\n" + "\n".join(str(f) for f in causes)
        else:
            message = str(report_or_message)
        super().__init__(message)


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """The root folder is missing or not laid out as the format requires."""


def check_split_consistency(table: pd.DataFrame, report: DatasetReport) -> None:
    """Add the findings that concern the table as a whole.

    Empty train/query/gallery splits are errors, and so is an identity shared
    between train and test (pid 0 included: a dataset whose train split holds pid 0 uses it as a person): both make the
    evaluation meaningless. Queries without a valid gallery match (same id,
    another camera) are warnings, because the standard protocol skips them.
    """
    for split in ("train", "query", "gallery"):
        if not (table["split"] == split).any():
            report.add("empty_split", "error", f"the {split} split has no images", count=1,
                       examples=[f"{report.root} ({split})"])

    train = table[table["split"] == "train"]
    test = table[table["split"] != "train"]
    shared = sorted(set(train["pid"]) & set(test["pid"]))  # Market's distractors (pid 0) are never in train
    if shared:
        rows = test[test["pid"].isin(shared)]
        report.add("train_test_identity_overlap", "error",
                   f"{len(shared)} identities appear in both train and test (e.g. pid {shared[:5]}); "
                   "re-ID protocols need disjoint identities",
                   examples=rows["path"].tolist(), count=len(shared))

    query = table[table["split"] == "query"]
    gallery = table[table["split"] == "gallery"]
    if len(query) and len(gallery):
        gallery_pairs = gallery.groupby("pid")["camid"].agg(set).to_dict()
        no_id, same_cam_only = [], []
        for path, pid, camid in zip(query["path"], query["pid"], query["camid"], strict=True):
            cams = gallery_pairs.get(pid)
            if cams is None:
                no_id.append(path)
            elif cams <= {camid}:
                same_cam_only.append(path)
        report.add("query_identity_not_in_gallery", "warning",
                   "query images whose identity has no gallery image; the evaluation skips them", no_id)
        report.add("query_match_only_same_camera", "warning",
                   "query images whose identity is in the gallery only under the same camera; "
                   "the evaluation skips them", same_cam_only)
