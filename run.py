#!/usr/bin/env python3
"""Set up the project's virtual environment on first use, then run one of its jobs.

    python3 run.py main    # the whole Dagster asset graph on the bundled synthetic data
    python3 run.py test    # the test suite (extra arguments go to pytest)
    python3 run.py pull    # dvc pull of the data and models, after checking that the DVC remote is reachable

Only the Python standard library is used here, so this works on a machine
that has nothing but Python 3.11+. The environment lives in ``.venv/`` at the
repository root. It is installed from ``requirements.lock`` (every package pinned
to one version, every file checked against the lock's sha256 hashes), then the
project itself goes in editable, without dependencies. It is reinstalled when
``pyproject.toml`` or ``requirements.lock`` changes. The lock is for Linux x86_64
and CPython 3.11; its first lines give the command that regenerates it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".fmn-install-stamp"
LOCK = ROOT / "requirements.lock"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> None:
    """Create .venv and install the locked dependencies, then the project (editable), when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- this file must run, and explain, on older Pythons
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]} ({sys.executable})")
    wanted = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", LOCK):
        wanted.update(hashlib.sha256(path.read_bytes()).digest())
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted.hexdigest():
        return
    if not PYTHON.exists():
        print(f"[run.py] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"[run.py] installing {LOCK.name} and the project into .venv (a few minutes the first time)", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # Everything the project needs (torch's CUDA build and its nvidia-* wheels included) at the locked
    # versions; pip refuses any file whose sha256 is not in the lock. --no-deps: the lock is the complete
    # set, so pip installs exactly it and resolves nothing (the pip that comes with Python 3.11, 23.2,
    # fails to resolve extras such as gql[requests] in hash-checking mode).
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(LOCK)], check=True, cwd=ROOT)
    # The project itself, editable. --no-deps: nothing unlocked comes in. --no-build-isolation: it is
    # built with the locked setuptools just installed instead of an unpinned one fetched for the build.
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True, cwd=ROOT)
    # With --no-deps nothing checked that the lock is complete and consistent: pip check does.
    subprocess.run([str(PYTHON), "-m", "pip", "check", "--disable-pip-version-check"], check=True)
    STAMP.write_text(wanted.hexdigest() + "\n")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"main", "test", "pull"}:
        print(__doc__)
        return 2
    job, extra = sys.argv[1], sys.argv[2:]
    ensure_environment()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if job == "test":
        command = [str(PYTHON), "-m", "pytest", *extra]
    elif job == "pull":
        env["FMN_PROJECT_DIR"] = str(ROOT)
        command = [str(PYTHON), "-m", "fmn_assets.pull", *extra]
    else:
        env["FMN_PROJECT_DIR"] = str(ROOT)
        command = [str(PYTHON), "-m", "fmn_assets.main", *extra]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
