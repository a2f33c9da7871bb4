"""How long CI's command takes: `bash .ci/run` in a fresh clone, with the time of each test layer.

    python -m bench.suite_time            # clones this repository into a temporary folder and runs .ci/run there

`.ci/run` installs what the tests need beyond Python (when missing), creates `.venv/` and runs the whole suite.
pytest writes a JUnit report (through ``PYTEST_ADDOPTS``), from which the tests are counted and timed per layer
(tests/unit, integration, browser, deploy). Writes ``docs/results/suite_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from bench.main_job_time import memory_gb
from fmn_core.utils.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results" / "suite_time.json"
LAYERS = ("unit", "integration", "browser", "deploy")


def layers(report: Path) -> dict[str, dict[str, float]]:
    """Tests, failures and seconds per layer, from a JUnit XML report."""
    totals = {layer: {"tests": 0, "failed": 0, "skipped": 0, "seconds": 0.0} for layer in LAYERS}
    for case in ET.parse(report).getroot().iter("testcase"):
        layer = next((name for name in LAYERS if f"tests.{name}." in case.get("classname", "")), None)
        if layer is None:
            continue
        entry = totals[layer]
        entry["tests"] += 1
        entry["seconds"] += float(case.get("time", 0))
        entry["failed"] += any(child.tag in ("failure", "error") for child in case)
        entry["skipped"] += any(child.tag == "skipped" for child in case)
    return {layer: {**v, "seconds": round(v["seconds"], 1)} for layer, v in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="fmn-ci-"))
    clone = folder / "fmn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    report = folder / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FMN_", "DAGSTER_"))}
    env["PYTEST_ADDOPTS"] = f"--junitxml={report}"
    started = time.perf_counter()
    with open(folder / "ci.log", "w") as log:
        done = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    per_layer = layers(report) if report.is_file() else {}
    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb()}, "commit": commit,
              "exit_code": done.returncode, "ci_seconds": round(seconds, 1), "ci_minutes": round(seconds / 60, 1),
              "layers": per_layer, "tests": sum(v["tests"] for v in per_layer.values()),
              "command": "python -m bench.suite_time", "when": time.strftime("%Y-%m-%d")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print("| layer | tests | failed | seconds |\n|---|---:|---:|---:|")
    for layer, entry in per_layer.items():
        print(f"| {layer} | {entry['tests']} | {entry['failed']} | {entry['seconds']:.0f} |")
    print(f"\n.ci/run: exit {done.returncode} in {seconds / 60:.1f} min on {cpu_model()}, {os.cpu_count()} cores; "
          f"log {folder / 'ci.log'}; written to {RESULTS}")
    if done.returncode == 0:
        shutil.rmtree(clone, ignore_errors=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
