"""Settings of the Celery deployment (``FMN_EXECUTOR=celery``, ``deploy/celery/``), in one place.

Dagster's ``celery_executor`` sends each step to the Celery queue named by its op's ``dagster-celery/queue`` tag:
the GPU steps (both training stages and descriptor extraction, the ``gpu`` pool) to :data:`GPU_QUEUE`, the rest to
:data:`DEFAULT_QUEUE`. A worker serves the queues it is started with (``-q``), so the GPU box starts the one and
the other boxes the other. Workers read the same settings from ``deploy/celery/celery.yaml``
(tests/unit/test_celery_settings.py keeps the two equal).

Pure data, no Dagster import: local runs ignore all of it.
"""

from __future__ import annotations

from typing import Any

QUEUE_TAG = "dagster-celery/queue"
GPU_QUEUE = "gpu"
DEFAULT_QUEUE = "default"
#: Where the broker and the result store are: e.g. redis://10.0.0.5:6379/0 and redis://10.0.0.5:6379/1.
BROKER_ENV = "FMN_CELERY_BROKER"
BACKEND_ENV = "FMN_CELERY_BACKEND"


def celery_executor_config() -> dict[str, Any]:
    """The ``celery_executor``'s config: broker and backend from the environment, one task at a time per worker
    process (a step can run for hours; prefetching would park the next step behind it), steps without a queue tag
    on :data:`DEFAULT_QUEUE`, and no Dagster-level step retries beyond the assets' own RetryPolicy."""
    return {
        "broker": {"env": BROKER_ENV},
        "backend": {"env": BACKEND_ENV},
        "config_source": {
            "task_default_queue": DEFAULT_QUEUE,
            "worker_prefetch_multiplier": 1,
            # a lost worker fails its step (WorkerLostError) instead of the message being redelivered an hour later
            "task_acks_late": False,
            "task_reject_on_worker_lost": False,
            "broker_connection_retry_on_startup": True,
        },
    }
