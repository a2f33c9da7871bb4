"""Retrieval stage: descriptor tables (section 3.4) and re-ranked evaluation (3.5, 4.2, Table 1)."""

import hashlib
import itertools
import json

import dagster as dg
import numpy as np
import pandas as pd

from fmn_assets.assets.data import OWNERS, dataset_splits, split_table
from fmn_assets.assets.training import GPU_TAGS, fmn_checkpoint
from fmn_assets.configs import DescriptorConfig, EvaluationConfig
from fmn_assets.metadata import image_markdown, table_schema
from fmn_assets.partitions import dataset_partitions
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.engine import CheckpointError, load_checkpoint, model_from_checkpoint
from fmn_core.engine.progress import read_metrics_log
from fmn_core.retrieval import DescriptorTable, extract_descriptors, pairwise_distance
from fmn_core.retrieval.results import evaluate_descriptors, results_markdown
from fmn_core.utils.atomic import atomic_write_text
from fmn_core.viz import plot_cmc, plot_heatmaps, plot_ranked_lists, plot_training_curves
from fmn_core.viz.ranked_lists import RankedRow

DESCRIPTOR_KIND = {"kinds": {"pytorch", "parquet", "dvc"}, "owners": OWNERS, "group_name": "retrieval",
                   "deps": [fmn_checkpoint, dataset_splits]}


@dg.multi_asset(
    specs=[dg.AssetSpec("query_descriptors", description="GRN, LAN and FMN (eq. 6) descriptors of the query images: "
                                                         "artifacts/<dataset>/query_descriptors.parquet",
                        tags={"paper_section": "3.4"}, **DESCRIPTOR_KIND),
           dg.AssetSpec("gallery_descriptors", description="The same for the gallery images: "
                                                           "artifacts/<dataset>/gallery_descriptors.parquet",
                        tags={"paper_section": "3.4"}, **DESCRIPTOR_KIND)],
    partitions_def=dataset_partitions, pool="gpu", op_tags=GPU_TAGS)
def descriptor_tables(context: dg.AssetExecutionContext, config: DescriptorConfig, paths: ProjectPaths,
                      dvc: DVCResource):
    dataset = context.partition_key
    out = paths.artifacts(dataset)
    with paths.exclusive(dataset, "descriptor_tables"):
        try:
            descriptors, rate = extract_descriptors(out / "fmn.pt", split_table(paths, dataset),
                                                    batch_size=config.batch_size, device=config.device,
                                                    flip=config.flip, progress=False)
        except (FileNotFoundError, CheckpointError, ValueError) as exc:
            raise dg.Failure(allow_retries=False,
                             description=f"descriptor extraction for '{dataset}' failed: {exc}") from exc
        for split in ("query", "gallery"):
            part = descriptors.subset(split)
            path = part.save(out / f"{split}_descriptors.parquet")
            versioned = dvc.track(path)
            widths = {kind: int(matrix.shape[1]) for kind, matrix in part.features.items()}
            schema = table_schema(part.meta.assign(**{k: pd.Series(dtype="string") for k in widths}),
                                  {k: f"{w}-d float32 descriptor" for k, w in widths.items()})
            yield dg.MaterializeResult(asset_key=f"{split}_descriptors", data_version=dg.DataVersion(versioned.md5),
                                       metadata={
                                           "dagster/row_count": len(part), "dagster/column_schema": schema,
                                           "path": dg.MetadataValue.path(str(path)),
                                           "identities": int(part.meta.pid.nunique()),
                                           **{f"{k}_dim": w for k, w in widths.items()}, "alpha": part.alpha,
                                           "flip_averaged": config.flip, "images_per_second": round(rate, 1),
                                           "dvc_md5": versioned.md5, "dvc_pushed": versioned.pushed,
                                           "dvc_push": versioned.push_message})


def _figure4_rows(query: DescriptorTable, gallery: DescriptorTable, count: int) -> list[RankedRow]:
    """Queries where the GRN's first answer is wrong and the FMN's right (the paper's Figure 4), GRN then FMN."""
    ranked = {}
    for kind in ("grn", "fmn"):
        distances = pairwise_distance(query.features[kind], gallery.features[kind])
        junk = ((gallery.meta.pid.to_numpy()[None, :] == query.meta.pid.to_numpy()[:, None])
                & (gallery.meta.camid.to_numpy()[None, :] == query.meta.camid.to_numpy()[:, None]))
        distances[junk] = np.inf
        ranked[kind] = np.argsort(distances, axis=1, kind="stable")[:, :10]
    hits = {kind: gallery.meta.pid.to_numpy()[order] == query.meta.pid.to_numpy()[:, None]
            for kind, order in ranked.items()}
    chosen = list(np.flatnonzero(~hits["grn"][:, 0] & hits["fmn"][:, 0])[:count])
    chosen += [i for i in range(len(query)) if i not in chosen][: count - len(chosen)]
    rows = []
    for i in chosen:
        for kind in ("grn", "fmn"):
            rows.append(RankedRow(f"{kind.upper()}\npid {query.meta.pid[i]}", query.meta.path[i],
                                  gallery.meta.path.to_numpy()[ranked[kind][i]].tolist(), hits[kind][i].tolist()))
    return rows


@dg.asset(partitions_def=dataset_partitions, group_name="evaluation", owners=OWNERS,
          deps=["query_descriptors", "gallery_descriptors", fmn_checkpoint], kinds={"numpy", "matplotlib"},
          tags={"paper_section": "4.2", "paper_table": "1"},
          description="Rank-1/5/10/20, mAP and mINP of the GRN, LAN and FMN descriptors and of FMN + k-reciprocal "
                      "re-ranking (Table 1), with the CMC curves, Figure-4 ranked lists, mask and activation heat "
                      "maps and training curves: artifacts/<dataset>/metrics.json and pictures/.")
def evaluation_metrics(context: dg.AssetExecutionContext, config: EvaluationConfig,
                       paths: ProjectPaths) -> dg.MaterializeResult:
    dataset = context.partition_key
    out = paths.artifacts(dataset)
    with paths.exclusive(dataset, "evaluation_metrics"):
        try:
            query = DescriptorTable.load(out / "query_descriptors.parquet")
            gallery = DescriptorTable.load(out / "gallery_descriptors.parquet")
            model = model_from_checkpoint(load_checkpoint(out / "fmn.pt"))
        except (FileNotFoundError, CheckpointError, ValueError) as exc:
            raise dg.Failure(allow_retries=False, description=f"evaluation of '{dataset}' cannot start: {exc}") from exc
        both = DescriptorTable(pd.concat([query.meta, gallery.meta]),
                               {k: np.concatenate([query.features[k], gallery.features[k]]) for k in query.features},
                               query.alpha)
        results = evaluate_descriptors(both, rerank=config.rerank, k1=config.k1, k2=config.k2,
                                       lambda_value=config.lambda_value, max_rank=config.max_rank)
        table = results_markdown(results)
        summary = {name: {**r.summary(), "valid_queries": r.num_valid, "skipped_queries": r.num_skipped}
                   for name, r in results.items()}
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
        atomic_write_text(out / "metrics.md", f"# {dataset}\n\n{table}\n")

        pictures = out / "pictures"
        rows = _figure4_rows(query, gallery, config.ranked_list_queries)
        drawn = {
            "cmc": plot_cmc(results, pictures / "cmc.png", title=f"CMC on {dataset}"),
            "ranked_lists": plot_ranked_lists(rows, pictures / "ranked_lists.png",
                                              title=f"{dataset}: GRN vs FMN top-10 (green: true match)"),
            "heatmaps": plot_heatmaps(model, [r.query_path for r in rows[::2]][: config.heatmap_images] or
                                      query.meta.path[: config.heatmap_images].tolist(), pictures / "heatmaps.png",
                                      title=f"{dataset}: FMN mask and GRN / LAN activations"),
            "training_curves": plot_training_curves([read_metrics_log(f) for f in (out / "stage1_metrics.jsonl",
                                                                                   out / "stage2_metrics.jsonl")
                                                     if f.is_file()], pictures / "training.png"),
        }
    fmn = results["FMN"].summary()
    metadata = {"results": dg.MetadataValue.md(table),
                "metrics_path": dg.MetadataValue.path(str(out / "metrics.json")),
                "pictures": dg.MetadataValue.path(str(pictures)),
                "fmn_rank1": round(fmn["rank1"], 2), "fmn_mAP": round(fmn["mAP"], 2),
                "grn_rank1": round(results["GRN"].summary()["rank1"], 2),
                "queries": len(query), "gallery": len(gallery), "skipped_queries": results["FMN"].num_skipped}
    if "FMN + re-ranking" in results:
        reranked = results["FMN + re-ranking"].summary()
        metadata.update(reranked_rank1=round(reranked["rank1"], 2), reranked_mAP=round(reranked["mAP"], 2))
    for name, path in drawn.items():
        metadata[f"{name}_plot"] = image_markdown(path, name.replace("_", " "))
    version = hashlib.md5((out / "metrics.json").read_bytes()).hexdigest()
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


@dg.asset_check(asset=evaluation_metrics, partitions_def=dataset_partitions,
                description="Every rate lies in [0, 100], CMC never decreases, and at least one query was evaluated.")
def metrics_in_range(context: dg.AssetCheckExecutionContext, paths: ProjectPaths) -> dg.AssetCheckResult:
    file = paths.artifacts(context.partition_key) / "metrics.json"
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
