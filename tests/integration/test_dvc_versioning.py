"""DVCResource against real DVC repositories with a local remote: dataset versions, pushes, pulls, locks, git.

Nothing here trains; each test builds a small git + DVC project of its own.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zc.lockfile

from fmn_assets.resources import DVCResource
from tests.helpers import BIN, make_project, run


def objects(remote: Path) -> dict[str, int]:
    """Every object on a local DVC remote, with its modification time."""
    return {str(p.relative_to(remote)): p.stat().st_mtime_ns for p in remote.rglob("*") if p.is_file()}


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, DVCResource]:
    """Two small datasets under data/, tracked as one folder (data.dvc), pushed to the local remote."""
    project, remote = make_project(tmp_path)
    for dataset, files in (("market1501", {"q/1.jpg": "a", "g/2.jpg": "b"}), ("synthetic", {"x/3.jpg": "c"})):
        for name, text in files.items():
            (project / "data" / dataset / name).parent.mkdir(parents=True, exist_ok=True)
            (project / "data" / dataset / name).write_text(text)
    dvc = DVCResource(repo_dir=str(project))
    versioned = dvc.track(project / "data")
    assert versioned.pushed, versioned.push_message
    return project, remote, dvc


def test_dataset_versions_come_from_dvc_and_move_one_dataset_at_a_time(project):
    root, _, dvc = project
    first = dvc.dataset_versions(root / "data")
    assert set(first) == {"market1501", "synthetic"} and all(len(v) == 32 for v in first.values())
    (root / "data" / "market1501" / "q" / "1.jpg").write_text("changed")
    assert dvc.dataset_versions(root / "data") == first  # the version is what data.dvc records, not the workspace
    dvc.add(root / "data")
    second = dvc.dataset_versions(root / "data")
    assert second["synthetic"] == first["synthetic"] and second["market1501"] != first["market1501"]
    assert DVCResource(repo_dir=str(root)).dataset_versions(root / "elsewhere") == {}  # not tracked: no versions


def test_push_uploads_only_what_the_remote_lacks(project):
    root, remote, dvc = project
    before = objects(remote)
    assert len(before) == 4  # three files and the folder's .dir manifest
    again = dvc.track(root / "data")
    assert again.pushed and "Everything is up to date" in again.push_message
    assert objects(remote) == before  # nothing uploaded again, nothing rewritten
    (root / "data" / "synthetic" / "x" / "3.jpg").write_text("new synthetic data")
    changed = dvc.track(root / "data")
    assert changed.pushed and "2 files pushed" in changed.push_message  # the changed file and the new manifest
    after = objects(remote)
    assert len(after) == 6 and all(after[name] == mtime for name, mtime in before.items())


def test_one_dataset_can_be_pulled_alone(project, tmp_path):
    root, _, dvc = project
    run(["git", "add", "data.dvc"], root)
    run(["git", "commit", "-qm", "data"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", root, clone], tmp_path)
    assert DVCResource(repo_dir=str(clone)).dataset_versions(clone / "data") == dvc.dataset_versions(root / "data")
    run([BIN / "dvc", "pull", "-q", "data/synthetic"], clone)
    assert (clone / "data" / "synthetic" / "x" / "3.jpg").read_text() == "c"
    assert not (clone / "data" / "market1501").exists()  # the other dataset stayed on the remote
    run([BIN / "dvc", "pull", "-q", "data/market1501"], clone)
    assert (clone / "data" / "market1501" / "g" / "2.jpg").read_text() == "b"


def test_a_pointer_whose_object_is_not_on_the_remote_fails_the_pull_by_name(project, tmp_path):
    root, _, dvc = project
    (root / "artifacts" / "synthetic").mkdir(parents=True)
    model = root / "artifacts" / "synthetic" / "fmn.pt"
    model.write_bytes(b"weights")
    dvc_file, md5, _ = dvc.add(model)  # versioned, never pushed
    run(["git", "add", "data.dvc", str(dvc_file.relative_to(root))], root)
    run(["git", "commit", "-qm", "pointer without its object on the remote"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", root, clone], tmp_path)
    result = run([BIN / "dvc", "pull"], clone, check=False)
    assert result.returncode != 0
    assert "artifacts/synthetic/fmn.pt" in result.stderr and md5 in result.stderr, result.stderr
    assert (clone / "data" / "synthetic" / "x" / "3.jpg").is_file()  # everything that was pushed still came back


def test_add_waits_for_dvcs_lock_while_reading_versions_never_does(project):
    root, _, dvc = project
    (root / "data" / "synthetic" / "x" / "4.jpg").write_text("d")
    lock = zc.lockfile.LockFile(str(root / ".dvc" / "tmp" / "lock"))  # DVC's repository lock, as a push holds it
    outcome: dict = {}

    def add() -> None:
        try:
            outcome["md5"] = dvc.add(root / "data")[1]
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    adding = threading.Thread(target=add)
    try:
        adding.start()
        start = time.monotonic()
        versions = dvc.dataset_versions(root / "data")  # the sensor's and the observation's read
        assert time.monotonic() - start < 30 and set(versions) == {"market1501", "synthetic"}
        time.sleep(max(0.0, 5 - (time.monotonic() - start)))  # longer than DVC's own 3 s before it gives up
        assert adding.is_alive() and not outcome, outcome  # waiting for the lock, not failed
    finally:
        lock.close()
    adding.join(timeout=120)
    assert "error" not in outcome and outcome["md5"].endswith(".dir"), outcome


def test_git_commit_and_dirty_flag_sit_next_to_the_md5(project):
    root, _, dvc = project
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    (root / "data" / "synthetic" / "x" / "5.jpg").write_text("e")
    versioned = dvc.track(root / "data")
    assert (versioned.git_commit, versioned.git_dirty) == (head, False)  # the rewritten data.dvc does not count
    (root / "train.py").write_text("print('changed code')\n")
    later = dvc.track(root / "data")
    assert later.git_dirty is True and later.metadata()["git_commit"] == head
    outside = DVCResource(repo_dir=str(root))
    run(["rm", "-rf", ".git"], root)
    assert outside.git_state() == ("", None)
