"""Retrieval stage: descriptor tables (section 3.4) and re-ranked evaluation (3.5, 4.2, Table 1)."""

import hashlib
import itertools
import json
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from fmn_assets.assets.data import OWNERS, dataset_splits, split_table
from fmn_assets.assets.training import GPU_TAGS, fmn_checkpoint
from fmn_assets.automation import WHEN_UPSTREAM_CHANGED
from fmn_assets.code_versions import DESCRIPTOR_CODE, EVALUATION_CODE
from fmn_assets.configs import DescriptorConfig, EvaluationConfig
from fmn_assets.failures import bad_input_fails_the_step
from fmn_assets.metadata import image_markdown, records_table, table_schema
from fmn_assets.partitions import dataset_partitions
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.engine import load_checkpoint, model_from_checkpoint
from fmn_core.engine.progress import read_metrics_log
from fmn_core.retrieval import DescriptorTable, extract_descriptors
from fmn_core.retrieval.results import evaluate_descriptors, results_markdown
from fmn_core.retrieval.seed_study import recipe_fingerprint, seed_study_markdown, seed_study_statistics
from fmn_core.utils.atomic import atomic_write_text
from fmn_core.utils.errors import FMNInputError

if TYPE_CHECKING:  # fmn_core.viz is imported where the pictures are drawn: matplotlib costs every step process 0.4 s
    pass

DESCRIPTOR_KIND = {"kinds": {"pytorch", "parquet", "dvc"}, "owners": OWNERS, "group_name": "retrieval",
                   "deps": [fmn_checkpoint, dataset_splits], "code_version": DESCRIPTOR_CODE,
                   "automation_condition": WHEN_UPSTREAM_CHANGED}


@dg.multi_asset(
    specs=[dg.AssetSpec("query_descriptors", description="GRN, LAN and FMN (eq. 6) descriptors of the query images: "
                                                         "artifacts/{dataset}/query_descriptors.parquet",
                        tags={"paper_section": "3.4"}, **DESCRIPTOR_KIND),
           dg.AssetSpec("gallery_descriptors", description="The same for the gallery images: "
                                                           "artifacts/{dataset}/gallery_descriptors.parquet",
                        tags={"paper_section": "3.4"}, **DESCRIPTOR_KIND)],
    partitions_def=dataset_partitions, pool="gpu", op_tags=GPU_TAGS)
def descriptor_tables(context: dg.AssetExecutionContext, config: DescriptorConfig, paths: ProjectPaths,
                      dvc: DVCResource):
    dataset = context.partition_key
    with paths.exclusive(dataset, "descriptor_tables"):
        with bad_input_fails_the_step(f"descriptor extraction for '{dataset}' failed"):
            descriptors, rate = extract_descriptors(paths.checkpoint(dataset, 2), split_table(paths, dataset),
                                                    batch_size=config.batch_size, device=config.device,
                                                    flip=config.flip, progress=False)
        for split in ("query", "gallery"):
            part = descriptors.subset(split)
            path = part.save(paths.descriptors(dataset, split))
            versioned = dvc.track(path)
            widths = {kind: int(matrix.shape[1]) for kind, matrix in part.features.items()}
            meta_schema = table_schema(part.meta)
            schema = dg.TableSchema(columns=[*meta_schema.columns, *(  # Parquet's own type for a descriptor column
                dg.TableColumn(name=k, type=f"fixed_size_list<float32, {w}>", description=f"{w}-d {k} descriptor")
                for k, w in widths.items())])
            yield dg.MaterializeResult(asset_key=f"{split}_descriptors", data_version=dg.DataVersion(versioned.md5),
                                       metadata={
                                           "dagster/row_count": len(part), "dagster/column_schema": schema,
                                           "path": dg.MetadataValue.path(str(path)),
                                           "identities": int(part.meta.pid.nunique()),
                                           **{f"{k}_dim": w for k, w in widths.items()}, "alpha": part.alpha,
                                           "flip_averaged": config.flip, "images_per_second": round(rate, 1),
                                           **versioned.metadata()})


def _descriptor_check(split: str) -> dg.AssetChecksDefinition:
    """A blocking check that a descriptor table loads and that no row is non-finite; zero rows only warn."""

    @dg.asset_check(asset=f"{split}_descriptors", name=f"{split}_descriptors_usable", blocking=True,
                    partitions_def=dataset_partitions,
                    description=f"{split}_descriptors.parquet loads, and no descriptor is NaN / infinite (an error, "
                                "blocks evaluation) or all zero (a warning: such an image ranks the gallery at "
                                "random, usually an input too small for the backbone).")
    def check(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
        path = paths.descriptors(context.partition_key, split)
        try:
            table = DescriptorTable.load(path)
        except (FMNInputError, ValueError, OSError) as exc:  # ValueError: pyarrow's; OSError: an unreadable file
            return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
        counts = table.degenerate_rows()
        non_finite = sum(c["non_finite"] for c in counts.values())
        zero = sum(c["zero"] for c in counts.values())
        severity = dg.AssetCheckSeverity.ERROR if non_finite or not len(table) else dg.AssetCheckSeverity.WARN
        return dg.AssetCheckResult(passed=not (non_finite or zero or not len(table)), severity=severity, metadata={
            "rows": len(table), "non_finite_rows": non_finite, "zero_rows": zero,
            "per_kind": dg.MetadataValue.json(counts), "examples": ", ".join(table.degenerate_paths()) or "none"})

    return check


query_descriptors_usable = _descriptor_check("query")
gallery_descriptors_usable = _descriptor_check("gallery")


def _seed_study(context: dg.AssetExecutionContext, fingerprint: str, seed: int,
                scores: dict[str, dict[str, float]]) -> dict[int, dict[str, dict[str, float]]]:
    """This run plus the latest earlier materialization of every other seed with the same recipe and images.

    Read from the instance's own event log, so a study grows as runs with other
    seeds are materialized (``python3 run.py main --seeds 0 1 2``).
    """
    per_seed = {seed: scores}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[context.partition_key]), limit=500)
    for record in records.records:  # newest first
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if getattr(metadata.get("recipe_fingerprint"), "value", None) != fingerprint:
            continue
        earlier_seed, earlier = metadata.get("training_seed"), metadata.get("scores")
        if earlier_seed is not None and earlier is not None:
            per_seed.setdefault(int(earlier_seed.value), earlier.value)
    return dict(sorted(per_seed.items()))


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation", owners=OWNERS,
          deps=["query_descriptors", "gallery_descriptors", fmn_checkpoint], kinds={"numpy", "matplotlib"},
          code_version=EVALUATION_CODE, automation_condition=WHEN_UPSTREAM_CHANGED,
          tags={"paper_section": "4.2", "paper_table": "1"},
          description="Rank-1/5/10/20, mAP and mINP of the GRN, LAN and FMN descriptors and of FMN + k-reciprocal "
                      "re-ranking (Table 1), with the CMC curves, Figure-4 ranked lists, mask and activation heat "
                      "maps and training curves: artifacts/{dataset}/metrics.json and pictures/.")
def evaluation_metrics(context: dg.AssetExecutionContext, config: EvaluationConfig,
                       paths: ProjectPaths) -> dg.MaterializeResult:
    dataset = context.partition_key
    out = paths.artifacts(dataset)
    with paths.exclusive(dataset, "evaluation_metrics"):
        with bad_input_fails_the_step(f"evaluation of '{dataset}' cannot start"):
            query = DescriptorTable.load(paths.descriptors(dataset, "query"))
            gallery = DescriptorTable.load(paths.descriptors(dataset, "gallery"))
            state = load_checkpoint(paths.checkpoint(dataset, 2))
            model = model_from_checkpoint(state)
        both = DescriptorTable(pd.concat([query.meta, gallery.meta]),
                               {k: np.concatenate([query.features[k], gallery.features[k]]) for k in query.features},
                               query.alpha)
        results = evaluate_descriptors(both, rerank=config.rerank, k1=config.k1, k2=config.k2,
                                       lambda_value=config.lambda_value, max_rank=config.max_rank)
        table = results_markdown(results)
        summary = {name: {**r.summary(), "valid_queries": r.num_valid, "skipped_queries": r.num_skipped}
                   for name, r in results.items()}
        atomic_write_text(paths.metrics(dataset), json.dumps(summary, indent=2))
        atomic_write_text(out / "metrics.md", f"# {dataset}\n\n{table}\n")

        from fmn_core.viz import plot_cmc, plot_heatmaps, plot_ranked_lists, plot_training_curves
        from fmn_core.viz.ranked_lists import figure4_rows

        pictures = out / "pictures"
        rows = figure4_rows(query, gallery, config.ranked_list_queries)
        drawn = {
            "cmc": plot_cmc(results, pictures / "cmc.png", title=f"CMC on {dataset}"),
            "ranked_lists": plot_ranked_lists(rows, pictures / "ranked_lists.png",
                                              title=f"{dataset}: GRN vs FMN top-10 (green: true match)"),
            "heatmaps": plot_heatmaps(model, [r.query_path for r in rows[::2]][: config.heatmap_images] or
                                      query.meta.path[: config.heatmap_images].tolist(), pictures / "heatmaps.png",
                                      title=f"{dataset}: FMN mask and GRN / LAN activations"),
            "training_curves": plot_training_curves([read_metrics_log(f) for f in (paths.metrics_log(dataset, 1),
                                                                                   paths.metrics_log(dataset, 2))
                                                     if f.is_file()], pictures / "training.png"),
        }
    fmn = results["FMN"].summary()
    train_config = state["config"]
    seed = int(train_config.get("seed", 0))
    fingerprint = recipe_fingerprint(train_config, both.meta)
    scores = {name: {k: round(float(r.summary()[k]), 4) for k in ("rank1", "mAP")} for name, r in results.items()}
    per_seed = _seed_study(context, fingerprint, seed, scores)
    study = seed_study_statistics(per_seed)
    metadata = {"results": dg.MetadataValue.md(table),
                "table_1": records_table([{"method": name, **{k: round(v, 2) for k, v in r.summary().items()},
                                           "skipped_queries": r.num_skipped} for name, r in results.items()],
                                         first_column="method"),
                "seed_study": dg.MetadataValue.md(seed_study_markdown(per_seed)), "seeds": len(per_seed),
                **study, "training_seed": seed, "recipe_fingerprint": fingerprint,
                "scores": dg.MetadataValue.json(scores),
                "metrics_path": dg.MetadataValue.path(str(paths.metrics(dataset))),
                "pictures": dg.MetadataValue.path(str(pictures)),
                "fmn_rank1": round(fmn["rank1"], 2), "fmn_mAP": round(fmn["mAP"], 2),
                "grn_rank1": round(results["GRN"].summary()["rank1"], 2),
                "queries": len(query), "gallery": len(gallery), "skipped_queries": results["FMN"].num_skipped}
    if "FMN + re-ranking" in results:
        reranked = results["FMN + re-ranking"].summary()
        metadata.update(reranked_rank1=round(reranked["rank1"], 2), reranked_mAP=round(reranked["mAP"], 2))
    for name, path in drawn.items():
        metadata[f"{name}_plot"] = image_markdown(path, name.replace("_", " "))
    version = hashlib.md5(paths.metrics(dataset).read_bytes()).hexdigest()
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


@dg.asset_check(asset=evaluation_metrics, partitions_def=dataset_partitions,
                description="Every rate lies in [0, 100], CMC never decreases, and at least one query was evaluated.")
def metrics_in_range(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    file = paths.metrics(context.partition_key)
    if not file.is_file():
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{file} does not exist"})
    metrics = json.loads(file.read_text())
    problems = []
    for name, row in metrics.items():
        rates = [row[k] for k in ("rank1", "rank5", "rank10", "rank20")]
        if not all(0 <= v <= 100 for v in [*rates, row["mAP"], row["mINP"]]):
            problems.append(f"{name}: a rate outside [0, 100]")
        if any(b < a for a, b in itertools.pairwise(rates)):
            problems.append(f"{name}: CMC decreases")
        if row["valid_queries"] < 1:
            problems.append(f"{name}: no query evaluated")
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": "; ".join(problems) or "none",
                                                              "rows": ", ".join(metrics)})
