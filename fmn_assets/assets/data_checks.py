"""Blocking Great Expectations checks on the split table: a failure stops training downstream."""

import dagster as dg

from fmn_assets.assets.data import dataset_splits, load_report, split_table
from fmn_assets.partitions import dataset_partitions
from fmn_assets.resources import ProjectPaths
from fmn_assets.validation import (
    OFFICIAL_COUNTS,
    SuiteOutcome,
    counts_suite,
    identities_suite,
    images_suite,
    queries_suite,
    schema_suite,
)
from fmn_core.utils.errors import FMNInputError


def _result(outcome: SuiteOutcome) -> dg.AssetCheckResult:
    failed = sum(f["unexpected_count"] for f in outcome.failures)
    return dg.AssetCheckResult(
        passed=outcome.success, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expectations": outcome.evaluated, "failed_expectations": len(outcome.failures),
                  "unexpected_values": failed, "great_expectations": dg.MetadataValue.md(outcome.markdown())})


#: (check name, description): one Great Expectations suite each, all validated in one step.
SUITES = (
    ("split_table_schema", "Columns and types, unique paths, split names, person id and camera ranges, training "
                           "labels 0..r-1."),
    ("images_readable", "Every image file exists and decodes completely."),
    ("identities_disjoint", "No identity (distractors aside) is shared by train and test."),
    ("queries_matchable", "Every query identity is in the gallery under another camera."),
    ("official_counts", "Images per split equal the published counts (Market-1501: 12,936 / 3,368 / 19,732 with "
                        "junk; CUHK01: 1,940 / 972 / 972; CUHK03-NP; DukeMTMC-reID) or, for the synthetic dataset, "
                        "the counts the generator "
                        "recorded."),
)


def _counts_result(paths: ProjectPaths, dataset: str, table) -> dg.AssetCheckResult:
    report = load_report(paths, dataset)
    junk = sum(f["count"] for f in report["findings"] if f["kind"] == "junk_image")
    if dataset == "synthetic":
        from fmn_core.data.synthetic import read_metadata

        expected = {split: int(c["images"]) for split, c in read_metadata(report["root"])["counts"].items()}
        junk = 0  # the generator's counts already leave junk out of the gallery, as the reader does
    elif dataset in OFFICIAL_COUNTS:
        expected = OFFICIAL_COUNTS[dataset]
    else:
        return dg.AssetCheckResult(passed=True, metadata={"note": f"no published counts for '{dataset}'"})
    return _result(counts_suite(table, expected, junk))


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=dataset_splits, blocking=True, partitions_def=dataset_partitions,
                             description=description) for name, description in SUITES],
    description="The split table's Great Expectations suites: loaded once, validated in one step, one result "
                "per suite. Each is blocking: a failure stops training downstream.")
def split_table_suites(context: dg.AssetCheckExecutionContext, paths: ProjectPaths):
    dataset = context.partition_key
    try:
        table = split_table(paths, dataset)
    except FMNInputError as exc:  # a table whose columns break the schema cannot be validated further
        for name, _ in SUITES:
            yield dg.AssetCheckResult(check_name=name, asset_key=dataset_splits.key, passed=False,
                                      metadata={"error": str(exc)})
        return
    outcomes = {
        "split_table_schema": lambda: _result(schema_suite(table, dataset)),
        "images_readable": lambda: _result(images_suite(table)),
        "identities_disjoint": lambda: _result(identities_suite(table)),
        "queries_matchable": lambda: _result(queries_suite(table)),
        "official_counts": lambda: _counts_result(paths, dataset, table),
    }
    for name, _ in SUITES:
        result = outcomes[name]()
        yield dg.AssetCheckResult(check_name=name, asset_key=dataset_splits.key, passed=result.passed,
                                  severity=result.severity, metadata=result.metadata)
