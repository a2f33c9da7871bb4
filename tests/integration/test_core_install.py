"""`pip install .` gives fmn_core and the `fmn` command line without the pipeline: no Dagster, DVC or Great
Expectations, and everything the core does works.

A fresh virtual environment gets the core's share of requirements.lock (hash-checked, --no-deps, as run.py
installs .venv) and then the project itself, not editable, from a copy of its sources; pip check must find the
core's requirements complete. The core's share is the dependency closure of pyproject.toml's ``dependencies``
(no extra), read from the installed packages' metadata, whose versions are the lock's. With that environment's
`fmn`, the tiny synthetic dataset is generated, both stages trained for an epoch at 64x32, and the descriptors
extracted and evaluated. Installing torch and its CUDA wheels into a new environment copies a few GB: minutes.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO

pytestmark = pytest.mark.timeout(3600)

PIPELINE_MODULES = ("dagster", "dvc", "great_expectations")
#: what `pip install .` builds the project from (a copy, so the build leaves nothing in the checkout)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "fmn_core", "fmn_assets")


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def core_closure() -> set[str]:
    """Canonical names of pyproject.toml's dependencies (no extra) and of everything they require, transitively,
    as the installed distributions (the lock's versions) declare it for this platform; plus the build backend."""
    project = _project()
    wanted = [Requirement(text) for text in project["project"]["dependencies"]]
    wanted += [Requirement(text) for text in project["build-system"]["requires"]]  # --no-build-isolation builds
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        extras = requirement.extras or {""}
        for text in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra}) for extra in extras):
                wanted.append(needed)
    return seen


def lock_entries(lock: Path) -> dict[str, str]:
    """requirements.lock as {canonical name: its block (the pin, its hashes and its `# via` lines)}."""
    entries, name = {}, None
    for line in lock.read_text().splitlines(keepends=True):
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if pin:
            name = canonicalize_name(pin.group(1))
            entries[name] = line
        elif name is not None and line.startswith(" "):
            entries[name] += line
        else:
            name = None
    return entries


def _run(command: list, cwd: Path, env: dict, timeout: int = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_core_installs_and_trains_without_the_pipeline(tmp_path):
    closure = core_closure()
    entries = lock_entries(REPO / "requirements.lock")
    assert not {canonicalize_name(m) for m in ("dagster", "dvc", "great-expectations")} & closure
    missing = sorted(closure - set(entries) - {"pip"})
    assert not missing, f"the core needs packages requirements.lock does not pin: {missing}"
    core_lock = tmp_path / "core.lock"
    core_lock.write_text("".join(entries[name] for name in sorted(closure) if name in entries))

    started = time.monotonic()
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # no PYTHONPATH: the checkout's packages must not stand in for the installed ones
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    try:
        pip = [python, "-m", "pip", "--disable-pip-version-check", "install", "--quiet"]
        _run([*pip, "--require-hashes", "--no-deps", "-r", core_lock], tmp_path, env)
        source = tmp_path / "src"
        source.mkdir()
        for name in SOURCES:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(REPO / name, source / name)
        _run([*pip, "--no-deps", "--no-build-isolation", source], tmp_path, env)
        _run([python, "-m", "pip", "check", "--disable-pip-version-check"], tmp_path, env)
        installed = _run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], tmp_path,
                         env).stdout
        names = {canonicalize_name(row["name"]) for row in json.loads(installed)}
        assert names <= closure | {"fmn-reid", "pip"}, sorted(names - closure)
        install_seconds = time.monotonic() - started

        probe = ("import importlib, json, fmn_core\n"
                 "found = {}\n"
                 f"for name in {PIPELINE_MODULES!r}:\n"
                 "    try:\n"
                 "        importlib.import_module(name)\n"
                 "        found[name] = True\n"
                 "    except ModuleNotFoundError:\n"
                 "        found[name] = False\n"
                 "print(json.dumps({'found': found, 'fmn_core': fmn_core.__file__}))")
        report = json.loads(_run([python, "-c", probe], tmp_path, env).stdout)
        assert report["found"] == dict.fromkeys(PIPELINE_MODULES, False)
        assert Path(report["fmn_core"]).is_relative_to(env_dir)  # the installed copy, not the checkout's

        fmn = env_dir / "bin" / "fmn"
        data, run = tmp_path / "data", tmp_path / "run"
        small = ["--dataset", "synthetic", "--root", data, "--config", "cpu", "--set", "input_height=64", "--set",
                 "input_width=32"]
        _run([fmn, "generate", data, "--preset", "tiny"], tmp_path, env)
        _run([fmn, "train-stage1", *small, "--set", "stage1_epochs=1", "--out", run], tmp_path, env)
        _run([fmn, "train-stage2", *small, "--set", "stage2_epochs=1", "--grn", run / "grn.pt", "--out", run],
             tmp_path, env)
        _run([fmn, "extract", "--checkpoint", run / "fmn.pt", "--dataset", "synthetic", "--root", data, "--out",
              run / "descriptors.parquet"], tmp_path, env)
        evaluated = _run([fmn, "evaluate", run / "descriptors.parquet", "--rerank", "--json", run / "metrics.json"],
                         tmp_path, env)
        assert "| FMN + re-ranking |" in evaluated.stdout
        metrics = json.loads((run / "metrics.json").read_text())
        assert {"GRN", "LAN", "FMN", "FMN + re-ranking"} <= set(metrics)
        print(f"\ncore-only environment: {len(names)} packages installed in {install_seconds:.0f} s; "
              f"generate, train, extract, evaluate in {time.monotonic() - started - install_seconds:.0f} s")
    finally:
        shutil.rmtree(env_dir, ignore_errors=True)  # a few GB: not left for pytest's kept temporary folders
