"""deploy/k8s without a cluster: the step pods dagster-k8s would create, the instance, the Helm values, the image.

The pods are built by dagster-k8s's own step handler (only the Kubernetes API client is a mock), so what is
checked is what the k8s_job_executor would send to the cluster for the instance in deploy/k8s.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.instance.config import dagster_instance_config
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.client import DagsterKubernetesClient

from fmn_assets import defs
from fmn_assets.execution.k8s import (
    CPUS_PER_GPU,
    GPU_RESOURCE,
    MEMORY_LIMIT_GIB_PER_GPU,
    MEMORY_REQUEST_GIB_PER_GPU,
    TRAINING_STEPS,
    gpu_step_k8s_config,
    multi_gpu_run_config,
)
from tests.helpers import REPO

pytestmark = pytest.mark.timeout(300)

K8S = REPO / "deploy" / "k8s"
INSTANCE = yaml.safe_load((K8S / "dagster-instance.yaml").read_text())
VALUES = yaml.safe_load((K8S / "values.yaml").read_text())
README = (K8S / "README.md").read_text()
DEPLOYMENT = VALUES["dagster-user-deployments"]["deployments"][0]
IMAGE = f"{DEPLOYMENT['image']['repository']}:{DEPLOYMENT['image']['tag']}"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

#: A kubeconfig for a cluster that does not exist: the K8sRunLauncher and the step handler load one, and nothing
#: here ever connects (the API client is a mock).
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {token: not-a-token}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: dagster}}]
current-context: none
"""


def _lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of sha256 hashes) of a pip-compile style lock."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line):
            current = match.group(1).lower()
            pins[current] = (match.group(2), 0)
        elif current and "--hash=sha256:" in line:
            pins[current] = (pins[current][0], pins[current][1] + 1)
        elif not line.startswith(" "):
            current = None
    return pins


def _yaml_blocks(markdown: str) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S)]


# ---------------------------------------------------------------------------------------------- the helper


def test_multi_gpu_run_config_asks_for_as_many_gpus_as_processes():
    config = multi_gpu_run_config(4)
    per_step = config["execution"]["config"]["per_step_k8s_config"]
    assert set(per_step) == set(TRAINING_STEPS) == set(config["ops"])
    for step in TRAINING_STEPS:
        resources = per_step[step]["container_config"]["resources"]
        assert resources["requests"][GPU_RESOURCE] == resources["limits"][GPU_RESOURCE] == "4"
        assert resources["requests"]["cpu"] == str(4 * CPUS_PER_GPU)  # every per-GPU resource scales with 4
        assert resources["requests"]["memory"] == f"{4 * MEMORY_REQUEST_GIB_PER_GPU}Gi"
        assert resources["limits"]["memory"] == f"{4 * MEMORY_LIMIT_GIB_PER_GPU}Gi"
        assert config["ops"][step] == {"config": {"processes": 4}}
    assert set(multi_gpu_run_config(2, steps=["grn_checkpoint"])["ops"]) == {"grn_checkpoint"}
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="processes"):
            multi_gpu_run_config(bad)
    with pytest.raises(ValueError, match="descriptor_tables"):
        multi_gpu_run_config(2, steps=["grn_checkpoint", "descriptor_tables"])  # no `processes` option there


def test_every_gpu_step_carries_the_one_gpu_tag():
    job = defs.resolve_job_def("fmn_pipeline")
    for step in ("grn_checkpoint", "fmn_checkpoint", "descriptor_tables"):
        node = job.graph.node_named(step).definition
        assert node.pool == "gpu", step
        assert json.loads(node.tags["dagster-k8s/config"]) == gpu_step_k8s_config(1), step  # op tags are JSON


# ------------------------------------------------------------------------------------ the step pods, built


@pytest.fixture
def k8s_instance(tmp_path):
    """A test instance with deploy/k8s's run launcher, run coordinator, retries and limits (SQLite storage)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    launcher = copy.deepcopy(INSTANCE["run_launcher"])
    launcher["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))  # not in a cluster
    overrides = {key: INSTANCE[key] for key in ("run_coordinator", "run_retries", "concurrency")}
    with dg.instance_for_test(overrides={**overrides, "run_launcher": launcher}) as instance:
        yield instance


def _launched_step_job(instance: dg.DagsterInstance, run_config: dict, step: str):
    """The Kubernetes Job the k8s_job_executor launches for ``step`` of an fmn_pipeline run with ``run_config``.

    The code location's image reaches step pods through the job origin, as in a real deployment (the chart sets
    DAGSTER_CURRENT_IMAGE on the code server, which puts it on the origin).
    """
    repository = ReconstructableRepository.for_module("fmn_assets", "defs", working_directory=str(REPO),
                                                      container_image=IMAGE)
    recon_job = repository.get_reconstructable_job("fmn_pipeline")
    ops_config = {"ops": run_config.get("ops", {})}
    executor_config = process_config(k8s_job_executor.config_schema.config_type,
                                     run_config.get("execution", {}).get("config", {}))
    assert executor_config.success, executor_config.errors
    client = mock.MagicMock()
    with mock.patch.object(DagsterKubernetesClient, "production_client", return_value=client):
        executor = k8s_job_executor.executor_creation_fn(InitExecutorContext(
            job=recon_job, executor_def=k8s_job_executor, executor_config=executor_config.value, instance=instance))
    run = create_run_for_test(instance, job_name="fmn_pipeline", run_config=ops_config,
                              tags={"dagster/partition": "synthetic"}, job_code_origin=recon_job.get_python_origin())
    plan = create_execution_plan(recon_job, run_config=ops_config)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=recon_job, dagster_run=run, instance=instance, execution_plan=plan,
                           raise_on_error=True, retry_mode=RetryMode.DISABLED),
        log_manager=create_context_free_log_manager(instance, run), executor=executor, output_capture=None)
    context = StepHandlerContext(instance=instance, plan_context=plan_context, steps=plan.steps, dagster_run=run,
                                 execute_step_args=ExecuteStepArgs(recon_job.get_python_origin(), run.run_id, [step]))
    list(executor._step_handler.launch_step(context))
    client.create_namespaced_job_with_retries.assert_called_once()
    call = client.create_namespaced_job_with_retries.call_args.kwargs
    assert call["namespace"] == INSTANCE["run_launcher"]["config"]["job_namespace"]
    return call["body"]


@pytest.mark.parametrize(("run_config", "gpus"), [({}, "1"), (multi_gpu_run_config(4), "4")],
                         ids=["tag-only", "processes-4"])
def test_training_step_pod(k8s_instance, run_config, gpus):
    job = _launched_step_job(k8s_instance, run_config, "grn_checkpoint")
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == IMAGE
    resources = container.resources.to_dict()
    assert resources["requests"][GPU_RESOURCE] == resources["limits"][GPU_RESOURCE] == gpus
    assert resources["requests"]["cpu"] == str(CPUS_PER_GPU * int(gpus))  # the tag's other resources scale too
    volumes = {volume.name: volume for volume in pod.volumes}
    assert volumes["workspace"].persistent_volume_claim.claim_name == "fmn-workspace"
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert {(m.name, m.mount_path) for m in container.volume_mounts} == {("workspace", "/workspace"),
                                                                          ("dshm", "/dev/shm")}
    tolerations = [{k: v for k, v in t.to_dict().items() if v is not None} for t in pod.tolerations]
    assert tolerations == [GPU_TOLERATION]  # once: the per-step config is merged, not appended twice
    env = {variable.name: variable.value for variable in container.env}
    assert env["FMN_EXECUTOR"] == "k8s" and env["FMN_PROJECT_DIR"] == "/workspace"
    assert env["DAGSTER_RUN_STEP_KEY"] == "grn_checkpoint"
    assert [source.secret_ref.name for source in container.env_from] == ["fmn-dvc-remote-credentials"]


def test_the_override_reaches_only_the_steps_it_names(k8s_instance):
    job = _launched_step_job(k8s_instance, multi_gpu_run_config(2, steps=["fmn_checkpoint"]), "grn_checkpoint")
    assert job.spec.template.spec.containers[0].resources.to_dict()["limits"][GPU_RESOURCE] == "1"


# -------------------------------------------------------------------- definitions with the k8s executor

_K8S_DEFINITIONS = """
import json
import dagster as dg
from dagster._utils.merger import deep_merge_dicts
import fmn_assets
from fmn_assets.automation import fmn_pipeline_paper
from fmn_assets.execution.k8s import multi_gpu_run_config

defs = fmn_assets.defs
job, paper = defs.resolve_job_def("fmn_pipeline"), defs.resolve_job_def("fmn_pipeline_paper")
checked = dg.validate_run_config(job, multi_gpu_run_config(4))
merged = dg.validate_run_config(paper, deep_merge_dicts(fmn_pipeline_paper.config, multi_gpu_run_config(4)))
try:
    dg.validate_run_config(job, {"execution": {"config": {"per_step_k8s_config": {"grn_checkpoint": {"bogus": {}}}}}})
    bogus = "accepted"
except dg.DagsterInvalidConfigError:
    bogus = "refused"
print(json.dumps({
    "executor": job.executor_def.name,
    "keys": sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()),
    "per_step": checked["execution"]["k8s"]["per_step_k8s_config"],
    "processes": {step: checked["ops"][step]["config"]["processes"] for step in ("grn_checkpoint", "fmn_checkpoint")},
    "paper": merged["ops"]["grn_checkpoint"]["config"],
    "bogus": bogus,
}))
"""


def test_definitions_with_the_k8s_executor_accept_the_multi_gpu_run_config():
    out = subprocess.run([sys.executable, "-c", _K8S_DEFINITIONS], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "FMN_EXECUTOR": "k8s"}, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["executor"] == "k8s"
    assert result["keys"] == sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    expected = multi_gpu_run_config(4)["execution"]["config"]["per_step_k8s_config"]
    for step, config in expected.items():
        assert result["per_step"][step]["container_config"] == config["container_config"]
    assert result["processes"] == {"grn_checkpoint": 4, "fmn_checkpoint": 4}
    assert (result["paper"]["recipe"], result["paper"]["processes"]) == ("paper", 4)  # merged, not replaced
    assert result["bogus"] == "refused"  # the executor's schema really checks per_step_k8s_config


# ------------------------------------------------------------------------------- instance and Helm values


def test_instance_file_passes_dagsters_own_validation(tmp_path):
    shutil.copy(K8S / "dagster-instance.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # schema, plus concurrency vs run-coordinator conflicts
    assert config["run_retries"] == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())  # the cluster limits and retries as the laptop's
    assert (INSTANCE["concurrency"], INSTANCE["run_retries"]) == (local["concurrency"], local["run_retries"])
    launcher = INSTANCE["run_launcher"]
    assert launcher["class"] == "K8sRunLauncher"
    assert process_config(K8sRunLauncher.config_type(), launcher["config"]).success

    conflicting = copy.deepcopy(INSTANCE)  # what the chart would refuse to render: limits in two places
    conflicting["run_coordinator"]["config"] = {"tag_concurrency_limits": [{"key": "dagster/partition", "limit": 1}]}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(conflicting))
    with pytest.raises(dg.DagsterInvalidConfigError, match="concurrency"):
        dagster_instance_config(str(tmp_path))


def test_instance_limits_one_gpu_step_and_one_run_per_partition(k8s_instance):
    # the policy the README and dagster.yaml document: one relaunch of a failed run, one GPU step at a time
    # (the `gpu` pool's single slot), at most four runs at once, one per partition
    assert k8s_instance.run_retries_max_retries == 1
    assert k8s_instance.run_retries_retry_on_asset_or_op_failure is False
    concurrency = k8s_instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity.value == "op"
    queue = concurrency.run_queue_config
    assert queue.max_concurrent_runs == 4

    def run(partition: str) -> SimpleNamespace:
        return SimpleNamespace(tags={"dagster/partition": partition})

    counter = TagConcurrencyLimitsCounter(queue.tag_concurrency_limits, [run("market1501")])
    assert counter.is_blocked(run("market1501"))
    assert not counter.is_blocked(run("synthetic"))


#: Field names of the dagster chart's values, from its schema models (helm/dagster/schema/schema/charts/...):
#: dagster/values.py, subschema/{concurrency,daemon,run_launcher}.py, dagster_user_deployments/.../user_deployments.py.
#: None: any content. Only the parts values.yaml uses are spelled out.
_ANY = None
CHART_FIELDS: dict[str, Any] = {
    "dagsterWebserver": _ANY, "postgresql": _ANY, "generatePostgresqlPasswordSecret": _ANY,
    "generateCeleryConfigSecret": _ANY, "rabbitmq": _ANY, "redis": _ANY, "flower": _ANY, "ingress": _ANY,
    "imagePullSecrets": _ANY, "computeLogManager": _ANY, "scheduler": _ANY, "pythonLogs": _ANY, "busybox": _ANY,
    "migrate": _ANY, "telemetry": _ANY, "serviceAccount": _ANY, "global": _ANY, "retention": _ANY,
    "additionalInstanceConfig": _ANY,
    "dagster-user-deployments": {"enabled": _ANY, "enableSubchart": _ANY, "imagePullSecrets": _ANY, "deployments": [{
        field: _ANY for field in (
            "name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "env",
            "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
            "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
            "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName")}]},
    "runLauncher": {"type": _ANY, "config": {"k8sRunLauncher": {field: _ANY for field in (
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
        "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
        "schedulerName", "securityContext", "runK8sConfig")}, "celeryK8sRunLauncher": _ANY, "customRunLauncher": _ANY}},
    "concurrency": {"enabled": _ANY,
                    "pools": {"defaultLimit": _ANY, "granularity": _ANY, "opGranularityRunBuffer": _ANY},
                    "runs": {"maxConcurrentRuns": _ANY,
                             "tagConcurrencyLimits": [{"key": _ANY, "value": _ANY, "limit": _ANY}]}},
    "dagsterDaemon": {**{field: _ANY for field in (
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
        "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
        "securityContext", "resources", "checkDbReadyInitContainer", "livenessProbe", "readinessProbe",
        "startupProbe", "annotations", "runMonitoring", "sensors", "schedules", "backfills", "schedulerName",
        "logFormat", "volumeMounts", "volumes", "initContainerResources", "extraContainers",
        "extraPrependedInitContainers")},
        "runRetries": {"enabled": _ANY, "maxRetries": _ANY, "retryOnAssetOrOpFailure": _ANY}},
}


def _unknown_fields(value: Any, schema: Any, path: str = "") -> list[str]:
    if schema is _ANY:
        return []
    if isinstance(schema, list):
        return [bad for i, item in enumerate(value) for bad in _unknown_fields(item, schema[0], f"{path}[{i}]")]
    unknown = [f"{path}.{key}" for key in value if key not in schema]
    return unknown + [bad for key, item in value.items() if key in schema
                      for bad in _unknown_fields(item, schema[key], f"{path}.{key}")]


def test_helm_values_use_the_charts_field_names_and_match_the_instance_file():
    assert _unknown_fields(VALUES, CHART_FIELDS) == []
    assert _unknown_fields({"dagsterDaemon": {"runRetries": {"retryOnFailure": False}}}, CHART_FIELDS)  # can fail

    # concurrency, rendered as the chart's templates/helpers/instance/_concurrency.tpl does
    concurrency = VALUES["concurrency"]
    assert concurrency["enabled"] is True
    rendered = {"pools": {"default_limit": concurrency["pools"]["defaultLimit"],
                          "granularity": concurrency["pools"]["granularity"]},
                "runs": {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
                         "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"]}}
    assert rendered == INSTANCE["concurrency"]
    assert INSTANCE["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    queued = VALUES["dagsterDaemon"].get("runCoordinator", {}).get("config", {}).get("queuedRunCoordinator", {})
    assert not {"maxConcurrentRuns", "tagConcurrencyLimits"} & set(queued)  # would conflict with concurrency.runs

    retries = VALUES["dagsterDaemon"]["runRetries"]
    assert {"enabled": retries["enabled"], "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"]} == INSTANCE["run_retries"]
    monitoring = VALUES["dagsterDaemon"]["runMonitoring"]
    assert monitoring["startTimeoutSeconds"] == INSTANCE["run_monitoring"]["start_timeout_seconds"]

    launcher, k8s = INSTANCE["run_launcher"]["config"], VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    assert k8s["envVars"] == launcher["env_vars"]
    assert [secret["name"] for secret in k8s["envSecrets"]] == launcher["env_secrets"]
    assert k8s["volumes"] == launcher["volumes"] == DEPLOYMENT["volumes"]
    assert k8s["volumeMounts"] == launcher["volume_mounts"] == DEPLOYMENT["volumeMounts"]
    assert {"name": "FMN_EXECUTOR", "value": "k8s"} in DEPLOYMENT["env"]
    assert DEPLOYMENT["dagsterApiGrpcArgs"] == ["-m", "fmn_assets"]


def test_chart_version_is_pinned_to_the_installed_dagster():
    dagster_version = version("dagster")
    assert _lock_pins(REPO / "requirements.lock")["dagster"][0] == dagster_version
    pinned = f"helm upgrade --install dagster dagster/dagster --version {dagster_version} "
    assert pinned in README
    assert pinned in " ".join((K8S / "values.yaml").read_text().replace("#", " ").replace("\\\n", " ").split())


# ---------------------------------------------------------------------------------- image and documentation


def test_dockerfile_installs_python_311_from_the_locks():
    dockerfile = (K8S / "Dockerfile").read_text()
    instructions = " ".join(line for line in dockerfile.replace("\\\n", " ").splitlines()
                            if line.strip() and not line.lstrip().startswith("#"))
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M)
    assert base == "${BASE_IMAGE}", base  # a build argument, defaulting to the CPython requirements.lock is for
    (default,) = re.findall(r"^ARG\s+BASE_IMAGE=(\S+)", dockerfile, flags=re.M)
    assert default.startswith("python:3.11-"), default
    assert "pip install --require-hashes --no-deps -r /tmp/locks/requirements.lock" in instructions
    assert "pip install --require-hashes --no-deps -r /tmp/locks/requirements-k8s.lock" in instructions
    assert "pip install --no-deps --no-build-isolation -e ." in instructions  # as run.py installs the project
    assert "pip check" in instructions
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.M)[0].split():
        assert (REPO / source).is_file(), source

    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "data", "artifacts", ".dagster_home", "bench/results", ".pytest_cache",
            ".ruff_cache", "**/__pycache__", ".dvc/cache", ".dvc/config.local"} <= ignored
    assert not {"fmn_core", "fmn_assets", "deploy", "requirements.lock", "pyproject.toml", "**/data"} & ignored


def test_cluster_lock_adds_only_what_requirements_lock_lacks():
    base, extra = _lock_pins(REPO / "requirements.lock"), _lock_pins(K8S / "requirements-k8s.lock")
    assert {"dagster-postgres", "dvc-s3", "s3fs", "psycopg2-binary"} <= set(extra)
    assert not set(extra) & set(base)  # shared packages stay at requirements.lock's versions
    assert all(hashes for _, hashes in extra.values()), extra  # --require-hashes needs one for every pin
    assert extra["dagster-postgres"][0] == base["dagster-k8s"][0]  # the 0.x twin of dagster's version
    assert extra["s3fs"][0] == base["fsspec"][0]  # s3fs releases in lockstep with fsspec


def test_readme_documents_the_volume_and_the_exact_multi_gpu_run_config():
    blocks = _yaml_blocks(README)
    (claim,) = [block for block in blocks if block.get("kind") == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == DEPLOYMENT["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (launchpad,) = [block for block in blocks if "execution" in block]
    assert launchpad == multi_gpu_run_config(4)
    assert "nvidia.com/gpu, operator: Exists, effect: NoSchedule" in README
