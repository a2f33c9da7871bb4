"""Data stage: the raw dataset folders (observed through DVC) and the validated split table."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import dagster as dg

from fmn_assets.configs import DatasetSplitsConfig
from fmn_assets.metadata import table_schema
from fmn_assets.partitions import DATASETS, dataset_partitions
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data import DatasetError, read_dataset
from fmn_core.data.synthetic import PRESETS as SYNTHETIC_PRESETS
from fmn_core.data.synthetic import generate_synthetic

OWNERS = ["team:reid"]

#: What a user must put where, per dataset (shown when the folder is missing).
LAYOUT_HINTS = {
    "market1501": "the Market-1501 folders bounding_box_train/, query/, bounding_box_test/",
    "dukemtmc_reid": "the DukeMTMC-reID folders bounding_box_train/, query/, bounding_box_test/ "
                     "(never downloaded by this project: the dataset was withdrawn)",
    "cuhk03_detected": "cuhk-03.mat and cuhk03_new_protocol_config_detected.mat",
    "cuhk03_labeled": "cuhk-03.mat and cuhk03_new_protocol_config_labeled.mat",
    "custom": "manifest.csv with columns path,pid,camid,split",
    "synthetic": "nothing: the synthetic dataset is generated",
}

COLUMN_DESCRIPTIONS = {
    "path": "image file (absolute)", "pid": "person id as the dataset writes it (0 = distractor)",
    "camid": "camera, 0-based", "split": "train / query / gallery", "dataset": "dataset name",
    "filename": "source file name", "label": "training class 0..r-1; -1 outside train",
}


@dg.observable_source_asset(partitions_def=dataset_partitions, group_name="data",
                            description="The dataset folders under data/, versioned by DVC (data.dvc). Observing "
                                        "reads each dataset's version from DVC's manifest of the folder.")
def raw_datasets(dvc: DVCResource, paths: ProjectPaths) -> dg.DataVersionsByPartition:
    versions = dvc.folder_versions(paths.data_root)
    return dg.DataVersionsByPartition({name: versions.get(name, "not-tracked") for name in DATASETS})


def _fingerprint(table) -> str:
    """A version for data outside the DVC-tracked folder: paths, sizes and modification times."""
    digest = hashlib.md5()
    for path in sorted(table["path"]):
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dg.asset(partitions_def=dataset_partitions, group_name="data", deps=[raw_datasets], owners=OWNERS,
          kinds={"pandas", "parquet", "dvc"}, tags={"paper_section": "4.1"},
          description="One split table per dataset: path, pid, camid, split, dataset, filename and training label "
                      "(artifacts/<dataset>/splits.parquet), read by fmn_core's reader for the dataset. The "
                      "synthetic dataset is generated first. Its data version is the dataset's DVC version.")
def dataset_splits(context: dg.AssetExecutionContext, config: DatasetSplitsConfig, paths: ProjectPaths,
                   dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    with paths.exclusive(dataset, "dataset_splits"):
        root = Path(config.root).expanduser().absolute() if config.root else paths.dataset_root(dataset)
        if dataset == "synthetic":
            synthetic = dataclasses.replace(SYNTHETIC_PRESETS[config.synthetic_preset.value],
                                            seed=config.synthetic_seed)
            summary = generate_synthetic(root, synthetic, workers=os.cpu_count() or 1, overwrite=True)
            context.log.info(f"synthetic dataset at {root}: {'reused' if summary.reused else 'generated'} "
                             f"{summary.total_files} files")
        elif not root.exists():
            raise dg.Failure(
                allow_retries=False,
                description=f"dataset '{dataset}' not found: expected {LAYOUT_HINTS[dataset]} at {root}. Put the "
                            f"dataset there, or set `root` in the config of dataset_splits.",
                metadata={"expected_location": dg.MetadataValue.path(str(root))})
        try:
            loaded = read_dataset(dataset, root, check_images=config.check_images.value, strict=config.strict)
        except DatasetError as exc:
            details = exc.report.to_markdown() if exc.report is not None else str(exc)
            raise dg.Failure(allow_retries=False, description=f"dataset '{dataset}' at {root} cannot be used: {exc}",
                             metadata={"report": dg.MetadataValue.md(details)}) from exc
        out = loaded.save(paths.artifacts(dataset) / "splits.parquet")

        data_root = paths.data_root
        if root.is_relative_to(data_root):
            versioned = dvc.track(data_root)
            version = dvc.folder_versions(data_root).get(dataset) or versioned.md5
            dvc_meta = {"dvc_file": dg.MetadataValue.path(str(versioned.dvc_file)), "data_dvc_md5": versioned.md5,
                        "dvc_pushed": versioned.pushed, "dvc_push": versioned.push_message}
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
    """The split table ``dataset_splits`` wrote for ``dataset``."""
    from fmn_core.data import load_split_table

    path = paths.artifacts(dataset) / "splits.parquet"
    if not path.is_file():
        raise dg.Failure(allow_retries=False,
                         description=f"no split table at {path}: materialize dataset_splits for '{dataset}' first")
    return load_split_table(path)


def load_report(paths: ProjectPaths, dataset: str) -> dict:
    """The reader's report saved next to the split table (counts and findings)."""
    file = paths.artifacts(dataset) / "splits.report.json"
    return json.loads(file.read_text()) if file.is_file() else {"findings": []}
