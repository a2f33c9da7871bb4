"""The optional fixed retraining cadence (FMN_RETRAIN_CRON), evaluated by Dagster's own condition evaluator."""

import datetime
import os
import subprocess
import sys

import dagster as dg
import pytest

from fmn_assets.automation import retrain_on_cadence

SUNDAYS = "0 3 * * 0"


@dg.asset
def splits() -> None:
    pass


@dg.asset(deps=[splits], automation_condition=retrain_on_cadence(SUNDAYS))
def model() -> None:
    pass


def _requested(instance, cursor, when: datetime.datetime):
    result = dg.evaluate_automation_conditions(defs=[splits, model], instance=instance, cursor=cursor,
                                               evaluation_time=when)
    return result.get_num_requested(model.key), result.cursor


def test_the_cadence_requests_once_after_each_tick_and_never_between():
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([splits, model], instance=instance).success
        now = datetime.datetime.now(datetime.UTC)
        sunday = (now + datetime.timedelta(days=(6 - now.weekday()) % 7 or 7)).replace(hour=3, minute=1, second=0,
                                                                                       microsecond=0)
        count, cursor = _requested(instance, None, now)
        assert count == 0  # switching it on requests nothing
        count, cursor = _requested(instance, cursor, sunday - datetime.timedelta(hours=5))
        assert count == 0  # no tick yet
        count, cursor = _requested(instance, cursor, sunday)
        assert count == 1  # the Sunday tick passed: retrain once
        count, cursor = _requested(instance, cursor, sunday + datetime.timedelta(hours=1))
        assert count == 0  # already requested for this tick
        count, cursor = _requested(instance, cursor, sunday + datetime.timedelta(days=7))
        assert count == 1  # the next Sunday


def test_the_cadence_is_off_by_default_and_a_bad_cron_is_refused_naming_the_variable():
    code = ("import dagster as dg; from fmn_assets import defs; "
            "print(defs.resolve_asset_graph().get(dg.AssetKey('grn_checkpoint')).automation_condition.get_label())")
    env = {k: v for k, v in os.environ.items() if k != "FMN_RETRAIN_CRON"}
    default = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env,
                             timeout=120)
    assert default.stdout.strip() == "eager, after upstream blocking checks pass", default.stderr[-2000:]
    weekly = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                            env={**env, "FMN_RETRAIN_CRON": SUNDAYS}, timeout=120)
    assert weekly.stdout.strip() == f"eager, or after each '{SUNDAYS}' tick", weekly.stderr[-2000:]
    with pytest.raises(ValueError, match="FMN_RETRAIN_CRON='every sunday': expected a cron string"):
        retrain_on_cadence("every sunday")
