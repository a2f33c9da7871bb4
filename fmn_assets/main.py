"""The project's main job: materialise the whole graph for one dataset with the real Dagster CLI.

    python -m fmn_assets.main                      # the synthetic default, CPU demo recipe
    python -m fmn_assets.main --partition market1501 --config my_run.yaml
    python -m fmn_assets.main --seeds 0 1 2          # three runs; evaluation_metrics shows mean ± std

DAGSTER_HOME defaults to ``.dagster_home/`` in the project folder, with the
project's ``dagster.yaml`` linked into it, so ``dagster dev`` started the same
way afterwards shows this run, its checks and its metadata.

The whole graph takes two runs for the synthetic partition: ``synthetic_dataset``
has a partitions definition of its own (synthetic only), and Dagster runs one
partitions definition per run, so it is materialized first. At the end the job
prints the ``git add ... && git commit`` line that records the run's DVC pointers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmn_assets.console import RunView
from fmn_assets.partitions import DATASETS
from fmn_assets.resources import project_dir

#: The graph after the data is in place: every asset but synthetic_dataset (Dagster selection syntax).
GRAPH_AFTER_DATA = "not key:synthetic_dataset"


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


def seed_config(folder: Path, seed: int) -> Path:
    """A run-config file that sets the training seed; Dagster deep-merges it over the user's ``--config``."""
    path = folder / f"seed_{seed}.yaml"
    path.write_text(f"ops:\n  grn_checkpoint:\n    config:\n      seed: {seed}\n")
    return path


def latest_seed_study(home: Path, partition: str) -> str | None:
    """The ``seed_study`` Markdown of the newest evaluation_metrics materialization of ``partition``."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("evaluation_metrics"), asset_partitions=[partition]), limit=1)
    for record in records.records:
        study = record.asset_materialization.metadata.get("seed_study") if record.asset_materialization else None
        return study.value if study is not None else None
    return None


def split_config(config: Path | None, folder: Path) -> tuple[list[Path], list[Path]]:
    """The user's run config as two files: synthetic_dataset's part, and the rest of the graph's.

    The two runs see only the ops they hold (Dagster refuses config for ops a
    run lacks); resources and execution settings go to both.
    """
    import yaml

    if config is None:
        return [], []
    whole = yaml.safe_load(config.read_text()) or {}
    ops = dict(whole.get("ops") or {})
    synthetic = ops.pop("synthetic_dataset", None)
    shared = {key: value for key, value in whole.items() if key != "ops"}
    first, rest = folder / "synthetic_dataset.yaml", folder / "graph.yaml"
    first.write_text(yaml.safe_dump({**shared, **({"ops": {"synthetic_dataset": synthetic}} if synthetic else {})}))
    rest.write_text(yaml.safe_dump({**shared, "ops": ops}))
    return [first], [rest]


def git_commit_line(root: Path, partition: str) -> str:
    """The command that records this partition's DVC pointers (data.dvc and artifacts/<partition>/*.dvc) in git."""
    pointers = [root / "data.dvc", *sorted((root / "artifacts" / partition).glob("*.dvc"))]
    names = [os.path.relpath(p, root) for p in pointers if p.is_file()]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    message = f"fmn: {partition} run {stamp} (DVC pointers of the data and artifacts)"
    return f"git add {shlex.join(names)} && git commit -m {shlex.quote(message)}"


def materialize(dagster: list[str], select: str, partition: str, configs: list[Path], root: Path,
                env: dict[str, str], log_file: Path, verbose: bool) -> int:
    """One ``dagster asset materialize`` run: the short view on the terminal, every line in ``log_file``."""
    command = [*dagster, "asset", "materialize", "-m", "fmn_assets", "--select", select, "--partition", partition]
    for config in configs:
        command += ["-c", str(config)]
    print(f"[fmn] {' '.join(command)}", flush=True)
    if verbose:
        return subprocess.call(command, cwd=root, env=env)
    with open(log_file, "a", encoding="utf-8") as log, subprocess.Popen(
            command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1) as process:
        RunView(log, interactive=sys.stdout.isatty()).feed(process.stdout)
        return process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default="synthetic", choices=DATASETS, help="the dataset to run")
    parser.add_argument("--config", type=Path, help="run config YAML (see the launchpad for its shape)")
    parser.add_argument("--select", default="*", help="Dagster asset selection")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's full event log instead of the "
                                                                   "short view (it always goes to the log file)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="train and evaluate once per training seed, in turn (data fixed); evaluation_metrics "
                             "then shows Table 1 as mean ± std over them")
    args = parser.parse_args(argv)
    if args.seeds and args.select != "*":
        parser.error("--seeds retrains, so it needs the whole graph: leave --select out")

    root = project_dir()
    home = dagster_home(root)
    env = {**os.environ, "DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(root), "PYTHONUNBUFFERED": "1"}
    dagster = Path(sys.executable).with_name("dagster")
    program = [str(dagster) if dagster.exists() else "dagster"]
    log_file = home / "logs" / f"main-{args.partition}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"[fmn] DAGSTER_HOME={home}\n[fmn] full log: {log_file}", flush=True)
    user_configs = [args.config] if args.config else []
    with tempfile.TemporaryDirectory(prefix="fmn-seeds-") as folder:
        code, select = 0, args.select
        if args.select == "*":  # synthetic_dataset first, in a run of its own, then the rest of the graph
            synthetic_configs, user_configs = split_config(args.config, Path(folder))
            select = GRAPH_AFTER_DATA
            if args.partition == "synthetic":
                code = materialize(program, "synthetic_dataset", "synthetic", synthetic_configs, root, env, log_file,
                                   args.verbose)
        for seed in (args.seeds or [None]) if code == 0 else []:
            configs = user_configs if seed is None else [*user_configs, seed_config(Path(folder), seed)]
            if seed is not None:
                print(f"\n[fmn] training seed {seed}", flush=True)
            code = materialize(program, select, args.partition, configs, root, env, log_file, args.verbose)
            if code != 0:
                break

    artifacts = root / "artifacts" / args.partition
    if code != 0:
        print(f"\n[fmn] the run failed (exit code {code}); the full log is {log_file}, and the Dagster UI "
              "shows which step failed and why:\n"
              f"      DAGSTER_HOME={home} {dagster} dev -w {root / 'workspace.yaml'}", file=sys.stderr)
        return code
    metrics = artifacts / "metrics.md"
    print("\n" + (metrics.read_text() if metrics.is_file() else f"(no metrics at {metrics})"))
    if args.seeds and len(args.seeds) > 1:
        study = latest_seed_study(home, args.partition)
        print(f"mean ± std over training seeds (evaluation_metrics metadata):\n\n{study}\n" if study else
              "(no seed study recorded)")
    pictures = sorted((artifacts / "pictures").glob("*.png"))
    print("pictures:\n" + "\n".join(f"  {p}" for p in pictures))
    print(f"model card: {artifacts / 'MODEL_CARD.md'}\nONNX model: {artifacts / 'fmn.onnx'} (search a gallery: "
          f"{Path(sys.executable).with_name('fmn')} search --gallery {artifacts / 'gallery_descriptors.parquet'} "
          f"--model {artifacts / 'fmn.onnx'} QUERY_IMAGE --out result.png)")
    print(f"artifacts (DVC-tracked: *.dvc next to them): {artifacts}")
    print(f"\nrecord this run's DVC pointers in git (in {root}; each step already pushed the data and artifacts to "
          f"the DVC remote, or says dvc_pushed: false in its metadata):\n  {git_commit_line(root, args.partition)}")
    print(f"\nbrowse the graph, this run and its metadata:\n  DAGSTER_HOME={home} {dagster} dev -w "
          f"{root / 'workspace.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
