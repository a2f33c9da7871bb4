"""The project's main job: materialise the whole graph for one dataset with the real Dagster CLI.

    python -m fmn_assets.main                      # the synthetic default, CPU demo recipe
    python -m fmn_assets.main --partition market1501 --config my_run.yaml

DAGSTER_HOME defaults to ``.dagster_home/`` in the project folder, with the
project's ``dagster.yaml`` linked into it, so ``dagster dev`` started the same
way afterwards shows this run, its checks and its metadata.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fmn_assets.partitions import DATASETS
from fmn_assets.resources import project_dir


def dagster_home(root: Path) -> Path:
    """``$DAGSTER_HOME`` or ``<project>/.dagster_home``, holding a link to the project's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or root / ".dagster_home").absolute()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = Path(__file__).resolve().parent.parent / "dagster.yaml"
    if not target.exists() and source.is_file():
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copyfile(source, target)
    return home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default="synthetic", choices=DATASETS, help="the dataset to run")
    parser.add_argument("--config", type=Path, help="run config YAML (see the launchpad for its shape)")
    parser.add_argument("--select", default="*", help="Dagster asset selection")
    args = parser.parse_args(argv)

    root = project_dir()
    home = dagster_home(root)
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster) if dagster.exists() else "dagster", "asset", "materialize", "-m", "fmn_assets",
               "--select", args.select, "--partition", args.partition]
    if args.config:
        command += ["-c", str(args.config)]
    print(f"[fmn] DAGSTER_HOME={home}\n[fmn] {' '.join(command)}", flush=True)
    code = subprocess.call(command, cwd=root, env=env)

    artifacts = root / "artifacts" / args.partition
    if code != 0:
        print(f"\n[fmn] the run failed (exit code {code}); the Dagster UI shows which step and why:\n"
              f"      DAGSTER_HOME={home} {dagster} dev -w {root / 'workspace.yaml'}", file=sys.stderr)
        return code
    metrics = artifacts / "metrics.md"
    print("\n" + (metrics.read_text() if metrics.is_file() else f"(no metrics at {metrics})"))
    pictures = sorted((artifacts / "pictures").glob("*.png"))
    print("pictures:\n" + "\n".join(f"  {p}" for p in pictures))
    print(f"artifacts (DVC-tracked: *.dvc next to them): {artifacts}")
    print(f"\nbrowse the graph, this run and its metadata:\n  DAGSTER_HOME={home} {dagster} dev -w "
          f"{root / 'workspace.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
