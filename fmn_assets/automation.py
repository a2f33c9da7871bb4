"""Jobs and declarative automation: observe the raw data on a cron, rebuild only what changed."""

import os

import dagster as dg

from fmn_assets.configs import GRNTrainingConfig, TrainingPreset

#: Everything materialised per dataset, with the checks on it: not the observed raw data, and not
#: synthetic_dataset, whose partitions definition (synthetic only) differs, which Dagster runs in its own run.
PIPELINE = dg.AssetSelection.all() - dg.AssetSelection.assets("raw_datasets", "synthetic_dataset")

fmn_synthetic_data = dg.define_asset_job(
    "fmn_synthetic_data", selection=dg.AssetSelection.assets("synthetic_dataset"),
    description="Generate (or reuse) the synthetic dataset in data/synthetic and version it with DVC; run it before "
                "fmn_pipeline for the synthetic partition (`python3 run.py main` does).")

fmn_pipeline = dg.define_asset_job(
    "fmn_pipeline", selection=PIPELINE,
    description="The whole graph for one dataset with the CPU demo recipe (EfficientNet-Lite0 from ImageNet, 128x64); "
                "edit the config in the launchpad to change it.")
fmn_pipeline_paper = dg.define_asset_job(
    "fmn_pipeline_paper", selection=PIPELINE,
    description="The whole graph with the paper's recipe (ResNet-50 from ImageNet, 224x224, section 4.2).",
    config=dg.RunConfig(ops={"grn_checkpoint": GRNTrainingConfig(preset=TrainingPreset.paper)}))

#: When the raw datasets are observed (their DVC versions read with `dvc ls`): hourly by default.
OBSERVE_CRON = os.environ.get("FMN_OBSERVE_CRON", "0 * * * *")
#: How often the automation sensor evaluates the conditions below, once a user turns it on.
EVALUATION_SECONDS = int(os.environ.get("FMN_AUTOMATION_SECONDS", "30"))

#: raw_datasets: observed on every cron tick (a cheap `dvc ls`; nothing is trained by observing).
OBSERVE_ON_CRON = (dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON) & ~dg.AutomationCondition.in_progress()
                   ).with_label("observe on cron")
#: Everything downstream: rebuilt when (and only when) an upstream data version changed or the partition was
#: never built, once no upstream is missing or running and every upstream blocking check has passed. A dataset
#: whose DVC version did not change is never retrained; a changed one is, whatever the day.
WHEN_UPSTREAM_CHANGED = (
    dg.AutomationCondition.eager()
    # the observed raw data has no checks; a partition it does not map to (synthetic) must not count as failing
    & dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(dg.AssetSelection.assets("raw_datasets"))
).with_label("eager, after upstream blocking checks pass")

fmn_automation = dg.AutomationConditionSensorDefinition(
    "fmn_automation", target=dg.AssetSelection.all(include_sources=True), minimum_interval_seconds=EVALUATION_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Evaluates the assets' automation conditions: observes data/{dataset} on FMN_OBSERVE_CRON and "
                "retrains a dataset's lineage when its DVC version changed. Stopped until a user starts it.")
