"""bench/gpu_check.py cannot rot: its whole path runs here at tiny sizes (--dry-run), on whatever device there is.

It runs as users run it, ``python -m bench.gpu_check`` from the repository root.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO

SCRIPT = ["-m", "bench.gpu_check"]


def test_the_dry_run_trains_both_stages_extracts_reranks_and_exports(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, *SCRIPT, "--dry-run", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] is True and report["arch"] == "resnet50" and report["device"]
    rows = {row["what"]: row for row in report["rows"]}
    assert list(rows) == ["stage 1", "stage 2", "extraction", "re-ranking"]
    for row in rows.values():
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    assert {"target", "meets_target"} <= set(rows["stage 1"]) and "target" not in rows["stage 2"]
    assert rows["re-ranking"]["shape"] == [60, 300]
    assert report["onnx"]["cpu_parity_passed"] is True
    assert report["onnx"].get("max_abs_vs_cpu_provider", 0.0) < 1e-3 or "skipped" in report["onnx"]
    assert "GPU check (dry run)" in done.stdout and "stage 1" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the full check would run")
def test_without_a_gpu_the_full_check_says_to_use_the_dry_run(tmp_path):
    done = subprocess.run([sys.executable, *SCRIPT, "--json", str(tmp_path / "x.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--dry-run" in done.stderr
    assert not (tmp_path / "x.json").exists()
