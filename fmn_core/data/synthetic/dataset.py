"""The dataset folder: reuse or replace, the atomic write, synthetic.json and the summary."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fmn_core.data.synthetic.cameras import camera_profiles
from fmn_core.data.synthetic.config import (
    BODY_LAYOUT,
    GENERATOR_VERSION,
    METADATA_NAME,
    SPLIT_FOLDERS,
    SyntheticConfig,
    resolve_config,
)
from fmn_core.data.synthetic.plan import _make_plan, _Plan
from fmn_core.data.synthetic.rendering import IMAGE_COLUMNS, _render_all
from fmn_core.utils.atomic import atomic_directory
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.main_guard import stop_if_rerun_by_a_worker


class SyntheticRootError(FMNInputError, FileExistsError):
    """The target folder holds something this call must not replace."""


@dataclass(frozen=True)
class SyntheticSummary:
    """What a generation produced (or found already in place).

    ``counts`` are the numbers the Market-1501 reader reports: ``gallery``
    images exclude the junk files (the reader drops them) and include the
    distractors, whose pid 0 counts as one gallery identity.
    """

    root: Path
    config: SyntheticConfig
    counts: dict[str, dict[str, int]]
    junk_images: int
    distractor_images: int
    total_files: int
    seconds: float
    images_per_second: float
    reused: bool
    workers: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["root"] = str(self.root)
        return data


def _counts_from_rows(rows: list[list[Any]]) -> tuple[dict[str, dict[str, int]], int, int, dict[str, int]]:
    images = {split: 0 for split in SPLIT_FOLDERS}
    pids: dict[str, set[int]] = {split: set() for split in SPLIT_FOLDERS}
    junk = distractors = 0
    for row in rows:
        split, pid = row[1], row[2]
        if pid == -1:
            junk += 1
            continue
        distractors += pid == 0
        images[split] += 1
        pids[split].add(pid)
    counts = {split: {"images": images[split], "identities": len(pids[split])} for split in SPLIT_FOLDERS}
    files = {folder: images[split] + (junk if split == "gallery" else 0) for split, folder in SPLIT_FOLDERS.items()}
    return counts, junk, distractors, files


def _metadata_text(config: SyntheticConfig, plan: _Plan, cameras: list[dict[str, Any]],
                   rows: list[list[Any]]) -> str:
    """synthetic.json: deterministic (no times, no paths), one image per line to stay readable."""
    counts, junk, distractors, files = _counts_from_rows(rows)
    head = {
        "generator": "fmn_core.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "layout": "market1501",
        "complete": True,
        "config": config.to_dict(),
        "counts": counts,
        "junk_images": junk,
        "distractor_images": distractors,
        "files": files,
        "body_layout": {k: list(v) for k, v in BODY_LAYOUT.items()},
        "cameras": cameras,
        "identities": plan.identities,
    }
    text = json.dumps(head, indent=1, sort_keys=True)
    lines = ",\n  ".join(json.dumps(row) for row in sorted(rows, key=lambda r: r[0]))
    images = f'"images": {{\n "columns": {json.dumps(list(IMAGE_COLUMNS))},\n "rows": [\n  {lines}\n ]\n}}'
    return text[:-2] + ",\n " + images + "\n}\n"


def read_metadata(root: str | Path) -> dict[str, Any]:
    """Load ``synthetic.json`` of a generated dataset."""
    return json.loads((Path(root) / METADATA_NAME).read_text(encoding="utf-8"))


def _config_differences(stored: dict[str, Any], config: SyntheticConfig) -> list[str]:
    wanted = config.to_dict()
    names = [f.name for f in fields(SyntheticConfig)]
    return [f"{name}: stored {stored.get(name)!r}, requested {wanted[name]!r}"
            for name in names if stored.get(name) != wanted[name]]


def _existing_dataset(root: Path, config: SyntheticConfig, overwrite: bool) -> dict[str, Any] | None:
    """Metadata of a reusable dataset at ``root``; None when generation should go ahead; raises otherwise."""
    if not root.exists():
        return None
    if not root.is_dir():
        raise SyntheticRootError(f"{root} is a file, not a dataset folder; choose another root")
    entries = {entry.name for entry in root.iterdir()}
    if not entries:
        return None
    if METADATA_NAME not in entries:
        raise SyntheticRootError(
            f"{root} already holds files ({', '.join(sorted(entries)[:5])}) but no {METADATA_NAME}, so it is not a "
            "dataset this generator produced; refusing to touch it even with --overwrite (overwrite=True). "
            "Choose another root.")
    unexpected = entries - set(SPLIT_FOLDERS.values()) - {METADATA_NAME}
    if unexpected:
        raise SyntheticRootError(
            f"{root} holds a synthetic dataset plus files this generator did not write "
            f"({', '.join(sorted(unexpected)[:5])}); refusing to replace it even with --overwrite (overwrite=True). "
            "Move those files away or choose another root.")
    try:
        meta = read_metadata(root)
        differences = _config_differences(meta["config"], config)
        if meta.get("generator_version") != GENERATOR_VERSION:
            differences.append(f"generator_version: stored {meta.get('generator_version')!r}, "
                               f"this code {GENERATOR_VERSION}")
        complete = meta.get("complete") is True and all(
            (root / folder).is_dir() and sum(1 for _ in (root / folder).iterdir()) == count
            for folder, count in meta["files"].items())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        differences, complete = [f"{METADATA_NAME} is unreadable ({exc})"], False
    if not differences and complete:
        return meta
    if overwrite:
        return None
    reason = "; ".join(differences) if differences else "its files do not match the counts in synthetic.json"
    raise SyntheticRootError(
        f"{root} holds a different or incomplete synthetic dataset ({reason}); pass --overwrite "
        "(overwrite=True in Python) to replace it or choose another root")


def generate_synthetic(root: str | Path, config: SyntheticConfig | str = "tiny", workers: int = 1,
                       overwrite: bool = False) -> SyntheticSummary:
    """Write (or reuse) a synthetic Market-1501-style dataset at ``root``.

    A complete dataset with the same configuration is reused at once
    (``reused=True``). A different one is replaced only with ``overwrite``; a
    folder this generator did not produce is never replaced. Generation happens
    in a hidden sibling folder that is renamed to ``root`` at the end, so an
    interruption never leaves a partial dataset under ``root``. ``workers > 1``
    renders in that many processes with identical output; they run the calling
    script again first, so a script calling this at its top level needs
    ``if __name__ == "__main__":`` (one clear error says so otherwise).
    """
    stop_if_rerun_by_a_worker()  # before anything is written: a worker re-running an unguarded script stops here
    config = resolve_config(config)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FMNInputError(f"workers={workers!r} is not allowed: must be an integer >= 1")
    root = Path(root).expanduser().absolute()
    start = time.perf_counter()
    meta = _existing_dataset(root, config, overwrite)
    if meta is not None:
        return SyntheticSummary(root, config, meta["counts"], meta["junk_images"], meta["distractor_images"],
                                sum(meta["files"].values()), time.perf_counter() - start, 0.0, True, workers)
    cameras = camera_profiles(config)
    plan = _make_plan(config, cameras)
    with atomic_directory(root) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a dataset is meant to be shared
        for folder in SPLIT_FOLDERS.values():
            (tmp / folder).mkdir()
        rows = _render_all(config, plan, tmp, workers)
        (tmp / METADATA_NAME).write_text(_metadata_text(config, plan, cameras, rows), encoding="utf-8")
    seconds = time.perf_counter() - start
    counts, junk, distractors, files = _counts_from_rows(rows)
    total = sum(files.values())
    return SyntheticSummary(root, config, counts, junk, distractors, total, seconds, total / max(seconds, 1e-9),
                            False, workers)
