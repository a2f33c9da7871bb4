"""Great Expectations suites that decide whether a split table may be trained on.

Each suite is run with great-expectations 1.x directly on a pandas frame
(the split table, or a frame derived from it where a property is not a
single-column expectation, e.g. "this query has a gallery match under
another camera" becomes a boolean column expected to be all true). A failed
expectation is reported with its unexpected count and example image paths.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from fmn_core.data.image_check import find_unreadable
from fmn_core.data.schema import COLUMNS, SPLITS

#: Published image counts per split (Market-1501's gallery count includes its 3,819 junk boxes).
OFFICIAL_COUNTS: dict[str, dict[str, int]] = {
    "market1501": {"train": 12936, "query": 3368, "gallery": 19732},
    "dukemtmc_reid": {"train": 16522, "query": 2228, "gallery": 17661},
    # 485 training identities x 4 images; 486 test identities x 2 camera-A queries and 2 camera-B gallery images
    "cuhk01": {"train": 1940, "query": 972, "gallery": 972},
    "cuhk03_detected": {"train": 7365, "query": 1400, "gallery": 5332},
    "cuhk03_labeled": {"train": 7368, "query": 1400, "gallery": 5328},
}
#: Cameras per dataset (camid is 0-based); CUHK03-NP records the view within a camera pair.
CAMERAS: dict[str, int] = {"synthetic": 6, "market1501": 6, "dukemtmc_reid": 8, "cuhk01": 2, "cuhk03_detected": 2,
                           "cuhk03_labeled": 2}
MAX_EXAMPLES = 5


@dataclass
class SuiteOutcome:
    """The result of one suite: which expectations failed, how often, on which images."""

    name: str
    success: bool
    evaluated: int
    failures: list[dict] = field(default_factory=list)

    def markdown(self) -> str:
        if self.success:
            return f"All {self.evaluated} expectations of `{self.name}` passed."
        lines = [f"**{len(self.failures)} of {self.evaluated} expectations failed** (`{self.name}`)", "",
                 "| expectation | column | unexpected | observed | examples |", "|---|---|---:|---|---|"]
        for f in self.failures:
            examples = "<br>".join(f"`{e}`" for e in f["examples"])
            lines.append(f"| {f['expectation']} | {f['column']} | {f['unexpected_count']} | {f['observed']} | "
                         f"{examples} |")
        return "\n".join(lines)


@functools.cache
def _datasource():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context.data_sources.add_pandas("fmn_split_tables")


def run_suite(name: str, frame: pd.DataFrame, expectations: Sequence, example_column: str = "path") -> SuiteOutcome:
    """Validate ``frame`` against ``expectations`` (GE expectation objects)."""
    import great_expectations as gx

    source = _datasource()
    asset_name = f"{name}_{len(source.assets)}"
    batch = source.add_dataframe_asset(asset_name).add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    result_format = {"result_format": "COMPLETE"}
    if example_column in frame.columns:
        result_format["unexpected_index_column_names"] = [example_column]
    result = batch.validate(suite, result_format=result_format)
    source.delete_asset(asset_name)
    failures = []
    for item in result.results:
        if item.success:
            continue
        details = item.result or {}
        index_list = details.get("unexpected_index_list") or []
        examples = [str(entry.get(example_column, entry)) if isinstance(entry, dict) else str(entry)
                    for entry in index_list[:MAX_EXAMPLES]]
        if not examples:
            examples = [str(v) for v in (details.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]
        config = item.expectation_config
        failures.append({
            "expectation": config.type,
            "column": config.kwargs.get("column") or config.kwargs.get("column_A") or "",
            "unexpected_count": int(details.get("unexpected_count") or 0),
            "observed": str(details.get("observed_value", ""))[:200],
            "examples": examples,
            "exception": str(item.exception_info.get("exception_message", ""))
            if getattr(item, "exception_info", None) and item.exception_info.get("raised_exception") else "",
        })
    return SuiteOutcome(name, bool(result.success), len(result.results), failures)


def schema_suite(table: pd.DataFrame, dataset: str) -> SuiteOutcome:
    """Columns and types, unique paths, split names, id and camera ranges, training labels."""
    from great_expectations import expectations as gxe

    train = table["split"] == "train"
    num_classes = int(table.loc[train, "pid"].nunique())
    frame = table.assign(label_in_range=(train & table["label"].between(0, num_classes - 1))
                         | (~train & (table["label"] == -1)))
    cameras = CAMERAS.get(dataset)
    expectations = [gxe.ExpectTableColumnsToMatchSet(column_set=[*COLUMNS, "label_in_range"], exact_match=True)]
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=name) for name in COLUMNS]
    expectations += [gxe.ExpectColumnValuesToBeOfType(column=name, type_=dtype)
                     for name, dtype in (("pid", "int64"), ("camid", "int64"), ("label", "int64"))]
    expectations += [
        gxe.ExpectColumnValuesToBeUnique(column="path"),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeInSet(column="dataset", value_set=[dataset]),
        gxe.ExpectColumnValuesToBeBetween(column="pid", min_value=0),
        gxe.ExpectColumnValuesToBeBetween(column="camid", min_value=0,
                                          max_value=cameras - 1 if cameras else None),
        gxe.ExpectColumnValuesToBeInSet(column="label_in_range", value_set=[True]),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
    ]
    frame = frame.astype({"path": object, "split": object, "dataset": object, "filename": object})
    return run_suite("split_table_schema", frame, expectations)


def images_suite(table: pd.DataFrame) -> SuiteOutcome:
    """Every image file exists and decodes completely."""
    from great_expectations import expectations as gxe

    problems = dict(find_unreadable(table["path"].tolist(), mode="decode"))
    frame = pd.DataFrame({"path": table["path"].astype(object),
                          "file_exists": [problems.get(p) != "file does not exist" for p in table["path"]],
                          "decodes": [p not in problems for p in table["path"]]})
    return run_suite("images_readable", frame, [gxe.ExpectColumnValuesToBeInSet(column="file_exists", value_set=[True]),
                                                gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True])])


def identities_suite(table: pd.DataFrame) -> SuiteOutcome:
    """No person (distractors, pid 0, aside) is in both the training and the test identities."""
    from great_expectations import expectations as gxe

    train_ids = set(table.loc[table["split"] == "train", "pid"])
    test = table[table["split"] != "train"]
    frame = pd.DataFrame({"path": test["path"].astype(object),
                          "identity_also_in_train": [pid > 0 and pid in train_ids for pid in test["pid"]]})
    return run_suite("identities_disjoint", frame,
                     [gxe.ExpectColumnValuesToBeInSet(column="identity_also_in_train", value_set=[False])])


def queries_suite(table: pd.DataFrame) -> SuiteOutcome:
    """Every query identity appears in the gallery under another camera (else it cannot be evaluated)."""
    from great_expectations import expectations as gxe

    gallery = table[table["split"] == "gallery"].groupby("pid")["camid"].agg(set).to_dict()
    query = table[table["split"] == "query"]
    matchable = [bool(gallery.get(pid, set()) - {cam}) for pid, cam in zip(query["pid"], query["camid"], strict=True)]
    frame = pd.DataFrame({"path": query["path"].astype(object), "has_cross_camera_gallery_match": matchable})
    return run_suite("queries_matchable", frame, [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToBeInSet(column="has_cross_camera_gallery_match", value_set=[True])])


def counts_suite(table: pd.DataFrame, expected: dict[str, int], dropped_junk: int = 0) -> SuiteOutcome:
    """Images per split equal the published (or generated) counts; junk files count toward the gallery."""
    from great_expectations import expectations as gxe

    observed = table["split"].value_counts().to_dict()
    images = [int(observed.get(s, 0)) + (dropped_junk if s == "gallery" else 0) for s in expected]
    frame = pd.DataFrame({"path": [f"{s}: {n} images, expected {e}" for (s, e), n in zip(expected.items(), images,
                                                                                           strict=True)],
                          "images": images, "expected": list(expected.values())})
    return run_suite("official_counts", frame, [gxe.ExpectColumnPairValuesToBeEqual(column_A="images",
                                                                                   column_B="expected")])
