"""The model card: what a reviewer reads first about a trained FMN.

Built from the checkpoint itself (recipe, machine, library versions, mask
diagnostics, history) plus what only the caller knows: where the data came
from (dataset, DVC md5, split counts), the evaluation of this run and of the
other seeds, the ONNX export's parity, and how to reproduce it all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fmn_core.engine.config import TrainConfig
from fmn_core.engine.recipes import RECIPES

PAPER = ("Ding, Khan, Tang, Porikli. *Let Features Decide for Themselves: Feature Mask Network for Person "
         "Re-identification.* 2017.")

INTENDED_USE = """\
**Intended use.** Research on person re-identification: comparing methods on public benchmark datasets
(Market-1501, CUHK03, the bundled synthetic data) or on images of people who consented to being recorded and
re-identified, and teaching or reproducing the Feature Mask Network paper.

**Out of scope.** Identifying, tracking or profiling people who have not consented; surveillance of public or
private spaces; any decision about a person (access, policing, employment, credit). Re-identification links
images of one person across cameras and times: deployed on people, it is a surveillance tool, and laws on
biometric and personal data (such as the GDPR) apply.

**Limits.** The descriptors only rank images against a gallery; they do not name anyone and carry no calibrated
probability. Accuracy holds for data like the training data (cameras, resolution, viewpoints, clothing, the
people represented) and drops on anything else; a model trained on synthetic data says nothing about real people.
Benchmarks under-represent many groups of people, and errors are not spread evenly across them. The figures
below are from this run's test split only."""


@dataclass
class DataLineage:
    """Where the training and test images came from."""

    dataset: str
    data_md5: str | None = None  # the DVC md5 of the tracked data folder (data.dvc)
    dataset_version: str | None = None  # the dataset's own version within it
    root: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. train_images, train_identities, query_images


def _recipe_command(config: TrainConfig) -> tuple[str, list[str]]:
    """The preset closest to ``config`` and the ``--set`` options that turn it into ``config`` exactly."""
    own = config.to_dict()
    best = min(RECIPES, key=lambda name: sum(v != own[k] for k, v in RECIPES[name].to_dict().items()))
    base = RECIPES[best].to_dict()
    changes = [f"{k}={'none' if v is None else v}" for k, v in own.items() if v != base[k]
               and k not in ("device",)]
    return best, changes


def reproduce_commands(dataset: str, config: Mapping[str, Any], git_commit: str | None = None,
                       data_path: str | None = None) -> str:
    """Shell lines that rebuild this model from the versioned data with the ``fmn`` command."""
    train = TrainConfig.from_dict(dict(config))
    name, changes = _recipe_command(train)
    sets = " ".join(f"--set {c}" for c in changes)
    data_path = data_path or f"data/{dataset}"
    lines = [f"git checkout {git_commit}" if git_commit else "# at the commit this model was trained with",
             "dvc pull data.dvc",
             f"fmn inspect {dataset} {data_path} --out runs/{dataset}/splits.parquet",
             f"fmn train-stage1 --splits runs/{dataset}/splits.parquet --config {name} {sets} --out runs/{dataset}",
             f"fmn train-stage2 --splits runs/{dataset}/splits.parquet --config {name} {sets} --out runs/{dataset} "
             f"--grn runs/{dataset}/grn.pt",
             f"fmn extract --splits runs/{dataset}/splits.parquet --checkpoint runs/{dataset}/fmn.pt "
             f"--out runs/{dataset}/descriptors.parquet",
             f"fmn evaluate runs/{dataset}/descriptors.parquet --rerank"]
    return "\n".join(line.replace("  ", " ") for line in lines)


def pipeline_commands(dataset: str, git_commit: str | None = None) -> str:
    """Shell lines that rebuild this model with the asset graph (one run of the whole partition)."""
    return "\n".join([
        f"git checkout {git_commit}" if git_commit else "# at the commit of this run",
        "dvc pull data.dvc",
        f"dagster asset materialize -m fmn_assets --select '*' --partition {dataset} "
        "# with this run's config (-c: the Launchpad tab of the run)"])


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _threads_sentence(threads: Mapping[str, list[int]]) -> str:
    """Each stage's CPU thread count, as the card states it (a checkpoint from before they were recorded says so)."""
    if not threads:
        return "CPU threads per stage: not recorded (an older checkpoint)."
    names = {"stage1": "stage 1 (GRN)", "stage2": "stage 2 (MN + LAN)"}
    parts = [f"{names.get(stage, stage)} {' then '.join(map(str, counts)) if counts else 'on a GPU'}"
             for stage, counts in sorted(threads.items())]
    return "CPU threads: " + ", ".join(parts) + "."


def render_model_card(*, checkpoint: Mapping[str, Any], model_hash: str, lineage: DataLineage,
                      metrics: Mapping[str, Mapping[str, float]], seed_study: str | None = None,
                      onnx: Mapping[str, Any] | None = None, reproduce: str | None = None,
                      pipeline_command: str | None = None, artifacts: Mapping[str, str] | None = None,
                      mask_grounding: str | None = None) -> str:
    """The card as Markdown. ``metrics``: Table 1's rows (``name -> {rank1, rank5, rank10, mAP, ...}``)."""
    config = dict(checkpoint["config"])
    train = TrainConfig.from_dict(config)
    versions = dict(checkpoint.get("versions", {}))
    history = list(checkpoint.get("history", []))
    mask = dict(checkpoint.get("diagnostics", {}).get("mask", {}))
    out = [f"# Model card: FMN on `{lineage.dataset}`", "",
           f"Feature Mask Network (GRN + Mixing Network + LAN), model hash `{model_hash}`, "
           f"{checkpoint['num_classes']} training identities, trained with seed {train.seed}.", "",
           "## Paper", "", PAPER, "",
           "## Recipe", "",
           _table([["backbone", f"{train.arch} (initialised from {train.pretrained})"],
                   ["input", f"{train.input_height}x{train.input_width}"],
                   ["masked layer", train.masked_layer + (" (constant mask: the control without the MN)"
                                                          if train.mask_mode == "constant" else "")],
                   *([title, f"{s.epochs} epochs, lr {s.lr}, drop after {s.lr_drop_epoch}"] for title, s in
                     (("stage 1 (GRN)", train.stage(1)), ("stage 2 (MN + LAN, GRN frozen)", train.stage(2)))),
                   ["batch, weight decay", f"{train.batch_size}, {train.weight_decay}"],
                   ["ranking loss (eq. 5)", f"margin {train.margin}, weight {train.rank_weight}"],
                   ["descriptor (eq. 6)", f"alpha {train.alpha}"],
                   ["mask bound B", str(train.log_mask_max)],
                   ["seed", str(train.seed)]], ["setting", "value"]), "",
           "<details><summary>every option</summary>", "",
           _table([[k, v] for k, v in sorted(config.items())], ["option", "value"]), "", "</details>", "",
           "## Data lineage", "",
           _table([["dataset", lineage.dataset], ["DVC md5 of the data (data.dvc)", f"`{lineage.data_md5 or '?'}`"],
                   ["dataset version (DVC)", f"`{lineage.dataset_version or '?'}`"],
                   *([["root", f"`{lineage.root}`"]] if lineage.root else []),
                   *[[k.replace("_", " "), v] for k, v in lineage.counts.items()]], ["", ""]), "",
           f"## Table 1 on `{lineage.dataset}` (this run)", ""]
    keys = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
    out.append(_table([[name, *(f"{row[k]:.2f}" for k in keys if k in row)] for name, row in metrics.items()],
                      ["method", *(k for k in keys if k in next(iter(metrics.values()), {}))]))
    out += ["", "Rank-k, mAP and mINP in %, single-query protocol; FMN + re-ranking is k-reciprocal re-ranking "
                "(Zhong et al.) on the FMN descriptor."]
    if "FMN" in metrics and "GRN" in metrics:
        gain = {k: metrics["FMN"][k] - metrics["GRN"][k] for k in ("rank1", "mAP")}
        verdict = ("FMN beats the GRN" if min(gain.values()) > 0 else
                   "**FMN does not beat the GRN in this run: the paper's claim is not reproduced here**")
        out += ["", f"{verdict} (rank-1 {gain['rank1']:+.2f}, mAP {gain['mAP']:+.2f} points)."]
    if seed_study:
        out += ["", "### Over training seeds (mean ± std)", "", seed_study]
    out += ["", "## Machine", "",
            f"Trained on: {versions.get('machine', 'not recorded (an older checkpoint)')}; torch "
            f"{versions.get('torch', '?')}, torchvision {versions.get('torchvision', '?')}, Python "
            f"{versions.get('python', '?')}, fmn_core {versions.get('fmn_core', '?')}. "
            f"{_threads_sentence(checkpoint.get('threads', {}))} "
            "Training is bit-identical on the same machine with the same thread count, not across CPU models or "
            "thread counts." + (f" Stage 2 ran {len(history)} epoch{'s' * (len(history) != 1)}; final " + ", ".join(
                f"{k} {v:.4g}" for k, v in history[-1].items() if isinstance(v, float) and k != "seconds") + "."
                if history else "")]
    if mask:
        out += ["", "## Mask diagnostics (Mixing Network)", "",
                _table([[k.replace("_", " "), f"{v:.4f}" if isinstance(v, float) else v] for k, v in mask.items()],
                       ["diagnostic", "value"]), "",
                "Variation across images near 0, or most positions at a bound, means the mask collapsed to a "
                "constant and the LAN sees the same weighting for every image."]
    if mask_grounding:
        out += ["", "## Where the mask looks (synthetic data)", "",
                "Share of the mask's excess weight (mask - 1) inside the regions of the local details that tell an "
                "identity from its group mates, divided by the regions' share of the area (fmn_core.analysis."
                "mask_grounding), on the test images:", "", mask_grounding]
    if onnx:
        parity = onnx.get("parity", {})
        out += ["", "## ONNX export", "",
                f"`{onnx.get('path', 'fmn.onnx')}`: outputs {', '.join(onnx.get('outputs', []))}; max abs "
                "difference from PyTorch " + ", ".join(f"{k} {v:.1e}" for k, v in parity.get("max_abs", {}).items())
                + f" (tolerance {parity.get('tolerance', '?')}); rankings identical for "
                f"{parity.get('rankings_identical', '?')}/{parity.get('queries', '?')} check queries."]
    out += ["", "## Intended use and limits", "", INTENDED_USE, "", "## Reproduce", ""]
    if pipeline_command:
        out += ["With the asset graph:", "", "```bash", pipeline_command, "```", "", "Or with `fmn_core` alone:", ""]
    out += ["```bash", reproduce or reproduce_commands(lineage.dataset, config), "```"]
    if artifacts:
        out += ["", "## Artifacts", "", _table([[k, f"`{v}`"] for k, v in artifacts.items()], ["artifact", "where"])]
    return "\n".join(out) + "\n"


__all__ = ["INTENDED_USE", "PAPER", "DataLineage", "render_model_card", "reproduce_commands"]
