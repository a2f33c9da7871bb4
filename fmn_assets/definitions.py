"""The one ``Definitions`` object of the project (``workspace.yaml`` loads it).

The graph is the same everywhere; only the executor differs: steps run in
local processes by default, and in Kubernetes jobs (GPU requests on the
training steps come from their ``dagster-k8s/config`` tags) when
``FMN_EXECUTOR=k8s`` (see ``deploy/k8s/``), and on Celery workers on other
hosts when ``FMN_EXECUTOR=celery`` (GPU steps on the ``gpu`` queue, see
``deploy/celery/``).
"""

from __future__ import annotations

import dagster as dg

from fmn_assets.assets import ASSETS, CHECKS
from fmn_assets.automation import fmn_automation, fmn_deploy, fmn_pipeline, fmn_pipeline_paper
from fmn_assets.environment import EXECUTOR
from fmn_assets.resources import DVCResource, ProjectPaths


def executor() -> dg.ExecutorDefinition:
    """The executor ``FMN_EXECUTOR`` names: multiprocess (default), in_process, k8s or celery; others are refused."""
    name = EXECUTOR.value()
    if name == "celery":
        from dagster_celery import celery_executor

        from fmn_assets.execution.celery_queues import celery_executor_config

        return celery_executor.configured(celery_executor_config(), name="celery")
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "in_process":
        return dg.in_process_executor
    return dg.multiprocess_executor


defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    jobs=[fmn_pipeline, fmn_pipeline_paper, fmn_deploy],
    sensors=[fmn_automation],
    resources={"paths": ProjectPaths(), "dvc": DVCResource()},
    executor=executor(),
)
