"""`python3 run.py pull` on a second machine whose home holds no copy of the default remote folder: it names the
missing folder and how to point DVC at the team's remote, instead of DVC's "Checkout failed ... Is your cache up to
date?"; pointed at the remote, it pulls. Real git, real DVC, two HOME folders for the two machines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.helpers import BIN, REPO, run


def _env(home: Path, project: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "FMN_PROJECT_DIR": str(project)}


def test_pull_names_a_missing_remote_folder_then_pulls_once_pointed_at_the_team_remote(tmp_path):
    first_home, second_home = tmp_path / "home-a", tmp_path / "home-b"
    first_home.mkdir()
    second_home.mkdir()
    project = tmp_path / "made-here"
    project.mkdir()
    env = _env(first_home, project)
    for command in (["git", "init", "-q"], ["git", "config", "user.email", "t@example.invalid"],
                    ["git", "config", "user.name", "t"], [BIN / "dvc", "init", "-q"],
                    [BIN / "dvc", "config", "core.analytics", "false"],
                    [BIN / "dvc", "remote", "add", "-d", "local", "~/.cache/fmn_reid/dvc-remote"]):
        run(command, project, env=env)
    (project / "data").mkdir()
    (project / "data" / "weights.bin").write_bytes(os.urandom(4096))
    run([BIN / "dvc", "add", "data"], project, env=env)
    run([BIN / "dvc", "push"], project, env=env)
    run(["git", "add", "-A"], project, env=env)
    run(["git", "commit", "-qm", "data"], project, env=env)

    clone = tmp_path / "second-machine"
    run(["git", "clone", "-q", project, clone], tmp_path)
    env = _env(second_home, clone)
    plain = run([BIN / "dvc", "pull"], clone, check=False, env=env)
    assert plain.returncode != 0 and "Checkout failed" in plain.stderr + plain.stdout  # what DVC alone says

    refused = run([sys.executable, "-m", "fmn_assets.pull"], REPO, check=False, env=env)
    missing = second_home / ".cache" / "fmn_reid" / "dvc-remote"
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"the DVC remote 'local' is the folder {missing}, which does not exist on this machine" in refused.stderr
    assert "dvc remote add --local -d team" in refused.stderr and not (clone / "data" / "weights.bin").exists()

    run([BIN / "dvc", "remote", "add", "--local", "-d", "team", first_home / ".cache" / "fmn_reid" / "dvc-remote"],
        clone, env=env)
    pulled = run([sys.executable, "-m", "fmn_assets.pull"], REPO, check=False, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert (clone / "data" / "weights.bin").read_bytes() == (project / "data" / "weights.bin").read_bytes()
    unknown = run([sys.executable, "-m", "fmn_assets.pull", "-r", "nosuch"], REPO, check=False, env=env)
    assert unknown.returncode == 2 and "no DVC remote named 'nosuch'" in unknown.stderr
