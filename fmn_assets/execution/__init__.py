"""Execution plumbing: how the graph's steps run beyond local processes, apart from the graph itself.

``launchers`` (the torchrun command of a training step, on this host or across nodes), ``torchrun_entry`` (the
process torchrun starts: fmn_core's training, reported through Dagster Pipes), ``k8s`` (the GPU steps' pod
settings and multi-node manifests for dagster-k8s) and ``celery_queues`` (the Celery executor's queues and
broker). None of them imports the assets: the graph uses them, never the other way round (an import-linter
contract in pyproject.toml).
"""
