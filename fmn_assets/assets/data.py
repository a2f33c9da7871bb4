"""Data stage: the generated synthetic dataset, the raw dataset folders (observed through DVC), the split table."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from fmn_assets.automation import OBSERVE_ON_CRON, WHEN_UPSTREAM_CHANGED
from fmn_assets.configs import DatasetSplitsConfig, SyntheticDatasetConfig
from fmn_assets.metadata import table_schema
from fmn_assets.partitions import DATASETS, dataset_partitions
from fmn_assets.resources import DVCError, DVCResource, ProjectPaths
from fmn_core.data import DatasetError, read_dataset
from fmn_core.data.synthetic import PRESETS as SYNTHETIC_PRESETS
from fmn_core.data.synthetic import generate_synthetic

OWNERS = ["team:reid"]

#: What a user must put where, per dataset (shown when the folder is missing).
LAYOUT_HINTS = {
    "market1501": "the Market-1501 folders bounding_box_train/, query/, bounding_box_test/",
    "dukemtmc_reid": "the DukeMTMC-reID folders bounding_box_train/, query/, bounding_box_test/ "
                     "(never downloaded by this project: the dataset was withdrawn)",
    "cuhk01": "the CUHK01 campus/ folder (images 0001001.png ... 0971004.png)",
    "cuhk03_detected": "cuhk-03.mat and cuhk03_new_protocol_config_detected.mat",
    "cuhk03_labeled": "cuhk-03.mat and cuhk03_new_protocol_config_labeled.mat",
    "custom": "manifest.csv with columns path,pid,camid,split",
    "synthetic": "the generated dataset: materialize synthetic_dataset (job fmn_synthetic_data) first, or "
                 "`dvc pull data/synthetic`",
}

COLUMN_DESCRIPTIONS = {
    "path": "image file (absolute when loaded; stored relative to the dataset root, recorded in the Parquet schema)",
    "pid": "person id as the dataset writes it (0 = distractor)",
    "camid": "camera, 0-based", "split": "train / query / gallery", "dataset": "dataset name",
    "filename": "source file name", "label": "training class 0..r-1; -1 outside train",
}

#: The one partition synthetic_dataset has. A separate definition, not the dataset partitions, so only the
#: synthetic lineage depends on it; Dagster runs one partitions definition per run, so it is materialized in a
#: run of its own (job fmn_synthetic_data; `python3 run.py main` and backfills do it first).
synthetic_partitions = dg.StaticPartitionsDefinition(["synthetic"])


@dg.asset(partitions_def=synthetic_partitions, group_name="data", owners=OWNERS, kinds={"python", "dvc"},
          description="The synthetic Market-1501-style dataset written to data/synthetic by fmn_core's generator "
                      "(deterministic by preset and seed; an identical dataset already there is reused), then "
                      "versioned with `dvc add data` and pushed. Its data version is the DVC version of "
                      "data/synthetic.")
def synthetic_dataset(context: dg.AssetExecutionContext, config: SyntheticDatasetConfig, paths: ProjectPaths,
                      dvc: DVCResource) -> dg.MaterializeResult:
    root = paths.dataset_root("synthetic")
    with paths.exclusive("synthetic", "synthetic_dataset"):
        preset = dataclasses.replace(SYNTHETIC_PRESETS[config.preset.value], seed=config.seed)
        # one worker: the small preset takes seconds on one core, less than starting spawned workers would cost
        summary = generate_synthetic(root, preset, workers=1, overwrite=True)
        context.log.info(f"synthetic dataset at {root}: {'reused' if summary.reused else 'generated'} "
                         f"{summary.total_files} files")
        versioned = dvc.track(paths.data_root)
        version = _dataset_version(dvc, paths, "synthetic") or versioned.md5
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={"path": dg.MetadataValue.path(str(root)), "preset": config.preset.value, "seed": config.seed,
                  "files": summary.total_files, "reused": summary.reused, "data_version": version,
                  **{f"{split}_images": int(counts["images"]) for split, counts in summary.counts.items()},
                  **_dvc_metadata(versioned)})


@dg.observable_source_asset(partitions_def=dataset_partitions, group_name="data", automation_condition=OBSERVE_ON_CRON,
                            description="The dataset folders under data/, versioned by DVC as one folder (data.dvc). "
                                        "Observing asks DVC (`dvc ls`) for each dataset's files and hashes; it takes "
                                        "no lock. data/synthetic is produced by synthetic_dataset, so the synthetic "
                                        "splits depend on that asset instead.")
def raw_datasets(dvc: DVCResource, paths: ProjectPaths) -> dg.DataVersionsByPartition:
    try:
        versions = dvc.dataset_versions(paths.data_root)
    except DVCError as exc:
        raise dg.Failure(description=str(exc)) from exc
    # a dataset with no files under data/ gets no observation: it stays missing, so nothing downstream is requested
    return dg.DataVersionsByPartition({name: versions[name] for name in DATASETS if name in versions})


def _dataset_version(dvc: DVCResource, paths: ProjectPaths, dataset: str) -> str | None:
    """The dataset's own DVC version; None when DVC cannot list it (the caller falls back to data.dvc's md5)."""
    try:
        return dvc.dataset_versions(paths.data_root).get(dataset)
    except DVCError:
        return None


def _dvc_metadata(versioned) -> dict:
    """data.dvc's fields, named for the data folder (its md5 covers every dataset)."""
    return {"dvc_file": dg.MetadataValue.path(str(versioned.dvc_file)), "data_dvc_md5": versioned.md5,
            "dvc_pushed": versioned.pushed, "dvc_push": versioned.push_message,
            "git_commit": versioned.git_commit or "none", "git_dirty": bool(versioned.git_dirty)}


def _fingerprint(table) -> str:
    """A version for data outside the DVC-tracked folder: paths, sizes and modification times."""
    digest = hashlib.md5()
    for path in sorted(table["path"]):
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


#: The synthetic splits come from synthetic_dataset, every other dataset's from the observed folder.
_FROM_SYNTHETIC = dg.StaticPartitionMapping({"synthetic": "synthetic"})
_FROM_RAW = dg.StaticPartitionMapping({name: name for name in DATASETS if name != "synthetic"})


@dg.asset(partitions_def=dataset_partitions, group_name="data", owners=OWNERS,
          automation_condition=WHEN_UPSTREAM_CHANGED,
          deps=[dg.AssetDep(raw_datasets, partition_mapping=_FROM_RAW),
                dg.AssetDep(synthetic_dataset, partition_mapping=_FROM_SYNTHETIC)],
          kinds={"pandas", "parquet", "dvc"}, tags={"paper_section": "4.1"},
          description="One split table per dataset: path, pid, camid, split, dataset, filename and training label "
                      "(artifacts/{dataset}/splits.parquet, image paths relative to the dataset root), read by "
                      "fmn_core's reader for the dataset. It never writes into data/. Its data version is the "
                      "dataset's DVC version.")
def dataset_splits(context: dg.AssetExecutionContext, config: DatasetSplitsConfig, paths: ProjectPaths,
                   dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    with paths.exclusive(dataset, "dataset_splits"):
        root = Path(config.root).expanduser().absolute() if config.root else paths.dataset_root(dataset)
        if not root.exists():
            raise dg.Failure(
                allow_retries=False,
                description=f"dataset '{dataset}' not found: expected {LAYOUT_HINTS[dataset]} at {root}. Put the "
                            f"dataset there, or set `root` in the config of dataset_splits.",
                metadata={"expected_location": dg.MetadataValue.path(str(root))})
        try:
            if config.split_id and dataset != "cuhk01":
                raise dg.Failure(allow_retries=False, description=f"split_id={config.split_id} chooses a CUHK01 "
                                 f"split; dataset '{dataset}' has one fixed split: leave split_id at 0")
            options = {"split_id": config.split_id} if dataset == "cuhk01" else {}
            loaded = read_dataset(dataset, root, check_images=config.check_images.value, strict=config.strict,
                                  **options)
        except DatasetError as exc:
            details = exc.report.to_markdown() if exc.report is not None else str(exc)
            raise dg.Failure(allow_retries=False, description=f"dataset '{dataset}' at {root} cannot be used: {exc}",
                             metadata={"report": dg.MetadataValue.md(details)}) from exc
        out = loaded.save(paths.splits(dataset))

        data_root = paths.data_root
        if root.is_relative_to(data_root):
            versioned = dvc.track(data_root)
            version = _dataset_version(dvc, paths, dataset) or versioned.md5
            dvc_meta = _dvc_metadata(versioned)
        else:
            version = _fingerprint(loaded.table)
            dvc_meta = {"dvc_file": f"not tracked: {root} lies outside {data_root}"}

    table = loaded.table
    counts = loaded.report.counts
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "dagster/row_count": len(table),
            "dagster/column_schema": table_schema(table, COLUMN_DESCRIPTIONS),
            "path": dg.MetadataValue.path(str(out)),
            "dataset_root": dg.MetadataValue.path(str(root)),
            **{f"{split}_images": counts.get(split, {}).get("images", 0) for split in ("train", "query", "gallery")},
            **{f"{split}_identities": counts.get(split, {}).get("identities", 0)
               for split in ("train", "query", "gallery")},
            "junk_dropped": loaded.report.count("junk_image"),
            "findings": len(loaded.report.findings),
            "report": dg.MetadataValue.md(loaded.report.to_markdown()),
            "data_version": version,
            **dvc_meta,
        })


def split_table(paths: ProjectPaths, dataset: str):
    """The split table ``dataset_splits`` wrote for ``dataset``, image paths made absolute again.

    The table records its dataset root relative to itself, so it still finds
    its images after the project folder moved or was cloned and pulled.
    """
    from fmn_core.data import DatasetLayoutError, load_split_table

    path = paths.splits(dataset)
    if not path.is_file():
        raise dg.Failure(allow_retries=False,
                         description=f"no split table at {path}: materialize dataset_splits for '{dataset}' first")
    try:
        return load_split_table(path)
    except DatasetLayoutError as exc:
        raise dg.Failure(allow_retries=False, description=f"{exc} Materialize dataset_splits for '{dataset}' "
                                                          "again to read it where it is now.") from exc


def load_report(paths: ProjectPaths, dataset: str) -> dict:
    """The reader's report saved next to the split table (counts and findings), its root made absolute."""
    file = paths.splits_report(dataset)
    if not file.is_file():
        return {"findings": []}
    report = json.loads(file.read_text())
    if "paths" in report:  # written with relative paths: the root is relative to the report's folder
        report["root"] = os.path.normpath(file.parent / report["root"])
    return report
