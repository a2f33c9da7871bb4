"""The deployed model of a partition: the champion users search with, replaced only by a challenger that is not worse.

``deployed_model`` runs after every new ``fmn_checkpoint`` has its ONNX export and model card. It scores the
challenger (the latest trained model) and the champion (the deployed one) on the same, current split table with
one protocol (their descriptors extracted by this step, cached by checkpoint and split table, so a new data
version re-evaluates the champion), applies the gate of :mod:`fmn_assets.promotion`, and switches
``artifacts/<dataset>/deployed/`` (checkpoint, ONNX, model card, the champion's gallery descriptors,
champion.json) whole or not at all. Every decision is a line of ``promotions.jsonl`` (versioned by DVC beside
``deployed.dvc``) and the materialization's metadata: the two models side by side as a table.
"""


import datetime as dt
import getpass
import json
import shutil
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from fmn_assets.assets.data import OWNERS, dataset_splits, split_table
from fmn_assets.assets.deployment import model_card, onnx_model
from fmn_assets.assets.retrieval import evaluation_metrics
from fmn_assets.assets.training import fmn_checkpoint
from fmn_assets.automation import WHEN_UPSTREAM_CHANGED
from fmn_assets.code_versions import DEPLOYMENT_CODE
from fmn_assets.configs import DeploymentAction, DeploymentConfig
from fmn_assets.failures import bad_input_fails_the_step
from fmn_assets.metadata import records_table
from fmn_assets.partitions import dataset_partitions
from fmn_assets.promotion import (
    CHAMPION_FILE,
    MODEL_FILES,
    DeployedFolder,
    append_history,
    file_md5,
    judge,
    parse_compared,
    read_history,
)
from fmn_assets.resources import DVCResource, ProjectPaths
from fmn_core.data.schema import split_table_fingerprint
from fmn_core.retrieval import DescriptorTable, extract_descriptors
from fmn_core.retrieval.results import evaluate_descriptors
from fmn_core.utils.atomic import atomic_write_text
from fmn_core.utils.errors import FMNInputError

#: the model files a candidate brings (the gallery descriptors are extracted on the current split table)
CANDIDATE_FILES = ("checkpoint", "onnx", "card")


def _sources_in_artifacts(paths: ProjectPaths, dataset: str) -> dict[str, Path]:
    return {"checkpoint": paths.checkpoint(dataset, 2), "onnx": paths.onnx_model(dataset),
            "card": paths.model_card(dataset)}


def _from_cache(dvc: DVCResource, files: dict[str, str], what: str) -> dict[str, Path]:
    """A recorded model's files from DVC's cache, by the md5s its history entry holds."""
    found = {role: dvc.cached_object(files[role]) for role in CANDIDATE_FILES}
    missing = [f"{MODEL_FILES[role]} {files[role]}" for role, path in found.items() if path is None]
    if missing:
        raise FMNInputError(f"{what}: DVC's cache holds no {', '.join(missing)}; fetch them first "
                            "(`dvc fetch` of the commit that recorded that model), then run this again")
    return found


def _recorded_models(history: list[dict]) -> dict[str, dict[str, str]]:
    """checkpoint md5 -> the md5s of that model's files, for every model the history saw (candidates included)."""
    models = {}
    for entry in history:
        for side in ("challenger", "champion_before", "champion_after"):
            model = entry.get(side) or {}
            if model.get("files"):
                models[model["files"]["checkpoint"]] = model["files"]
    return models


def _candidate(config: DeploymentConfig, paths: ProjectPaths, dvc: DVCResource, dataset: str,
               history: list[dict], champion: dict | None) -> tuple[dict[str, Path], str]:
    """The files of the model this decision is about, and where they came from."""
    latest = _sources_in_artifacts(paths, dataset)
    if config.action is DeploymentAction.auto or (config.action is DeploymentAction.promote and not config.candidate):
        missing = [str(p) for p in latest.values() if not p.is_file()]
        if missing:
            raise FMNInputError(f"the latest trained model of '{dataset}' is incomplete (missing {', '.join(missing)})"
                                "; materialize fmn_checkpoint, onnx_model and model_card first")
        return latest, "the latest trained model"
    recorded = _recorded_models(history)
    if config.action is DeploymentAction.promote:
        if latest["checkpoint"].is_file() and file_md5(latest["checkpoint"]) == config.candidate:
            return latest, "the latest trained model"
        if config.candidate not in recorded:
            raise FMNInputError(f"candidate={config.candidate!r}: no model with that fmn.pt md5 in the history of "
                                f"'{dataset}' (known: {', '.join(sorted(recorded)) or 'none'})")
        return _from_cache(dvc, recorded[config.candidate], f"candidate {config.candidate}"), "a recorded candidate"
    champions = [e["champion_after"]["files"]["checkpoint"] for e in history if e.get("deployed")]
    current = champion["files"]["checkpoint"] if champion else None
    earlier = [md5 for md5 in champions if md5 != current]
    target = config.rollback_to or (earlier[-1] if earlier else "")
    if not target or target not in champions:
        raise FMNInputError(f"rollback_to={config.rollback_to!r}: expected the fmn.pt md5 of an earlier champion of "
                            f"'{dataset}' ({', '.join(dict.fromkeys(earlier)) or 'there is none'})")
    return _from_cache(dvc, recorded[target], f"earlier champion {target}"), "an earlier champion"


def _descriptors(checkpoint: Path, md5: str, table: pd.DataFrame, fingerprint: str, cache: Path,
                 flip: bool) -> DescriptorTable:
    """Query and gallery descriptors of one checkpoint on the current split table (cached by both)."""
    file = cache / f"{md5}-{fingerprint[:16]}{'-flip' if flip else ''}.parquet"
    if file.is_file():
        return DescriptorTable.load(file)
    with bad_input_fails_the_step(f"descriptors of {checkpoint} on the current split table"):
        descriptors, _ = extract_descriptors(checkpoint, table, flip=flip, progress=False)
    cache.mkdir(parents=True, exist_ok=True)
    descriptors.save(file)
    return descriptors


def _scores(descriptors: DescriptorTable, rerank: bool) -> dict[str, dict[str, float]]:
    results = evaluate_descriptors(descriptors, rerank=rerank)
    return {name: {k: round(float(v), 4) for k, v in result.summary().items()} for name, result in results.items()}


def _model_record(files: dict[str, Path], md5s: dict[str, str], scores: dict) -> dict:
    return {"files": md5s, "scores": scores, "paths": {role: str(path) for role, path in files.items()}}


def _stage(folder: DeployedFolder, files: dict[str, Path], descriptors: DescriptorTable, champion: dict) -> None:
    """Build the next deployed folder beside the current one: the model's files, its gallery, champion.json."""
    staged = folder.stage()
    for role in CANDIDATE_FILES:
        shutil.copyfile(files[role], staged / MODEL_FILES[role])
    descriptors.subset("gallery").save(staged / MODEL_FILES["gallery"])
    champion["files"]["gallery"] = file_md5(staged / MODEL_FILES["gallery"])
    atomic_write_text(staged / CHAMPION_FILE, _json(champion))


def _json(value: dict) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=lambda o: o.item() if isinstance(o, np.generic) else o)


def _decide(config: DeploymentConfig, dataset: str, challenger: dict, champion: dict | None,
            compared: list[tuple[str, str]], origin: str) -> tuple[bool, str, str, list[dict]]:
    """(promote, kind, reason, compared rows): the first model is deployed, the deployed one is not deployed again,
    the gate decides the rest unless an operator promotes or rolls back by hand (the gate's word is recorded)."""
    if champion is None:
        return True, "first", f"the first model of '{dataset}' is deployed", []
    if champion["files"]["checkpoint"] == challenger["files"]["checkpoint"]:
        return False, "unchanged", "the candidate is the deployed model", []
    verdict = judge(challenger["scores"], champion["scores"], compared, config.tolerance)
    if config.action is DeploymentAction.auto:
        return verdict.promote, "gate", verdict.reason, verdict.rows
    return (True, config.action.value, f"{config.reason.strip()} ({origin} deployed by hand; the gate said: "
            f"{verdict.reason})", verdict.rows)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


def _decision_table(rows: list[dict]) -> dg.MetadataValue:
    return records_table(rows, first_column="score")


def _decision_markdown(decision: dict, rows: list[dict]) -> dg.MetadataValue:
    """The decision as a short document: what happened, why, and both models' compared scores side by side."""
    champion = (decision.get("champion_before") or {}).get("files", {}).get("checkpoint", "none")
    lines = [f"## Candidate {decision['decision']}", "", decision["reason"], "",
             f"- challenger (latest trained) fmn.pt `{decision['challenger']['files']['checkpoint']}`",
             f"- champion before fmn.pt `{champion}`",
             f"- deployed now fmn.pt `{decision['champion_after']['files']['checkpoint']}`",
             f"- tolerance {decision['tolerance']:g} points; split table `{decision['split_fingerprint'][:12]}`; "
             f"{decision['kind']} decision by {decision['operator']}", ""]
    if rows:
        lines += ["| score | champion | challenger | difference | within tolerance |", "|---|---:|---:|---:|---|"]
        lines += [f"| {r['score']} | {r['champion']:.2f} | {r['challenger']:.2f} | {r['difference']:+.2f} | "
                  f"{'yes' if r['within_tolerance'] else 'no'} |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def _history_table(history: list[dict]) -> dg.MetadataValue:
    rows = [{"time": e["time"], "decision": e["decision"], "kind": e["kind"], "deployed_fmn_pt":
             e["champion_after"]["files"]["checkpoint"][:10] if e.get("champion_after") else "",
             "challenger_fmn_pt": (e.get("challenger") or {}).get("files", {}).get("checkpoint", "")[:10],
             "operator": e.get("operator", ""), "reason": e["reason"][:200]} for e in history[-20:]]
    return records_table(rows[::-1], first_column="time")


@dg.asset(partitions_def=dataset_partitions, group_name="deployment", owners=OWNERS,
          deps=[fmn_checkpoint, onnx_model, model_card, evaluation_metrics, dataset_splits], kinds={"dvc"},
          code_version=DEPLOYMENT_CODE, automation_condition=WHEN_UPSTREAM_CHANGED,
          description="The model users search with (the champion): artifacts/{dataset}/deployed/ holds its fmn.pt, "
                      "fmn.onnx, MODEL_CARD.md and gallery descriptors, versioned by deployed.dvc. A newly trained "
                      "model replaces it only when it is not worse on the compared scores, both scored on the "
                      "current split table; every decision is recorded in promotions.jsonl and shown here.")
def deployed_model(context: dg.AssetExecutionContext, config: DeploymentConfig, paths: ProjectPaths,
                   dvc: DVCResource) -> dg.MaterializeResult:
    dataset = context.partition_key
    with paths.exclusive(dataset, "deployed_model"), \
            bad_input_fails_the_step(f"the deployment decision of '{dataset}' cannot be made"):
        problems = config.problems()
        if problems:
            raise FMNInputError("; ".join(problems))
        folder, history_file = DeployedFolder(paths.deployed(dataset)), paths.promotions(dataset)

        def commit(decision: dict) -> None:
            dvc.track(folder.path)
            append_history(history_file, decision)
            dvc.track(history_file)

        recovered = folder.recover(commit)
        if recovered:
            context.log.warning(f"deployed model of '{dataset}': {recovered}")
        history, champion = read_history(history_file), folder.champion()
        table = split_table(paths, dataset)
        fingerprint = split_table_fingerprint(table)
        compared = parse_compared(config.compare)
        rerank = any(row == "FMN + re-ranking" for row, _ in compared)
        files, origin = _candidate(config, paths, dvc, dataset, history, champion)
        md5s = {role: file_md5(path) for role, path in files.items()}
        cache = paths.gate_cache(dataset)
        challenger_descriptors = _descriptors(files["checkpoint"], md5s["checkpoint"], table, fingerprint, cache,
                                              config.flip)
        challenger = _model_record(files, md5s, _scores(challenger_descriptors, rerank))
        champion_record, champion_descriptors = None, None
        if champion is not None:
            deployed_files = {role: folder.path / MODEL_FILES[role] for role in CANDIDATE_FILES}
            champion_descriptors = _descriptors(deployed_files["checkpoint"], champion["files"]["checkpoint"], table,
                                                fingerprint, cache, config.flip)
            champion_record = _model_record(deployed_files, dict(champion["files"]),
                                            _scores(champion_descriptors, rerank))

        promote, kind, reason, rows = _decide(config, dataset, challenger, champion_record, compared, origin)

        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        decision_id = f"{now}-{uuid.uuid4().hex[:8]}"
        refresh = not promote and champion is not None and champion.get("split_fingerprint") != fingerprint
        decision = {
            "id": decision_id, "time": now, "partition": dataset, "run_id": context.run_id,
            "decision": "promoted" if promote else "kept", "kind": kind, "reason": reason,
            "operator": config.operator.strip() or (_user() if config.action is not DeploymentAction.auto
                                                    else "automatic"),
            "action": config.action.value, "compare": list(config.compare), "tolerance": config.tolerance,
            "split_fingerprint": fingerprint, "data_dvc_md5": dvc.tracked_md5(paths.data_root),
            "challenger": challenger, "champion_before": champion_record, "comparison": rows,
            "deployed": promote or refresh,
        }
        if promote or refresh:
            chosen, chosen_files, chosen_descriptors = ((challenger, files, challenger_descriptors) if promote else
                                                        (champion_record, {r: folder.path / MODEL_FILES[r]
                                                                           for r in CANDIDATE_FILES},
                                                         champion_descriptors))
            new_champion = {"id": decision_id, "files": {r: chosen["files"][r] for r in CANDIDATE_FILES},
                            "scores": chosen["scores"], "split_fingerprint": fingerprint, "decision": decision_id,
                            "deployed_at": now, "partition": dataset}
            try:
                _stage(folder, chosen_files, chosen_descriptors, new_champion)
            except BaseException:  # a full disk, a file-size limit: the deployed folder was not touched
                shutil.rmtree(folder.staged, ignore_errors=True)
                raise
            decision["champion_after"] = {"files": new_champion["files"], "scores": new_champion["scores"]}
            if refresh:
                decision["reason"] += ("; the deployed model's gallery descriptors were re-extracted for the current "
                                       "split table")
            folder.switch(decision, commit)
        else:
            decision["champion_after"] = {"files": dict(champion["files"]), "scores": champion_record["scores"]}
            append_history(history_file, decision)
            dvc.track(history_file)
        versioned_md5 = dvc.tracked_md5(folder.path) or ""
    history = read_history(history_file)
    context.log.info(f"deployed model of '{dataset}': {decision['decision']} ({decision['reason']})")
    metadata = {
        "decision": decision["decision"], "decision_kind": kind, "reason": decision["reason"],
        "decision_summary": _decision_markdown(decision, rows),
        "promoted": promote, "operator": decision["operator"], "tolerance": config.tolerance,
        "compared": ", ".join(config.compare), "split_fingerprint": fingerprint,
        "data_dvc_md5": decision["data_dvc_md5"] or "unknown",
        "deployed_fmn_pt_md5": decision["champion_after"]["files"]["checkpoint"],
        "challenger_fmn_pt_md5": md5s["checkpoint"],
        "comparison": _decision_table(rows or [{"score": f"{r} {m}", "champion": None,
                                                "challenger": round(challenger["scores"][r][m], 2)}
                                               for r, m in compared]),
        "history": _history_table(history), "decisions": len(history),
        "deployed_path": dg.MetadataValue.path(str(folder.path)),
        "history_path": dg.MetadataValue.path(str(history_file)),
        "deployed_dvc_md5": versioned_md5,
    }
    return dg.MaterializeResult(data_version=dg.DataVersion(decision["champion_after"]["files"]["checkpoint"]),
                                metadata=metadata)


@dg.asset_check(asset=deployed_model, blocking=True, partitions_def=dataset_partitions,
                description="deployed/ is whole: champion.json names every file with its md5 and each file has it, "
                            "and deployed.dvc records the folder as it is.")
def deployed_model_is_whole(context: dg.AssetCheckExecutionContext, paths: ProjectPaths,
                            dvc: DVCResource) -> dg.AssetCheckResult:
    folder = paths.deployed(context.partition_key)
    champion = DeployedFolder(folder).champion()
    if champion is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": f"{folder} holds no {CHAMPION_FILE}"})
    wrong = [MODEL_FILES[role] for role, md5 in champion["files"].items()
             if not (folder / MODEL_FILES[role]).is_file() or file_md5(folder / MODEL_FILES[role]) != md5]
    pointer = dvc.tracked_md5(folder)
    return dg.AssetCheckResult(passed=not wrong and pointer is not None, metadata={
        "files_not_as_recorded": ", ".join(wrong) or "none", "deployed_dvc_md5": pointer or "not tracked",
        "deployed_fmn_pt_md5": champion["files"].get("checkpoint", "")})
