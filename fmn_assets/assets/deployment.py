"""Deployment stage: the ONNX export (checked against PyTorch) and the model card a reviewer reads first."""

import platform
import time

import dagster as dg

from fmn_assets.assets.data import OWNERS, dataset_splits, split_table
from fmn_assets.assets.retrieval import evaluation_metrics
from fmn_assets.assets.training import fmn_checkpoint
from fmn_assets.automation import WHEN_UPSTREAM_CHANGED
from fmn_assets.code_versions import EXPORT_CODE, MODEL_CARD_CODE
from fmn_assets.configs import ModelCardConfig, OnnxExportConfig
from fmn_assets.failures import bad_input_fails_the_step
from fmn_assets.partitions import dataset_partitions
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.engine import load_checkpoint
from fmn_core.engine.checkpoint import weights_fingerprint
from fmn_core.export import OnnxDescriptorMetadata, export_onnx, parity_images
from fmn_core.export.model_card import DataLineage, pipeline_commands, render_model_card, reproduce_commands
from fmn_core.retrieval.results import read_metrics
from fmn_core.utils.atomic import atomic_write_text
from fmn_core.utils.machine import machine_description


@dg.asset(partitions_def=dataset_partitions, group_name="deployment", owners=OWNERS,
          deps=[fmn_checkpoint, dataset_splits], kinds={"onnx", "dvc"}, code_version=EXPORT_CODE,
          automation_condition=WHEN_UPSTREAM_CHANGED, tags={"paper_section": "3.4"},
          description="The descriptor model (normalised images in; FMN eq. 6, GRN and LAN descriptors out) as ONNX: "
                      "artifacts/{dataset}/fmn.onnx, written only after onnxruntime matched PyTorch within the "
                      "tolerance and ranked the dataset's own query / gallery images identically; versioned by DVC.")
def onnx_model(context: dg.AssetExecutionContext, config: OnnxExportConfig, paths: ProjectPaths,
               dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    # No partition lock: this step runs beside descriptor_tables in the same run (both need only fmn.pt), and it
    # has no partial state: fmn.onnx is written atomically, so a concurrent export can only replace it whole.
    images = parity_images(split_table(paths, dataset), config.parity_queries, config.parity_gallery)
    start = time.perf_counter()
    with bad_input_fails_the_step(f"ONNX export of '{dataset}' failed, nothing was written"):
        result = export_onnx(paths.checkpoint(dataset, 2), paths.onnx_model(dataset), opset=config.opset,
                             dynamic_batch=config.dynamic_batch, outputs=config.outputs,
                             tolerance=config.tolerance, images=images,
                             queries=min(config.parity_queries, len(images) - 1))
    seconds = time.perf_counter() - start
    versioned = dvc.track(result.path)
    import onnxruntime  # imported here: only the export and its checks need it

    parity = result.parity
    return dg.MaterializeResult(data_version=dg.DataVersion(versioned.md5), metadata={
        "path": dg.MetadataValue.path(str(result.path)), "size_mb": round(result.size_bytes / 1e6, 2),
        "opset": config.opset, "batch": "dynamic" if config.dynamic_batch else 1,
        "outputs": ", ".join(result.metadata.outputs), "model_hash": result.metadata.model_hash,
        **{f"parity_max_abs_{name}": float(f"{value:.3g}") for name, value in parity.max_abs.items()},
        "parity_tolerance": parity.tolerance, "parity_images": parity.images,
        "rankings_identical": f"{parity.rankings_identical}/{parity.queries}",
        "export_seconds": round(seconds, 1), "onnxruntime": onnxruntime.__version__, **versioned.metadata()})


@dg.asset_check(asset=onnx_model, blocking=True, partitions_def=dataset_partitions,
                description="fmn.onnx loads in onnxruntime, says it was exported by fmn export, and was exported "
                            "from the current fmn.pt (its model hash equals the checkpoint's): a stale export of "
                            "an older checkpoint is refused.")
def onnx_model_matches_checkpoint(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    import onnxruntime as ort

    dataset = context.partition_key
    try:
        session = ort.InferenceSession(str(paths.onnx_model(dataset)), providers=["CPUExecutionProvider"])
        meta = OnnxDescriptorMetadata.from_props(session.get_modelmeta().custom_metadata_map)
        checkpoint_hash = weights_fingerprint(load_checkpoint(paths.checkpoint(dataset, 2))["model"])
    except Exception as exc:  # onnxruntime's load errors have their own types
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{type(exc).__name__}: {exc}"})
    return dg.AssetCheckResult(passed=meta.model_hash == checkpoint_hash, metadata={
        "onnx_model_hash": meta.model_hash, "checkpoint_model_hash": checkpoint_hash,
        "parity_max_abs": dg.MetadataValue.json(meta.parity.get("max_abs", {}))})


def _latest(context: dg.AssetExecutionContext, key: str, before_storage_id: int | None = None):
    """The newest materialization of ``key`` for this partition (at or before a storage id), or None."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[context.partition_key],
                              before_storage_id=None if before_storage_id is None else before_storage_id + 1),
        limit=1).records
    return records[0] if records else None


def _value(metadata: dict, key: str, default=None):
    entry = metadata.get(key)
    return default if entry is None else getattr(entry, "value", entry)


def _splits_used(context: dg.AssetExecutionContext):
    """The dataset_splits materialization the current FMN was trained from (Dagster's provenance tags)."""
    trained = _latest(context, "fmn_checkpoint")
    pointer = (trained.asset_materialization.tags or {}).get("dagster/input_event_pointer/dataset_splits") \
        if trained and trained.asset_materialization else None
    return _latest(context, "dataset_splits", int(pointer) if pointer else None)


@dg.asset(partitions_def=dataset_partitions, group_name="deployment", owners=OWNERS,
          deps=[fmn_checkpoint, evaluation_metrics, onnx_model, dataset_splits], kinds={"markdown"},
          code_version=MODEL_CARD_CODE, automation_condition=WHEN_UPSTREAM_CHANGED,
          description="What a reviewer reads first: the paper and recipe, the data lineage (dataset, DVC md5 of the "
                      "data, split counts), Table 1 of this run and over seeds, the machine, the mask diagnostics, "
                      "the ONNX parity, intended use and limits, and the commands that reproduce it. Written to "
                      "artifacts/{dataset}/MODEL_CARD.md next to the checkpoint, and shown here.")
def model_card(context: dg.AssetExecutionContext, config: ModelCardConfig, paths: ProjectPaths,
               dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    with paths.exclusive(dataset, "model_card"):
        with bad_input_fails_the_step(f"the model card of '{dataset}' needs the trained FMN and its metrics"):
            state = load_checkpoint(paths.checkpoint(dataset, 2))
            metrics = read_metrics(paths.metrics(dataset))
        splits = _splits_used(context)
        split_meta = dict(splits.asset_materialization.metadata) if splits else {}
        counts = {f"{split} {what}": _value(split_meta, f"{split}_{what}") for split in ("train", "query", "gallery")
                  for what in ("images", "identities") if _value(split_meta, f"{split}_{what}") is not None}
        lineage = DataLineage(dataset, data_md5=_value(split_meta, "data_dvc_md5") or dvc.tracked_md5(paths.data_root),
                              dataset_version=_value(split_meta, "data_version"),
                              root=str(_value(split_meta, "dataset_root", "")) or None, counts=counts)
        trained = _latest(context, "fmn_checkpoint")
        grounding = _value(dict(trained.asset_materialization.metadata), "mask_grounding") if trained else None
        evaluated = _latest(context, "evaluation_metrics")
        study = _value(dict(evaluated.asset_materialization.metadata), "seed_study") if evaluated else None
        onnx_file = paths.onnx_model(dataset)
        onnx = None
        if onnx_file.is_file():
            import onnx as onnx_lib

            props = {p.key: p.value for p in onnx_lib.load(str(onnx_file), load_external_data=False).metadata_props}
            meta = OnnxDescriptorMetadata.from_props(props, str(onnx_file))
            onnx = {"path": onnx_file.name, "outputs": meta.outputs, "parity": meta.parity}
        git_commit = _value(split_meta, "git_commit")
        card = render_model_card(
            checkpoint=state, model_hash=weights_fingerprint(state["model"]), lineage=lineage, metrics=metrics,
            seed_study=study, onnx=onnx, mask_grounding=grounding,
            pipeline_command=pipeline_commands(dataset, git_commit if git_commit != "none" else None),
            reproduce=reproduce_commands(dataset, state["config"], git_commit if git_commit != "none" else None),
            artifacts={"checkpoint": f"artifacts/{dataset}/fmn.pt", "ONNX": f"artifacts/{dataset}/fmn.onnx",
                       "descriptors": f"artifacts/{dataset}/{{query,gallery}}_descriptors.parquet",
                       "metrics": f"artifacts/{dataset}/metrics.json"})
        if config.contact:
            card += f"\n## Contact\n\n{config.contact}\n"
        written_on = machine_description(with_threads=False)
        card += f"\n---\nCard written on {written_on} (Python {platform.python_version()}).\n"
        path = atomic_write_text(paths.model_card(dataset), card)
        versioned = dvc.track(path)
    return dg.MaterializeResult(data_version=dg.DataVersion(versioned.md5), metadata={
        "model_card": dg.MetadataValue.md(card), "path": dg.MetadataValue.path(str(path)),
        "data_dvc_md5": lineage.data_md5 or "unknown", "dataset_version": lineage.dataset_version or "unknown",
        **versioned.metadata()})
