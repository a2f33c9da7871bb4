"""Every Kubernetes manifest the project generates or ships, validated offline against the API server's OpenAPI
schemas (kubernetes-validate, strict: an unknown field is an error, as `kubectl apply --validate=strict` makes it)
for each Kubernetes minor version from 1.30 on that the package bundles.

Dagster's chart itself asks only for Kubernetes >= 1.18; 1.30 is the oldest release still maintained upstream when
this was written. A manifest that a cluster would silently trim (a GPU request in a place the schema has no field
for) fails here: the last tests show that the check catches one.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes_validate.utils import all_versions

from fmn_assets.execution.k8s import GPU_RESOURCE, multi_gpu_run_config, multi_node_training_manifests
from tests.helpers import REPO
from tests.integration.test_k8s_deployment import IMAGE, README, _launched_step_job, _yaml_blocks, k8s_instance

VERSIONS = sorted({v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 30)},
                  key=lambda v: tuple(map(int, v.split("."))))
SHIPPED = sorted((REPO / "deploy").rglob("*.yaml"))
__all__ = ["k8s_instance"]  # the fixture, used by the step-pod test below


def validate_everywhere(manifest: dict) -> None:
    """Valid for every supported version, or a ValidationError naming the version and the field."""
    assert VERSIONS, "kubernetes-validate bundles no schema of Kubernetes 1.30 or newer"
    for version in VERSIONS:
        checked = kubernetes_validate.validate(manifest, version, strict=True)
        assert checked == ".".join(version.split(".")[:2]), (version, checked)  # the schema it really used


def shipped_manifests() -> list[tuple[str, dict]]:
    """The Kubernetes objects among deploy/'s YAML files and the deployment README's YAML blocks."""
    found = []
    for path in SHIPPED:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and "apiVersion" in document and "kind" in document:
                found.append((str(path.relative_to(REPO)), document))
    for block in _yaml_blocks(README):
        if isinstance(block, dict) and "apiVersion" in block and "kind" in block:
            found.append(("deploy/k8s/README.md", block))
    return found


def test_the_shipped_manifests_are_found():
    kinds = {(source, document["kind"]) for source, document in shipped_manifests()}
    assert ("deploy/k8s/workspace-pvc.yaml", "PersistentVolumeClaim") in kinds
    assert ("deploy/k8s/README.md", "PersistentVolumeClaim") in kinds


@pytest.mark.parametrize(("source", "manifest"), shipped_manifests(), ids=lambda x: x if isinstance(x, str) else "")
def test_shipped_manifest_is_valid(source, manifest):
    validate_everywhere(manifest)


@pytest.mark.parametrize(("run_config", "step"), [({}, "grn_checkpoint"), (multi_gpu_run_config(4), "fmn_checkpoint"),
                                                  ({}, "descriptor_tables"), ({}, "dataset_splits")],
                         ids=["training-1-gpu", "training-4-gpus", "descriptors", "cpu-step"])
def test_the_step_jobs_k8s_job_executor_launches_are_valid(k8s_instance, run_config, step):
    job = _launched_step_job(k8s_instance, run_config, step)
    manifest = k8s_client.ApiClient().sanitize_for_serialization(job)  # the camelCase body the API server gets
    assert manifest["kind"] == "Job" and manifest["spec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    validate_everywhere(manifest)


@pytest.mark.parametrize(("nodes", "gpus"), [(2, 1), (4, 8)])
def test_the_multi_node_training_manifests_are_valid(nodes, gpus):
    service, job = multi_node_training_manifests("fmn-grn", IMAGE, nodes, gpus,
                                                 ["-m", "fmn_assets.execution.torchrun_entry", "--stage", "1"])
    validate_everywhere(service)
    validate_everywhere(job)
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == nodes
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == str(gpus)
    assert f"--nnodes={nodes}" in container["command"] and f"--nproc-per-node={gpus}" in container["command"]
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]


def broken_copies() -> list[tuple[str, str, dict]]:
    """Mistakes a cluster would not run as meant, each with the version it must fail on."""
    _, job = multi_node_training_manifests("fmn-grn", IMAGE, 2, 1, ["-m", "fmn_assets.execution.torchrun_entry"])
    typo, moved, unnamed = copy.deepcopy(job), copy.deepcopy(job), copy.deepcopy(job)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"request": container["resources"]["requests"]}  # `request`: the GPU ask is lost
    pod = moved["spec"]["template"]["spec"]
    pod["resources"] = pod["containers"][0].pop("resources")  # pod-level resources: no such field before 1.32
    del unnamed["spec"]["template"]["spec"]["containers"][0]["name"]
    return [("resources.request", VERSIONS[-1], typo), ("pod-level resources", "1.30.0", moved),
            ("container without a name", VERSIONS[-1], unnamed)]


@pytest.mark.parametrize(("mistake", "version", "manifest"), broken_copies(), ids=lambda x: x if isinstance(x, str)
                         and not x[0].isdigit() else "")
def test_a_broken_manifest_fails(mistake, version, manifest):
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, version, strict=True)
