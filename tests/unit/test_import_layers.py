"""The import layers of pyproject.toml's [tool.importlinter], checked by the real import-linter.

The contracts are checked on the project as it is, and each is shown to fail on a copy of the code with one import
that runs the wrong way, so a contract that checks nothing cannot pass unnoticed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=pythonpath,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath)},
                          capture_output=True, text=True, timeout=120)


def test_the_project_keeps_its_import_layers() -> None:
    result = _lint(ROOT / "pyproject.toml", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_a_model_importing_retrieval_breaks_the_layers(tmp_path: Path) -> None:
    for package in ("fmn_core", "fmn_assets"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    mixing = tmp_path / "fmn_core" / "models" / "mixing.py"
    mixing.write_text(mixing.read_text() + "\nfrom fmn_core.retrieval import evaluation  # noqa: E402,F401\n")
    result = _lint(tmp_path / "pyproject.toml", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fmn_core.models is not allowed to import fmn_core.retrieval" in result.stdout
    assert "fmn_core.models.mixing -> fmn_core.retrieval" in result.stdout


def test_fmn_assets_importing_the_cli_breaks_its_contract(tmp_path: Path) -> None:
    for package in ("fmn_core", "fmn_assets"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    entry = tmp_path / "fmn_assets" / "execution" / "torchrun_entry.py"
    entry.write_text(entry.read_text() + "\nfrom fmn_core.cli import build_parser  # noqa: E402,F401\n")
    result = _lint(tmp_path / "pyproject.toml", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fmn_assets.execution.torchrun_entry -> fmn_core.cli" in result.stdout


def test_the_execution_plumbing_importing_an_asset_breaks_its_contract(tmp_path: Path) -> None:
    for package in ("fmn_core", "fmn_assets"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    launchers = tmp_path / "fmn_assets" / "execution" / "launchers.py"
    launchers.write_text(launchers.read_text() + "\nfrom fmn_assets import configs  # noqa: E402,F401\n")
    result = _lint(tmp_path / "pyproject.toml", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fmn_assets.execution.launchers -> fmn_assets.configs" in result.stdout
