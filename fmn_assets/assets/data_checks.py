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


def _result(outcome: SuiteOutcome) -> dg.AssetCheckResult:
    failed = sum(f["unexpected_count"] for f in outcome.failures)
    return dg.AssetCheckResult(
        passed=outcome.success, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"expectations": outcome.evaluated, "failed_expectations": len(outcome.failures),
                  "unexpected_values": failed, "great_expectations": dg.MetadataValue.md(outcome.markdown())})


CHECK = dict(asset=dataset_splits, blocking=True, partitions_def=dataset_partitions)


@dg.asset_check(**CHECK, description="Columns and types, unique paths, split names, person id and camera ranges, "
                                     "training labels 0..r-1.")
def split_table_schema(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _result(schema_suite(split_table(paths, context.partition_key), context.partition_key))


@dg.asset_check(**CHECK, description="Every image file exists and decodes completely.")
def images_readable(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _result(images_suite(split_table(paths, context.partition_key)))


@dg.asset_check(**CHECK, description="No identity (distractors aside) is shared by train and test.")
def identities_disjoint(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _result(identities_suite(split_table(paths, context.partition_key)))


@dg.asset_check(**CHECK, description="Every query identity is in the gallery under another camera.")
def queries_matchable(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _result(queries_suite(split_table(paths, context.partition_key)))


@dg.asset_check(**CHECK, description="Images per split equal the published counts (Market-1501: 12,936 / 3,368 / "
                                     "19,732 with junk; CUHK03-NP; DukeMTMC-reID) or, for the synthetic dataset, "
                                     "the counts the generator recorded.")
def official_counts(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    dataset = context.partition_key
    table = split_table(paths, dataset)
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
