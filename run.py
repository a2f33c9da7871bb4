#!/usr/bin/env python3
"""Set up the project's virtual environment on first use, then run one of its jobs.

    python3 run.py main    # the whole Dagster asset graph on the bundled synthetic data
    python3 run.py test    # the test suite (extra arguments go to pytest)

Only the Python standard library is used here, so this works on a machine
that has nothing but Python 3.11+. The environment lives in ``.venv/`` at the
repository root and is reinstalled when ``pyproject.toml`` changes.
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
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_environment() -> None:
    """Create .venv and install the project (editable, with test extras) when needed."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- this file must run, and explain, on older Pythons
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]} ({sys.executable})")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not PYTHON.exists():
        print(f"[run.py] creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("[run.py] installing the project and its dependencies into .venv (a few minutes the first time)",
          flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--quiet", "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted + "\n")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"main", "test"}:
        print(__doc__)
        return 2
    job, extra = sys.argv[1], sys.argv[2:]
    ensure_environment()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if job == "test":
        command = [str(PYTHON), "-m", "pytest", *extra]
    else:
        env["FMN_PROJECT_DIR"] = str(ROOT)
        command = [str(PYTHON), "-m", "fmn_assets.main", *extra]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
