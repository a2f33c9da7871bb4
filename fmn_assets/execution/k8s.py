"""Kubernetes settings of the GPU steps (dagster-k8s), in one place.

A step pod's resources come from its op's ``dagster-k8s/config`` tag, which is fixed when the code
loads, while the number of training processes (``processes``: torchrun's ``--nproc_per_node``) is
run config. The tag therefore asks for one GPU, and :func:`multi_gpu_run_config` writes the run
config that asks the ``k8s_job_executor`` for N GPUs on the training steps' pods
(``execution.config.per_step_k8s_config``, keyed by op name) *and* sets ``processes: N`` on the
same steps, so the two numbers cannot drift apart. dagster-k8s deep-merges the per-step config over
the tag: the toleration and ``/dev/shm`` volume below stay, only the resources change.

Pure data, no Dagster import: local runs ignore all of it (see ``deploy/k8s/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fmn_assets.execution.launchers import RENDEZVOUS_PORT

GPU_RESOURCE = "nvidia.com/gpu"
#: The steps with a ``processes`` option (DistributedDataParallel through torchrun).
TRAINING_STEPS = ("grn_checkpoint", "fmn_checkpoint")
#: Per GPU (= per training process): its DataLoader's CPUs and host memory for the model and batches.
CPUS_PER_GPU = 4
MEMORY_REQUEST_GIB_PER_GPU = 24
MEMORY_LIMIT_GIB_PER_GPU = 48
#: GPU nodes are usually tainted so that only pods that need a GPU land there.
GPU_TOLERATIONS = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)
#: Kubernetes gives a container a 64 MiB /dev/shm; NCCL and DataLoader workers need far more. A memory-backed
#: emptyDir counts against the container's memory limit.
SHM_VOLUME = {"name": "dshm", "empty_dir": {"medium": "Memory"}}
SHM_MOUNT = {"name": "dshm", "mount_path": "/dev/shm"}


def _check_gpus(gpus: int, name: str) -> None:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {gpus!r}")


def gpu_resources(gpus: int) -> dict[str, dict[str, str]]:
    """Requests and limits of a pod running one training process per GPU: CPU and memory scale with the GPUs."""
    _check_gpus(gpus, "gpus")
    return {
        "requests": {GPU_RESOURCE: str(gpus), "cpu": str(CPUS_PER_GPU * gpus),
                     "memory": f"{MEMORY_REQUEST_GIB_PER_GPU * gpus}Gi"},
        "limits": {GPU_RESOURCE: str(gpus), "memory": f"{MEMORY_LIMIT_GIB_PER_GPU * gpus}Gi"},
    }


def gpu_step_k8s_config(gpus: int = 1) -> dict[str, Any]:
    """The ``dagster-k8s/config`` op tag of a GPU step: resources, the GPU-node toleration, a RAM-backed /dev/shm."""
    return {
        "container_config": {"resources": gpu_resources(gpus), "volume_mounts": [dict(SHM_MOUNT)]},
        "pod_spec_config": {"tolerations": [dict(t) for t in GPU_TOLERATIONS], "volumes": [dict(SHM_VOLUME)]},
    }


def multi_gpu_run_config(processes: int, steps: Iterable[str] = TRAINING_STEPS) -> dict[str, Any]:
    """Run config for N-GPU training on Kubernetes: N GPUs for each step's pod and ``processes: N`` for its op.

    Only valid with ``FMN_EXECUTOR=k8s`` (the ``execution`` block is the ``k8s_job_executor``'s config);
    merge it into the rest of a run's config (e.g. ``fmn_pipeline_paper``'s) rather than replacing it.
    """
    _check_gpus(processes, "processes")
    steps = tuple(steps)
    unknown = sorted(set(steps) - set(TRAINING_STEPS))
    if unknown or not steps:
        raise ValueError(f"steps must be among {TRAINING_STEPS} (the steps with a `processes` option), got {steps}")
    return {
        "execution": {"config": {"per_step_k8s_config": {
            step: {"container_config": {"resources": gpu_resources(processes)}} for step in steps}}},
        "ops": {step: {"config": {"processes": processes}} for step in steps},
    }




def multi_node_training_manifests(name: str, image: str, nodes: int, gpus_per_node: int, training_args: list[str],
                                  namespace: str = "dagster", claim: str = "fmn-workspace") -> list[dict[str, Any]]:
    """A training across ``nodes`` pods of ``gpus_per_node`` GPUs each: a headless Service and an Indexed Job.

    Kubernetes' own primitives, no operator: the Job's pods get stable names ``NAME-0`` ... through the Service
    (``subdomain``), every pod runs ``torchrun --nnodes N`` with the c10d rendezvous on ``NAME-0.NAME:29400``, and
    the completion index is the node rank. ``training_args`` follow torchrun (``-m fmn_assets.execution.torchrun_entry
    --stage 1 ...``). All pods mount the workspace claim, where rank 0 alone writes the checkpoint. The Job fails as
    a whole when any pod fails (``backoffLimitPerIndex`` 0, ``maxFailedIndexes`` 0): a lost node restarts the
    training, which resumes from its partial checkpoint.
    """
    _check_gpus(nodes, "nodes")
    _check_gpus(gpus_per_node, "gpus_per_node")
    labels = {"app.kubernetes.io/name": "fmn-training", "fmn/training": name}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": namespace, "labels": labels},
               "spec": {"clusterIP": "None", "selector": labels, "publishNotReadyAddresses": True,
                        "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}]}}
    torchrun = ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={gpus_per_node}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={name}-0.{name}:{RENDEZVOUS_PORT}", f"--rdzv-id={name}",
                "--node-rank=$(JOB_COMPLETION_INDEX)", *training_args]
    resources = gpu_resources(gpus_per_node)
    container = {"name": "train", "image": image, "command": torchrun,
                 "env": [{"name": "FMN_PROJECT_DIR", "value": "/workspace"},
                         {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                             "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}],
                 "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}],
                 "resources": resources,
                 "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"},
                                  {"name": SHM_MOUNT["name"], "mountPath": SHM_MOUNT["mount_path"]}]}
    pod = {"subdomain": name, "restartPolicy": "Never", "containers": [container],
           "tolerations": [dict(t) for t in GPU_TOLERATIONS],
           "volumes": [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}},
                       {"name": SHM_VOLUME["name"], "emptyDir": {"medium": "Memory"}}]}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": name, "namespace": namespace, "labels": labels},
           "spec": {"completionMode": "Indexed", "completions": nodes, "parallelism": nodes,
                    "backoffLimitPerIndex": 0, "maxFailedIndexes": 0,
                    "template": {"metadata": {"labels": labels}, "spec": pod}}}
    return [service, job]
