"""Training stage: Algorithm 1's two checkpoints, and checks that they load and make sense."""

import sys
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import torch
from dagster._core.errors import DagsterPipesExecutionError  # not re-exported at the top level

from fmn_assets.assets.data import OWNERS, dataset_splits, load_report, split_table
from fmn_assets.automation import WHEN_UPSTREAM_CHANGED, training_condition
from fmn_assets.code_versions import TRAINING_CODE
from fmn_assets.configs import DistributedTraining, FMNTrainingConfig, GRNTrainingConfig
from fmn_assets.environment import RETRY_DELAY_S
from fmn_assets.execution.celery_queues import GPU_QUEUE, QUEUE_TAG
from fmn_assets.execution.k8s import gpu_step_k8s_config
from fmn_assets.execution.launchers import describe, torchrun_command
from fmn_assets.failures import bad_input_fails_the_step
from fmn_assets.metadata import history_markdown, records_table
from fmn_assets.partitions import dataset_partitions
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data import num_train_identities
from fmn_core.engine import (
    TrainConfig,
    TrainResult,
    load_checkpoint,
    train_stage1,
    train_stage2,
)
from fmn_core.engine.progress import read_metrics_log
from fmn_core.engine.recipes import save_config
from fmn_core.models.mixing import mask_collapse_reasons
from fmn_core.utils.errors import FMNInputError

#: One GPU per GPU step on Kubernetes, plus the GPU-node toleration and a RAM /dev/shm (dagster-k8s reads this tag;
#: local runs ignore it). `processes: N` needs N GPUs: fmn_assets.execution.k8s.multi_gpu_run_config sets both per run.
#: With FMN_EXECUTOR=celery the same steps go to the Celery queue the GPU hosts serve.
GPU_TAGS = {"dagster-k8s/config": gpu_step_k8s_config(gpus=1), QUEUE_TAG: GPU_QUEUE}
#: A failed step (a lost node, a preempted GPU) is retried; it resumes from its partial checkpoint. The first retry
#: waits FMN_RETRY_DELAY_S seconds (default 15), doubling after that.
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=RETRY_DELAY_S.value(),
                                backoff=dg.Backoff.EXPONENTIAL)
TRAINING = dict(partitions_def=dataset_partitions, group_name="training", owners=OWNERS, kinds={"pytorch", "dvc"},
                pool="gpu", retry_policy=TRAINING_RETRY, op_tags=GPU_TAGS, code_version=TRAINING_CODE)


def _torchrun(context: dg.AssetExecutionContext, stage: int, config: TrainConfig, splits: Path, out: Path,
              where: DistributedTraining, grn: Path | None) -> list[dict]:
    """Training under torchrun (fmn_assets.execution.launchers) on this host or across nodes, reported through Pipes.

    Rank 0 of ``fmn_assets.execution.torchrun_entry`` logs every epoch into this run's event log and reports which host
    each rank ran on (returned); the processes' own output goes to the step's captured stdout / stderr. Across
    nodes, rank 0 may run elsewhere: the Pipes context travels in the environment (srun and the launchers pass it
    on) and its messages in a file on the shared artifact folder.
    """
    out.mkdir(parents=True, exist_ok=True)
    recipe = save_config(config, out / f".stage{stage}.torchrun.config.yaml")  # the run's configuration, as a file
    entry = ["-m", "fmn_assets.execution.torchrun_entry", "--stage", str(stage), "--splits", str(splits),
             "--config", str(recipe), "--out", str(out), *(["--grn", str(grn)] if grn else [])]
    with bad_input_fails_the_step(f"cannot launch stage {stage} training"):
        try:
            command = torchrun_command(Path(sys.executable).with_name("torchrun"), entry, where.processes,
                                       where.nodes, where.launcher, where.launch_command, where.rendezvous,
                                       rendezvous_id=f"{context.run_id[:8]}-stage{stage}")
        except ValueError as exc:
            raise FMNInputError(str(exc)) from None
    shape = f"{where.nodes} node(s) x {where.processes} process(es)"
    context.log.info(f"stage {stage} on {shape}: {describe(command)}")
    client = dg.PipesSubprocessClient() if where.nodes == 1 else dg.PipesSubprocessClient(
        context_injector=dg.PipesEnvContextInjector(),
        message_reader=dg.PipesFileMessageReader(str(out / f".stage{stage}.pipes-messages.jsonl")))
    metrics = out / f"stage{stage}_metrics.jsonl"
    before = _file_signature(metrics)  # a previous run's log must not pass for this one's
    try:
        invocation = client.run(context=context, command=command)
    except DagsterPipesExecutionError as exc:
        raise dg.Failure(description=f"torchrun training (stage {stage}, {shape}) failed: {exc}. "
                                     "The step's stderr (Logs tab) holds each process's traceback.") from exc
    finally:
        recipe.unlink(missing_ok=True)
    if _file_signature(metrics) in (None, before):
        raise dg.Failure(allow_retries=False, description=(
            f"no stage {stage} training ran: `{describe(command)}` exited 0 but wrote no {metrics}. "
            + ("launch_command must start its argument (the torchrun command) once on each node, e.g. [pdsh, -w, "
               "host1,host2]; check it by running it with `hostname` as the argument" if where.launcher == "command"
               else "The step's stdout / stderr (Logs tab) show what the launcher did")))
    reported = [message for message in invocation.get_custom_messages() if isinstance(message, dict)]
    return reported[-1].get("ranks", []) if reported else []


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    """Inode, modification time and size: any rewrite of the file changes it (written atomically, a new inode)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _result_from_files(stage: int, paths: ProjectPaths, dataset: str, ranks: list[dict]) -> TrainResult:
    history = read_metrics_log(paths.metrics_log(dataset, stage))
    seconds = sum(row["seconds"] for row in history)
    return TrainResult(checkpoint=paths.checkpoint(dataset, stage), stage=stage, epochs=len(history),
                       history=history, wall_seconds=seconds,
                       images_per_second=sum(r["images"] for r in history) / seconds if seconds else 0.0,
                       device="torchrun", ranks=ranks)


def _metadata(result: TrainResult, versioned) -> dict:
    final = result.final
    return {
        "path": dg.MetadataValue.path(str(result.checkpoint)),
        "size_mb": round(result.checkpoint.stat().st_size / 1e6, 1),
        **versioned.metadata(),
        "epochs": result.epochs,
        "resumed_from_epoch": result.resumed_from_epoch,
        "wall_seconds": round(result.wall_seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "device": result.device,
        **({"cpu_threads": result.threads} if result.threads else {}),
        "final_loss": float(final.get("loss", float("nan"))),
        "final_train_accuracy": float(final.get("acc", float("nan"))),
        "history": history_markdown(result.history),
        "history_table": records_table([{k: v for k, v in row.items() if k != "stage"} for row in result.history],
                                       first_column="epoch"),
        **_mask_metadata(result.diagnostics),
        **_rank_metadata(result.ranks),
    }


def _rank_metadata(ranks: list[dict]) -> dict:
    """Which host each torchrun rank ran on, and which of them wrote the checkpoint (rank 0 alone should)."""
    if not ranks:
        return {}
    return {"ranks": records_table(ranks, first_column="rank"),
            "rank_hosts": ", ".join(f"{r['rank']}: {r['host']}" for r in ranks),
            "checkpoint_written_by_ranks": ", ".join(str(r["rank"]) for r in ranks if r.get("wrote_checkpoint"))}


def _mask_metadata(diagnostics: dict) -> dict:
    """The Mixing Network's health at a glance (stage 2 only): a collapsed mask shows without a picture."""
    if not diagnostics:
        return {}
    return {f"mask_{name}": round(float(value), 4) if isinstance(value, float) else value
            for name, value in diagnostics.items()}


def _train(context: dg.AssetExecutionContext, stage: int, make_config: Callable[[], TrainConfig],
           where: DistributedTraining, paths: ProjectPaths, grn: Path | None = None) -> TrainResult:
    """Train one stage; ``make_config`` builds the configuration, so a bad recipe fails the step like bad data."""
    dataset = context.partition_key
    out = paths.artifacts(dataset)
    table = split_table(paths, dataset)
    with bad_input_fails_the_step(f"stage {stage} training on '{dataset}' failed"):
        config = make_config().require_epochs(stage, "the step")
        launch_problems = where.launch_problems()
        if launch_problems:
            raise FMNInputError("; ".join(launch_problems))
        processes = where.processes
        if processes > 1 and config.device != "cpu" and torch.cuda.is_available() \
                and torch.cuda.device_count() < processes:
            raise FMNInputError(f"processes: {processes} needs {processes} GPUs, but this step sees "
                                f"{torch.cuda.device_count()}; on Kubernetes request them with "
                                "fmn_assets.execution.k8s.multi_gpu_run_config (deploy/k8s/README.md), or set "
                                "overrides: {device: cpu}")
        if processes > 1 or where.nodes > 1:
            ranks = _torchrun(context, stage, config, paths.splits(dataset), out, where, grn)
            return _result_from_files(stage, paths, dataset, ranks)

        total = config.stage(stage).epochs

        def log_epoch(stage: int, epoch: int, row: dict) -> None:
            context.log.info(f"stage {stage} epoch {epoch}/{total}: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                if k not in ("stage", "epoch")))

        if stage == 1:
            return train_stage1(table, config, out, progress=False, on_epoch_end=log_epoch)
        return train_stage2(table, config, grn, out, progress=False, on_epoch_end=log_epoch)


@dg.asset(**TRAINING, deps=[dataset_splits], automation_condition=training_condition(),
          tags={"paper_section": "3.3", "algorithm_1": "lines-1-2"},
          description="The GRN fine-tuned on identity classification (eq. 4): artifacts/{dataset}/grn.pt, versioned "
                      "and pushed by DVC. A retried or restarted run resumes from grn.partial.pt.")
def grn_checkpoint(context: dg.AssetExecutionContext, config: GRNTrainingConfig, paths: ProjectPaths,
                   dvc: DVCResource) -> dg.MaterializeResult:
    with paths.exclusive(context.partition_key, "grn_checkpoint"):
        result = _train(context, 1, config.train_config, config, paths)
        versioned = dvc.track(result.checkpoint)
    return dg.MaterializeResult(data_version=dg.DataVersion(versioned.md5), metadata=_metadata(result, versioned))


@dg.asset(**TRAINING, deps=[grn_checkpoint, dataset_splits], automation_condition=WHEN_UPSTREAM_CHANGED,
          tags={"paper_section": "3.3", "algorithm_1": "line-3"},
          description="The full FMN: the frozen GRN plus the Mixing Network and LAN trained with cross-entropy and "
                      "the ranking loss (eq. 4 + 5): artifacts/{dataset}/fmn.pt, versioned and pushed by DVC.")
def fmn_checkpoint(context: dg.AssetExecutionContext, config: FMNTrainingConfig, paths: ProjectPaths,
                   dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    grn = paths.checkpoint(dataset, 1)
    with paths.exclusive(dataset, "fmn_checkpoint"):
        with bad_input_fails_the_step(f"cannot use the GRN checkpoint of '{dataset}'",
                                      "Materialize grn_checkpoint again."):
            grn_config = TrainConfig.from_dict(load_checkpoint(grn)["config"])
        result = _train(context, 2, lambda: config.train_config(grn_config), config, paths, grn)
        versioned = dvc.track(result.checkpoint)
        grounding = _mask_grounding(context, paths, result) if dataset == "synthetic" else {}
    return dg.MaterializeResult(data_version=dg.DataVersion(versioned.md5),
                                metadata={**_metadata(result, versioned), **grounding})


#: synthetic test images the mask's grounding is measured on (a few seconds on a CPU)
GROUNDING_IMAGES = 600


def _mask_grounding(context: dg.AssetExecutionContext, paths: ProjectPaths, result: TrainResult) -> dict:
    """Where the synthetic model's mask looks (fmn_core.analysis.mask_grounding), as asset metadata."""
    from fmn_core.analysis.mask_grounding import grounding_markdown, grounding_of_checkpoint

    root = load_report(paths, "synthetic").get("root") or str(paths.dataset_root("synthetic"))
    measured = grounding_of_checkpoint(str(result.checkpoint), root, max_images=GROUNDING_IMAGES)
    if measured is None:  # a constant mask looks nowhere
        return {}
    learned, untrained = measured
    context.log.info("mask grounding (1 = no preference): " + ", ".join(
        f"{detail} {ratio:.2f}" for detail, ratio in learned.ratio.items()))
    return {"mask_grounding": dg.MetadataValue.md(grounding_markdown(learned, untrained)),
            **{f"mask_grounding_{detail}": round(ratio, 4) for detail, ratio in learned.ratio.items()
               if ratio == ratio}}


def _checkpoint_check(paths: ProjectPaths, dataset: str, stage: int) -> dg.AssetCheckResult:
    path = paths.checkpoint(dataset, stage)
    try:
        state = load_checkpoint(path)
    except FMNInputError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    expected = num_train_identities(split_table(paths, dataset))
    non_finite = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    problems = []
    if state["stage"] != stage or not state["complete"]:
        problems.append(f"stage {state['stage']} (complete={state['complete']}), expected a finished stage {stage}")
    if state["num_classes"] != expected:
        problems.append(f"{state['num_classes']} identities, but the training split has {expected}")
    if non_finite:
        problems.append(f"{len(non_finite)} tensors hold NaN or infinity (e.g. {non_finite[:3]})")
    return dg.AssetCheckResult(passed=not problems, metadata={
        "problems": "; ".join(problems) or "none", "identities": state["num_classes"], "epoch": state["epoch"],
        "tensors": len(state["model"]), "torch": state.get("versions", {}).get("torch", "?")})


@dg.asset_check(asset=grn_checkpoint, blocking=True, partitions_def=dataset_partitions,
                description="grn.pt loads (weights only), is a finished stage-1 checkpoint, has finite weights and "
                            "one class per training identity.")
def grn_checkpoint_loads(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _checkpoint_check(paths, context.partition_key, 1)


@dg.asset_check(asset=fmn_checkpoint, blocking=True, partitions_def=dataset_partitions,
                description="fmn.pt loads (weights only), is a finished stage-2 checkpoint, has finite weights and "
                            "one class per training identity.")
def fmn_checkpoint_loads(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    return _checkpoint_check(paths, context.partition_key, 2)



@dg.asset_check(asset=fmn_checkpoint, blocking=False, partitions_def=dataset_partitions,
                description="The Mixing Network's mask is alive: it changes from image to image, and most positions "
                            "are not stuck at a bound where no gradient flows. A warning, not a stop: a collapsed "
                            "mask still gives a working (if MN-less) model.")
def fmn_mask_alive(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    path = paths.checkpoint(context.partition_key, 2)
    try:
        state = load_checkpoint(path)
    except FMNInputError as exc:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"error": str(exc)})
    diagnostics = state.get("diagnostics", {}).get("mask")
    if state["config"].get("mask_mode") == "constant":
        return dg.AssetCheckResult(passed=True, metadata={"note": "constant mask (the control without the MN)"})
    if not diagnostics:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"error": f"{path} holds no mask diagnostics: it was trained by an older "
                                                      "version; materialize fmn_checkpoint again"})
    reasons = mask_collapse_reasons(diagnostics)
    return dg.AssetCheckResult(passed=not reasons, severity=dg.AssetCheckSeverity.WARN, metadata={
        "collapsed_because": "; ".join(reasons) or "not collapsed", **_mask_metadata(diagnostics)})
