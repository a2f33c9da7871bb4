"""The project's main job: one Dagster run of the whole graph for one dataset, driven through Dagster's API.

    python -m fmn_assets.main                      # the synthetic default, CPU demo recipe
    python -m fmn_assets.main --partition market1501 --config my_run.yaml
    python -m fmn_assets.main --seeds 0 1 2          # three runs; evaluation_metrics shows mean ± std

DAGSTER_HOME defaults to ``.dagster_home/`` in the project folder, with the
project's ``dagster.yaml`` linked into it, so ``dagster dev`` started the same
way afterwards shows this run, its checks and its metadata.

The run is ``fmn_pipeline`` for the partition, executed with ``dagster.execute_job``
on that instance (the multiprocess executor, as ``dagster asset materialize`` and
the UI's "Materialize all" use); for the synthetic partition its first step,
``dataset_splits``, generates the data when it is missing. The terminal shows a
short view read from the run's events in the instance (fmn_assets.console), the
full event log goes to a file. At the end the job prints the
``git add ... && git commit`` line that records the run's DVC pointers.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fmn_assets.partitions import DATASETS
from fmn_assets.resources import project_dir

JOB_NAME = "fmn_pipeline"

#: The instance settings of a run without --verbose. Dagster prints to the terminal through two console loggers:
#: the run config's ``loggers.console`` (set to CRITICAL in :func:`run_once`), and, in every step worker process
#: of the multiprocess executor, the instance's default console logger, which reports the worker's start
#: (``STEP_WORKER_STARTED``, DEBUG) before the run config's loggers exist. That one logs at the instance's
#: ``python_logs.python_log_level`` (DEBUG when unset), which the step processes get with the instance. INFO keeps
#: the steps' own messages (the epoch lines the short view shows); every event, DEBUG included, is still stored,
#: so the log file keeps it. Python log records below INFO that are no event (a debug line of an I/O manager) are
#: then not kept.
QUIET_INSTANCE = {"python_logs": {"python_log_level": "INFO"}}


def pipeline_job():
    """The job the main job runs, rebuilt by each step process (``dagster.reconstructable``)."""
    from fmn_assets import defs

    return defs.resolve_job_def(JOB_NAME)


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


def merged(base: dict, extra: dict) -> dict:
    """``extra`` deep-merged over ``base`` (the seed over the user's run config)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_seed(run_config: dict, seed: int) -> dict:
    """The run config with the training seed set (stage 2 inherits it from the GRN's configuration)."""
    return merged(run_config, {"ops": {"grn_checkpoint": {"config": {"overrides": {"seed": seed}}}}})


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


#: what a run config looks like, for the errors about files that are not one
RUN_CONFIG_EXAMPLE = ("a YAML mapping in the launchpad's shape, e.g. 'ops:' / '  grn_checkpoint:' / '    config:' / "
                      "'      overrides: {stage1_epochs: 2}'")


def latest_metadata(home: Path, partition: str, asset: str) -> dict[str, Any]:
    """The metadata values of the newest materialization of ``asset`` for ``partition`` ({} when none)."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1)
    for record in records.records:
        if record.asset_materialization:
            return {key: getattr(value, "value", value) for key, value in record.asset_materialization.metadata.items()}
    return {}


def read_run_config(path: Path | None) -> dict[str, Any]:
    """The user's run config YAML (the launchpad's shape), or an empty one; SystemExit naming the file otherwise."""
    import yaml

    if path is None:
        return {}
    if path.is_dir():
        raise SystemExit(f"--config {path} is a folder; give a run config file ({RUN_CONFIG_EXAMPLE})")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SystemExit(f"--config {path} does not exist; give a run config file ({RUN_CONFIG_EXAMPLE})") from None
    except UnicodeDecodeError as exc:
        raise SystemExit(f"--config {path} is not UTF-8 text (byte {exc.start}); a run config is "
                         f"{RUN_CONFIG_EXAMPLE}") from None
    except OSError as exc:
        raise SystemExit(f"--config {path}: cannot read it ({exc.strerror})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SystemExit(f"--config {path}: not valid YAML ({exc})") from None
    if config is None:
        raise SystemExit(f"--config {path} is empty; leave --config out for the defaults, or give "
                         f"{RUN_CONFIG_EXAMPLE}")
    if not isinstance(config, dict):
        raise SystemExit(f"--config {path}: expected a run config mapping (ops:, resources:, ...), "
                         f"got {type(config).__name__}")
    return config


def refused_before_start(run_config: dict, partition: str) -> list[str]:
    """Why the run would fail, found before it starts (fmn_assets.preflight); [] when nothing was found."""
    from fmn_assets.preflight import config_problems, executor_problems
    from fmn_assets.resources import ProjectPaths

    grn = ProjectPaths().checkpoint(partition, 1)
    return config_problems(pipeline_job(), run_config, grn) + executor_problems()


def git_commit_line(root: Path, partition: str) -> str:
    """The command that records this partition's DVC pointers (data.dvc and artifacts/<partition>/*.dvc) in git."""
    pointers = [root / "data.dvc", *sorted((root / "artifacts" / partition).glob("*.dvc"))]
    names = [os.path.relpath(p, root) for p in pointers if p.is_file()]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    message = f"fmn: {partition} run {stamp} (DVC pointers of the data and artifacts)"
    return f"git add {shlex.join(names)} && git commit -m {shlex.quote(message)}"


def open_instance(verbose: bool):
    """The instance at $DAGSTER_HOME; without ``verbose``, with :data:`QUIET_INSTANCE` over its dagster.yaml."""
    import dagster as dg

    if verbose:
        return dg.DagsterInstance.get()
    from dagster._core.instance.ref import InstanceRef  # not re-exported at the top level

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(os.environ["DAGSTER_HOME"], overrides=QUIET_INSTANCE))


def run_once(partition: str, run_config: dict, select: str, log_file: Path, verbose: bool) -> bool:
    """One run of the pipeline job on the instance at $DAGSTER_HOME, shown as it goes; True when it succeeded."""
    import dagster as dg

    from fmn_assets.console import RunFollower, RunView

    asset_keys = None
    if select != "*":
        job_keys = pipeline_job().asset_layer.selected_asset_keys
        try:
            selected = dg.AssetSelection.from_string(select).resolve(pipeline_job().asset_layer.asset_graph)
        except Exception as exc:  # Dagster's selection parser raises its own error types
            raise SystemExit(f"--select {select!r}: not a Dagster asset selection ({exc})") from None
        asset_keys = sorted(selected & job_keys)
        if not asset_keys:
            raise SystemExit(f"--select {select!r} selects no asset of {JOB_NAME}")
    if not verbose:  # the short view replaces Dagster's console log; the log file keeps every event
        run_config = merged({"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}, run_config)
    token = uuid.uuid4().hex
    print(f"[fmn] {JOB_NAME} for partition {partition}"
          + (f", assets {', '.join(k.to_user_string() for k in asset_keys)}" if asset_keys else ""), flush=True)
    with open_instance(verbose) as instance, open(log_file, "a", encoding="utf-8") as log:
        # with --verbose Dagster's console log is the terminal view; the follower still fills the log file
        view = RunView(log, out=open(os.devnull, "w") if verbose else sys.stdout,  # noqa: SIM115 -- process-long
                       interactive=sys.stdout.isatty() and not verbose)
        follower = RunFollower(instance, ("fmn/main", token), view)
        follower.start()
        try:
            result = dg.execute_job(dg.reconstructable(pipeline_job), instance=instance, run_config=run_config,
                                    tags={"dagster/partition": partition, "fmn/main": token},
                                    asset_selection=asset_keys)
        except dg.DagsterInvalidConfigError as exc:  # refused before the run started: say why, without a traceback
            raise SystemExit(f"the run config was refused before the run started:\n{exc}") from None
        finally:
            follower.finish()
        return result.success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partition", default="synthetic", choices=DATASETS, help="the dataset to run")
    parser.add_argument("--config", type=Path, help="run config YAML (see the launchpad for its shape)")
    parser.add_argument("--select", default="*", help="Dagster asset selection")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's console log instead of the "
                                                                   "short view (every event always goes to the log "
                                                                   "file)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="train and evaluate once per training seed, in turn (data fixed); evaluation_metrics "
                             "then shows Table 1 as mean ± std over them")
    args = parser.parse_args(argv)
    if args.seeds and args.select != "*":
        parser.error("--seeds retrains, so it needs the whole graph: leave --select out")
    from fmn_assets.environment import setting_problems

    settings = setting_problems()  # before the definitions read them: one line each, not a traceback
    if settings:
        print("[fmn] refused: " + "\n[fmn] refused: ".join(settings), file=sys.stderr)
        return 2

    root = project_dir()
    home = dagster_home(root)
    # the step processes inherit these: the instance, the project, unbuffered output for the captured logs
    os.environ.update({"DAGSTER_HOME": str(home), "FMN_PROJECT_DIR": str(root), "PYTHONUNBUFFERED": "1"})
    dagster = Path(sys.executable).with_name("dagster")
    log_file = home / "logs" / f"main-{args.partition}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"[fmn] DAGSTER_HOME={home}\n[fmn] full log: {log_file}", flush=True)
    run_config = read_run_config(args.config)
    refused = refused_before_start(run_config, args.partition)
    if refused:
        print("[fmn] refused before the run started (nothing was run or changed):\n"
              + "\n".join(f"  {problem}" for problem in refused), file=sys.stderr)
        return 2
    succeeded = True
    for seed in args.seeds or [None]:
        if seed is not None:
            print(f"\n[fmn] training seed {seed}", flush=True)
        succeeded = run_once(args.partition, run_config if seed is None else with_seed(run_config, seed),
                             args.select, log_file, args.verbose)
        if not succeeded:
            break
    code = 0 if succeeded else 1

    artifacts = root / "artifacts" / args.partition
    if code != 0:
        print(f"\n[fmn] the run failed; the full log is {log_file}, and the Dagster UI "
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
    deployed = artifacts / "deployed"
    print(f"trained model card: {artifacts / 'MODEL_CARD.md'}")
    decision = latest_metadata(home, args.partition, "deployed_model")
    if decision:
        print(f"\ndeployed model: the candidate was {decision['decision']}: {decision['reason']}\n"
              f"  {deployed} (fmn.pt, fmn.onnx, MODEL_CARD.md, gallery descriptors); every decision: "
              f"{artifacts / 'promotions.jsonl'}\n"
              f"  search with it: {Path(sys.executable).with_name('fmn')} search --gallery "
              f"{deployed / 'gallery_descriptors.parquet'} --model {deployed / 'fmn.onnx'} QUERY_IMAGE --out "
              "result.png")
    print(f"artifacts (DVC-tracked: *.dvc next to them): {artifacts}")
    print(f"\nrecord this run's DVC pointers in git (in {root}; each step already pushed the data and artifacts to "
          f"the DVC remote, or says dvc_pushed: false in its metadata):\n  {git_commit_line(root, args.partition)}")
    print(f"\nbrowse the graph, this run and its metadata:\n  DAGSTER_HOME={home} {dagster} dev -w "
          f"{root / 'workspace.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
