"""A real shared remote: DVC over SSH to an OpenSSH server started on 127.0.0.1 for these tests.

The server runs from its own sshd_config in a temporary folder, with a
throw-away host key and user key; nothing of the system's SSH configuration is
read or changed. Clone A materializes the graph and pushes, clone B (a git
clone of A) pulls and evaluates. Skipped only when no OpenSSH server is
installed and FMN_REQUIRE_SSHD is not set (CI sets it: `.ci/run`).
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from fmn_assets import defs
from fmn_assets.assets import ASSETS, CHECKS
from fmn_assets.main import git_commit_line
from fmn_assets.resources import DVCResource, ProjectPaths
from tests.helpers import BIN, TINY_DATA_CONFIG, TINY_RUN_CONFIG, free_port, make_project, run

SSHD = Path("/usr/sbin/sshd")
REQUIRED = os.environ.get("FMN_REQUIRE_SSHD") == "1"

pytestmark = pytest.mark.skipif(
    not SSHD.is_file() and not REQUIRED,
    reason="no OpenSSH server at /usr/sbin/sshd (apt-get install openssh-server); FMN_REQUIRE_SSHD=1 makes this fail")

#: What clone A pushes: the graph up to the evaluation (the ONNX export and the model card are pushed like any other
#: artifact; leaving them out saves the export's time).
ARTIFACTS = ("grn.pt", "fmn.pt", "query_descriptors.parquet", "gallery_descriptors.parquet")
UP_TO_EVALUATION = [dg.AssetKey(name) for name in ("dataset_splits", "grn_checkpoint", "fmn_checkpoint",
                                                   "query_descriptors", "gallery_descriptors", "evaluation_metrics")]


def wait_for_banner(port: int, server: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    """Until sshd answers with its SSH banner on 127.0.0.1:port."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, f"sshd exited ({server.returncode}):\n{log.read_text()[-3000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
                if connection.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"sshd did not answer on port {port} in {seconds} s:\n{log.read_text()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> dict:
    """An OpenSSH server on a free loopback port accepting one throw-away key; stopped afterwards."""
    assert SSHD.is_file(), "FMN_REQUIRE_SSHD=1 but there is no /usr/sbin/sshd: apt-get install openssh-server"
    folder = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"fmn-test-{name}", "-f", folder / name], folder)
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port, user = free_port(), getpass.getuser()
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        f"AllowUsers {user}", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", ""]))
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        Path("/run/sshd").mkdir(mode=0o755)  # the privilege-separation folder a root sshd needs (runtime, not config)
    run([SSHD, "-t", "-f", config], folder)  # the configuration is valid
    log = folder / "sshd.log"
    with open(log, "w") as handle:
        server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=handle, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_banner(port, server, log)
        store = folder / "store"
        store.mkdir()
        yield {"url": f"ssh://127.0.0.1{store}", "port": port, "user": user, "key": folder / "client_key",
               "store": store, "log": log}
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # sshd and the session processes it forked, by its process group
        server.wait(timeout=30)


def use_ssh_remote(project: Path, sshd: dict, default: bool = True) -> None:
    """Point the project at the SSH remote; the key goes to the untracked .dvc/config.local, as a user's would."""
    if default:
        run([BIN / "dvc", "remote", "add", "-f", "-d", "shared", sshd["url"]], project)
        run([BIN / "dvc", "remote", "modify", "shared", "port", str(sshd["port"])], project)
        run([BIN / "dvc", "remote", "modify", "shared", "user", sshd["user"]], project)
    run([BIN / "dvc", "remote", "modify", "--local", "shared", "keyfile", str(sshd["key"])], project)


def clone(source: Path, target: Path, sshd: dict) -> Path:
    run(["git", "clone", "-q", source, target], target.parent)
    use_ssh_remote(target, sshd, default=False)
    return target


def fmn(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmn_core", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def clone_a(sshd, tmp_path_factory) -> Path:
    """Clone A: the graph materialized on tiny data, every step pushing to the SSH remote, pointers committed."""
    project, _ = make_project(tmp_path_factory.mktemp("a"))
    use_ssh_remote(project, sshd)
    run(["git", "commit", "-qam", "shared DVC remote over SSH"], project)
    patch = pytest.MonkeyPatch()
    patch.setenv("FMN_PROJECT_DIR", str(project))
    try:
        instance = dg.DagsterInstance.ephemeral()
        data = dg.materialize([*ASSETS, *CHECKS], selection=["dataset_splits"], partition_key="synthetic",
                              instance=instance, resources={"paths": ProjectPaths(), "dvc": DVCResource()},
                              run_config=TINY_DATA_CONFIG, raise_on_error=False)
        assert data.success
        graph = defs.resolve_job_def("fmn_pipeline").execute_in_process(
            run_config=TINY_RUN_CONFIG, partition_key="synthetic", instance=instance, raise_on_error=False,
            asset_selection=UP_TO_EVALUATION)
        assert graph.success
    finally:
        patch.undo()
    for result in (data, graph):
        for event in result.get_asset_materialization_events():
            metadata = event.event_specific_data.materialization.metadata
            if "dvc_pushed" in metadata:
                assert metadata["dvc_pushed"].value is True, metadata["dvc_push"].value
    pushed = run([BIN / "dvc", "push"], project)
    assert "Everything is up to date" in pushed.stdout  # the steps already pushed everything over SSH
    run(["bash", "-c", git_commit_line(project, "synthetic")], project)  # the line the main job prints
    committed = run(["git", "show", "--name-only", "--format=", "HEAD"], project).stdout.split()
    assert set(committed) == {"data.dvc", *(f"artifacts/synthetic/{name}.dvc" for name in ARTIFACTS)}
    return project


def test_a_clone_pulls_everything_over_ssh_and_evaluates_at_once(clone_a, sshd, tmp_path):
    b = clone(clone_a, tmp_path / "b", sshd)
    assert not (b / "data").exists() and not (b / "artifacts" / "synthetic" / "fmn.pt").exists()
    run([BIN / "dvc", "pull", "-q", "data/synthetic"], b)  # one dataset alone
    assert (b / "data" / "synthetic" / "synthetic.json").is_file()
    assert not (b / "artifacts" / "synthetic" / "fmn.pt").exists()
    run([BIN / "dvc", "pull", "-q"], b)
    for name in ARTIFACTS:
        assert (b / "artifacts" / "synthetic" / name).read_bytes() == \
            (clone_a / "artifacts" / "synthetic" / name).read_bytes(), name
    tables = [f"artifacts/synthetic/{split}_descriptors.parquet" for split in ("query", "gallery")]
    in_b, in_a = fmn("evaluate", *tables, "--rerank", cwd=b), fmn("evaluate", *tables, "--rerank", cwd=clone_a)
    assert in_b.returncode == 0, in_b.stderr
    assert all(f"| {row} |" in in_b.stdout for row in ("GRN", "LAN", "FMN", "FMN + re-ranking"))
    assert in_b.stdout == in_a.stdout  # the same numbers from the pulled tables
    assert "not under" not in in_b.stderr  # their images resolved to B's own data/synthetic

    from fmn_core.retrieval import DescriptorTable

    query = DescriptorTable.load(b / tables[0])
    assert query.image_root == b / "data" / "synthetic" and all(Path(p).is_file() for p in query.meta["path"])


def test_a_pointer_whose_object_is_missing_from_the_remote_fails_the_pull_by_name(clone_a, sshd, tmp_path):
    pointer = yaml.safe_load((clone_a / "artifacts" / "synthetic" / "fmn.pt.dvc").read_text())["outs"][0]
    md5 = pointer["md5"]
    obj = sshd["store"] / "files" / "md5" / md5[:2] / md5[2:]
    assert obj.is_file()
    moved = obj.with_name(obj.name + ".away")
    obj.rename(moved)  # the remote lost the object the committed pointer names
    try:
        c = clone(clone_a, tmp_path / "c", sshd)
        result = run([BIN / "dvc", "pull"], c, check=False)
        assert result.returncode != 0
        assert "artifacts/synthetic/fmn.pt" in result.stderr and md5 in result.stderr, result.stderr
        assert (c / "artifacts" / "synthetic" / "grn.pt").read_bytes() == \
            (clone_a / "artifacts" / "synthetic" / "grn.pt").read_bytes()  # the rest still came back
    finally:
        moved.rename(obj)
