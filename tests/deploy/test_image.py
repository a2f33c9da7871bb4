"""The user-code image (deploy/k8s/Dockerfile) built from the repository and run: the code location loads in it,
the CLI starts, and a real step materialises into a project folder mounted as the cluster's workspace volume.

The build uses a private dockerd (tests/deploy/docker_env.py) and a bookworm base made with debootstrap, since no
registry is reachable here; the Dockerfile is the shipped one, only BASE_IMAGE and pip's indexes are build
arguments. Its time and the image's size go to bench/results/deploy_image.json (docs/deployment.md quotes them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from fmn_assets.resources import ProjectPaths
from fmn_core.utils.machine import cpu_model
from tests.deploy.docker_env import DockerDaemon, build_debian_base, missing_requirements, pip_build_args
from tests.helpers import REPO, TINY_DATA_CONFIG, make_project

REQUIRED = os.environ.get("FMN_REQUIRE_DEPLOY") == "1"
WHY_NOT = missing_requirements()
pytestmark = pytest.mark.skipif(WHY_NOT is not None and not REQUIRED,
                                reason=f"{WHY_NOT}; FMN_REQUIRE_DEPLOY=1 makes this fail")

IMAGE = "fmn-reid:deploy-test"
BASE = "fmn-debian-base:bookworm"
RESULTS = REPO / "bench" / "results" / "deploy_image.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(daemon, build facts): the image built once for the module, the daemon and its images removed after."""
    assert WHY_NOT is None, f"FMN_REQUIRE_DEPLOY=1 but {WHY_NOT}"
    folder = tmp_path_factory.mktemp("docker")
    daemon = DockerDaemon(folder / "daemon")
    daemon.start()
    try:
        base_seconds = build_debian_base(daemon, folder / "rootfs", BASE)
        started = time.monotonic()
        with pip_build_args() as pip_args:
            daemon.docker("build", "--network", "host", "-f", str(REPO / "deploy/k8s/Dockerfile"),
                          "--build-arg", f"BASE_IMAGE={BASE}", *pip_args, "-t", IMAGE, str(REPO),
                          env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=2400)
        build_seconds = time.monotonic() - started
        sizes = {name: int(daemon.docker("image", "inspect", "-f", "{{.Size}}", name).stdout)
                 for name in (BASE, IMAGE)}
        facts = {"image": IMAGE, "image_bytes": sizes[IMAGE], "base_bytes": sizes[BASE],
                 "base_seconds": round(base_seconds, 1), "build_seconds": round(build_seconds, 1),
                 "cpu": cpu_model(), "cores": os.cpu_count(), "unix_time": int(time.time())}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(facts, indent=2) + "\n")
        print(f"\nimage {IMAGE}: {sizes[IMAGE] / 1e9:.2f} GB (base {sizes[BASE] / 1e6:.0f} MB), "
              f"built in {build_seconds:.0f} s after a {base_seconds:.0f} s debootstrap, on {facts['cpu']}")
        yield daemon, facts
    finally:
        daemon.stop()


def in_container(daemon: DockerDaemon, *command: str, mounts: dict[Path, str] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 600):
    volumes = [arg for host, inside in (mounts or {}).items() for arg in ("-v", f"{host}:{inside}")]
    variables = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    return daemon.docker("run", "--rm", "--network", "host", *volumes, *variables, IMAGE, *command, timeout=timeout)


def test_the_image_holds_the_locked_environment_and_the_code_location(built):
    daemon, facts = built
    assert facts["image_bytes"] > facts["base_bytes"] > 0
    listed = in_container(daemon, "dagster", "asset", "list", "-m", "fmn_assets").stdout.split()
    for asset in ("dataset_splits", "grn_checkpoint", "fmn_checkpoint", "query_descriptors", "evaluation_metrics"):
        assert asset in listed, listed
    # validate loads the instance too: the repository's dagster.yaml keeps it under $DAGSTER_HOME (the chart sets it)
    validated = in_container(daemon, "dagster", "definitions", "validate", "-m", "fmn_assets",
                             env={"DAGSTER_HOME": "/tmp"})
    assert "Validation successful" in validated.stdout + validated.stderr
    assert "train-stage1" in in_container(daemon, "fmn", "--help").stdout
    # the cluster-only packages of requirements-k8s.lock, and the CUDA build of torch (the default image is for GPUs)
    versions = in_container(daemon, "python", "-c", "import torch, dagster_postgres, dvc_s3, dagster_k8s; "
                            "print(torch.__version__, torch.version.cuda)").stdout.split()
    assert versions[1] not in ("None", ""), versions


def test_a_step_runs_in_the_container_on_the_mounted_workspace(built, tmp_path):
    daemon, _ = built
    project, _ = make_project(tmp_path)
    (project / "tiny.yaml").write_text(yaml.safe_dump(TINY_DATA_CONFIG))
    (project / ".dagster_home").mkdir()
    result = in_container(daemon, "dagster", "asset", "materialize", "-m", "fmn_assets", "--select", "dataset_splits",
                          "--partition", "synthetic", "-c", "/workspace/tiny.yaml",
                          mounts={project: "/workspace"},
                          env={"FMN_PROJECT_DIR": "/workspace", "DAGSTER_HOME": "/workspace/.dagster_home"})
    output = result.stdout + result.stderr
    assert "RUN_SUCCESS" in output, output[-3000:]
    # written on the host's folder, through the mount: the split table, its DVC pointer and the generated JPEGs
    paths = ProjectPaths(project_dir=str(project))
    assert paths.splits("synthetic").is_file()
    assert (project / "data" / "synthetic").is_dir() and any((project / "data" / "synthetic").rglob("*.jpg"))
    assert "ASSET_CHECK_EVALUATION" in output and "STEP_FAILURE" not in output
