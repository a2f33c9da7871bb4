"""Jobs, the retraining schedule and the data-version sensor."""

import json
import os

import dagster as dg

from fmn_assets.configs import GRNTrainingConfig, TrainingPreset
from fmn_assets.partitions import DATASETS
from fmn_assets.resources import DVCError, DVCResource, ProjectPaths

#: Everything materialised per dataset, with the checks on it: not the observed raw data, and not
#: synthetic_dataset, whose partitions definition (synthetic only) differs, which Dagster runs in its own run.
PIPELINE = dg.AssetSelection.all() - dg.AssetSelection.assets("raw_datasets", "synthetic_dataset")

fmn_synthetic_data = dg.define_asset_job(
    "fmn_synthetic_data", selection=dg.AssetSelection.assets("synthetic_dataset"),
    description="Generate (or reuse) the synthetic dataset in data/synthetic and version it with DVC; run it before "
                "fmn_pipeline for the synthetic partition (`python3 run.py main` does).")

fmn_pipeline = dg.define_asset_job(
    "fmn_pipeline", selection=PIPELINE,
    description="The whole graph for one dataset with the CPU demo recipe (ResNet-18 from scratch, 128x64); "
                "edit the config in the launchpad to change it.")
fmn_pipeline_paper = dg.define_asset_job(
    "fmn_pipeline_paper", selection=PIPELINE,
    description="The whole graph with the paper's recipe (ResNet-50 from ImageNet, 224x224, section 4.2).",
    config=dg.RunConfig(ops={"grn_checkpoint": GRNTrainingConfig(preset=TrainingPreset.paper)}))

RETRAIN_CRON = os.environ.get("FMN_RETRAIN_CRON", "0 3 * * 1")  # Mondays 03:00


def available_datasets(paths: ProjectPaths) -> list[str]:
    """Datasets that can be trained now: those whose folder exists (the synthetic one once generated or pulled)."""
    return [name for name in DATASETS if paths.dataset_root(name).exists()]


@dg.schedule(cron_schedule=RETRAIN_CRON, job=fmn_pipeline, default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Retrain every available dataset (weekly by default; set FMN_RETRAIN_CRON to change it). "
                         "Stopped until a user starts it.")
def weekly_retraining(context: dg.ScheduleEvaluationContext, paths: ProjectPaths):
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [dg.RunRequest(run_key=f"{name}:{stamp}", partition_key=name, tags={"fmn/trigger": "schedule"})
            for name in available_datasets(paths)]


@dg.sensor(job=fmn_pipeline, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Requests retraining of a dataset when its DVC version (from data.dvc, read with `dvc ls`, "
                       "no lock) changes. The first tick only records the versions it finds.")
def data_version_sensor(context: dg.SensorEvaluationContext, paths: ProjectPaths, dvc: DVCResource):
    try:
        versions = dvc.dataset_versions(paths.data_root)
    except DVCError as exc:
        return dg.SkipReason(f"DVC could not list the data versions; trying again next tick: {exc}")
    seen = json.loads(context.cursor) if context.cursor else None
    requests = []
    if seen is not None:
        for name, version in versions.items():
            if name in DATASETS and seen.get(name) != version:
                requests.append(dg.RunRequest(run_key=f"{name}:{version}", partition_key=name,
                                              tags={"fmn/trigger": "data-version", "fmn/data_version": version}))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(versions, sort_keys=True))
