"""The Celery deployment's settings: the workers' file equals what runs use, and GPU steps go to the GPU queue."""

from __future__ import annotations

import dagster as dg
import yaml

from fmn_assets.assets import ASSETS
from fmn_assets.execution.celery_queues import GPU_QUEUE, QUEUE_TAG, celery_executor_config
from tests.helpers import REPO


def test_the_workers_file_holds_the_settings_runs_use():
    shipped = yaml.safe_load((REPO / "deploy/celery/celery.yaml").read_text())
    assert shipped == {"execution": {"config": celery_executor_config()}}


def test_the_gpu_pool_steps_and_only_they_go_to_the_gpu_queue():
    queues = {}
    for asset in ASSETS:
        if isinstance(asset, dg.AssetsDefinition):
            for spec_key in asset.keys:
                queues[spec_key.to_user_string()] = (asset.op.tags.get(QUEUE_TAG), asset.op.pool)
    assert queues["grn_checkpoint"] == (GPU_QUEUE, "gpu") and queues["fmn_checkpoint"] == (GPU_QUEUE, "gpu")
    assert queues["query_descriptors"] == (GPU_QUEUE, "gpu")
    assert all(queue is None for queue, pool in queues.values() if pool != "gpu"), queues
    assert all(queue == GPU_QUEUE for queue, pool in queues.values() if pool == "gpu"), queues


def test_celery_is_chosen_by_the_environment(monkeypatch):
    from fmn_assets.definitions import executor

    monkeypatch.setenv("FMN_EXECUTOR", "celery")
    assert executor().name == "celery"
    monkeypatch.setenv("FMN_EXECUTOR", "")
    assert executor().name == "multiprocess"
