"""Jobs and declarative automation: observe the raw data on a cron, rebuild only what changed."""

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string  # not re-exported at the top level

from fmn_assets import environment
from fmn_assets.configs import GRNTrainingConfig

#: Everything materialised per dataset, with the checks on it: the whole graph but the observed raw data. For the
#: synthetic partition this includes generating the data (dataset_splits does it), so one run does it all.
PIPELINE = dg.AssetSelection.all() - dg.AssetSelection.assets("raw_datasets")

fmn_pipeline = dg.define_asset_job(
    "fmn_pipeline", selection=PIPELINE,
    description="The whole graph for one dataset with the CPU demo recipe (EfficientNet-Lite0 from ImageNet, 128x64); "
                "edit the config in the launchpad to change it.")
fmn_pipeline_paper = dg.define_asset_job(
    "fmn_pipeline_paper", selection=PIPELINE,
    description="The whole graph with the paper's recipe (ResNet-50 from ImageNet, 224x224, section 4.2).",
    config=dg.RunConfig(ops={"grn_checkpoint": GRNTrainingConfig(recipe="paper")}))

fmn_deploy = dg.define_asset_job(
    "fmn_deploy", selection=dg.AssetSelection.assets("deployed_model"),
    description="The promotion gate alone, for operators: with action promote (a candidate by hand) or rollback (an "
                "earlier champion) and a reason in the launchpad; auto re-runs the gate on the latest trained model.")

#: When the raw datasets are observed (their DVC versions read with `dvc ls`): hourly by default.
OBSERVE_CRON = environment.OBSERVE_CRON.value()
#: How often the automation sensor evaluates the conditions below, once a user turns it on.
EVALUATION_SECONDS = environment.AUTOMATION_SECONDS.value()

#: raw_datasets: observed on every cron tick (a cheap `dvc ls`; nothing is trained by observing).
OBSERVE_ON_CRON = (dg.AutomationCondition.cron_tick_passed(OBSERVE_CRON) & ~dg.AutomationCondition.in_progress()
                   ).with_label("observe on cron")
#: Everything downstream: rebuilt when (and only when) an upstream data version changed or the partition was
#: never built, once no upstream is missing or running and every upstream blocking check has passed. A dataset
#: whose DVC version did not change is never retrained; a changed one is, whatever the day.
#: the observed raw data has no checks of its own: only the upstream assets' blocking checks count
_CHECKS_PASSED = dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(
    dg.AssetSelection.assets("raw_datasets"))
WHEN_UPSTREAM_CHANGED = (dg.AutomationCondition.eager() & _CHECKS_PASSED).with_label(
    "eager, after upstream blocking checks pass")

#: A fixed retraining cadence for teams that want one as well, off unless FMN_RETRAIN_CRON is set (for example
#: "0 3 * * 0": Sundays at 03:00). After each tick the GRN is retrained once, unless it was trained (or requested)
#: since that tick; the rest of the lineage follows through WHEN_UPSTREAM_CHANGED when the new checkpoint differs.
#: A retraining that reproduces the checkpoint bit for bit (same data, code, seed and machine) changes nothing
#: downstream.
RETRAIN_CRON = environment.RETRAIN_CRON.value()


def retrain_on_cadence(cron: str) -> dg.AutomationCondition:
    """True once after each tick of ``cron``, unless the asset was updated or requested since that tick."""
    if not is_valid_cron_string(cron):
        raise environment.EnvironmentSettingError(f"{environment.RETRAIN_CRON.name}={cron!r}: expected "
                                                  f"{environment.RETRAIN_CRON.accepts}")
    return (dg.AutomationCondition.cron_tick_passed(cron).since_last_handled()
            & ~dg.AutomationCondition.in_progress() & ~dg.AutomationCondition.any_deps_in_progress()
            & ~dg.AutomationCondition.any_deps_missing() & _CHECKS_PASSED
            ).with_label(f"retrain after each '{cron}' tick unless trained since")


def training_condition(retrain_cron: str = RETRAIN_CRON) -> dg.AutomationCondition:
    """grn_checkpoint's condition: rebuilt after upstream changes, and on the fixed cadence when one is set."""
    if not retrain_cron:
        return WHEN_UPSTREAM_CHANGED
    return (WHEN_UPSTREAM_CHANGED | retrain_on_cadence(retrain_cron)).with_label(
        f"eager, or after each '{retrain_cron}' tick")


fmn_automation = dg.AutomationConditionSensorDefinition(
    "fmn_automation", target=dg.AssetSelection.all(include_sources=True), minimum_interval_seconds=EVALUATION_SECONDS,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Evaluates the assets' automation conditions: observes data/{dataset} on FMN_OBSERVE_CRON and "
                "retrains a dataset's lineage when its DVC version changed. Stopped until a user starts it.")
