"""Champion / challenger: the rule that decides whether a newly trained model replaces the deployed one, the
history of those decisions, and the folder switch that deploys a model whole or not at all.

No Dagster here: ``fmn_assets.assets.deployed`` calls these with the scores of both models on one split table.

The rule (TFX's Evaluator "blessing", MLflow's champion alias): for every compared score (default: rank-1 and mAP
of the fused FMN descriptor, eq. 6), the challenger may be worse than the champion by at most ``tolerance``
points; otherwise it is kept out and the champion stays deployed. The first model of a partition is promoted.

The switch: the new folder is built beside ``deployed/`` and exchanged with it in one ``renameat2(RENAME_EXCHANGE)``
call (two renames where the file system lacks it), after a journal says what is being switched. A process killed
before the exchange leaves the old folder in place (the staged one is discarded on the next run); one killed after
it is completed on the next run (the DVC pointer and the history entry are written then), so the files, the
pointer and the history never disagree for longer than one interrupted run.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmn_core.utils.atomic import atomic_write_text

#: The score rows and metrics a challenger is compared on when nothing else is configured.
DEFAULT_COMPARED = ("FMN.rank1", "FMN.mAP")
#: How many points (of 100) a challenger may lose on a compared score and still be promoted.
DEFAULT_TOLERANCE = 0.5
#: What can be compared: the rows of Table 1 and the metrics of fmn_core.retrieval.evaluation.
SCORE_ROWS = ("GRN", "LAN", "FMN", "FMN + re-ranking")
SCORE_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
#: The files of a deployed model, by role; champion.json describes them.
MODEL_FILES = {"checkpoint": "fmn.pt", "onnx": "fmn.onnx", "card": "MODEL_CARD.md",
               "gallery": "gallery_descriptors.parquet"}
CHAMPION_FILE = "champion.json"

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def file_md5(path: Path) -> str:
    """The md5 DVC gives a file (read in 1 MiB blocks)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_compared(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``["FMN.rank1", "FMN + re-ranking.mAP"]`` -> [(row, metric), ...]; ValueError naming what is accepted."""
    parsed, wrong = [], []
    for name in names:
        row, _, metric = name.rpartition(".")
        if row in SCORE_ROWS and metric in SCORE_METRICS:
            parsed.append((row, metric))
        else:
            wrong.append(name)
    if wrong or not parsed:
        raise ValueError(f"compare={list(names)}: expected ROW.METRIC names, ROW one of {', '.join(SCORE_ROWS)} and "
                         f"METRIC one of {', '.join(SCORE_METRICS)} (e.g. FMN.rank1)")
    return parsed


@dataclass
class Verdict:
    """Whether the challenger is promoted, why, and each compared score of both models."""

    promote: bool
    reason: str
    rows: list[dict]


def judge(challenger: dict[str, dict[str, float]], champion: dict[str, dict[str, float]],
          compared: list[tuple[str, str]], tolerance: float) -> Verdict:
    """The gate: promote unless some compared score is worse than the champion's by more than ``tolerance``."""
    rows, worse = [], []
    for row, metric in compared:
        new, old = float(challenger[row][metric]), float(champion[row][metric])
        difference = new - old
        within = difference >= -tolerance
        rows.append({"score": f"{row} {metric}", "champion": round(old, 2), "challenger": round(new, 2),
                     "difference": round(difference, 2), "within_tolerance": within})
        if not within:
            worse.append(f"{row} {metric} {new:.2f} vs {old:.2f} ({difference:+.2f})")
    if worse:
        return Verdict(False, f"worse than the deployed model by more than {tolerance:g} points: {'; '.join(worse)}",
                       rows)
    changes = ", ".join(f"{r['score']} {r['difference']:+.2f}" for r in rows)
    return Verdict(True, f"not worse than the deployed model by more than {tolerance:g} points ({changes})", rows)


def read_history(path: Path) -> list[dict]:
    """Every decision recorded for a partition, oldest first ([] before the first)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_history(path: Path, decision: dict) -> Path:
    """Add one decision (the file is rewritten atomically: a reader never sees half a line)."""
    lines = [json.dumps(entry, sort_keys=True) for entry in read_history(path)]
    if decision.get("id") not in {entry.get("id") for entry in read_history(path)}:
        lines.append(json.dumps(decision, sort_keys=True))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_champion(deployed: Path) -> dict | None:
    """The deployed model's description (champion.json), or None when nothing is deployed."""
    file = deployed / CHAMPION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _exchange(first: Path, second: Path) -> None:
    """Swap two directories in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first))


class DeployedFolder:
    """``artifacts/<dataset>/deployed`` and the switch that replaces it whole."""

    def __init__(self, path: Path):
        self.path = path
        self.staged = path.with_name(f".{path.name}.staged")
        self.retired = path.with_name(f".{path.name}.retired")
        self.journal = path.with_name(f".{path.name}.journal.json")

    def champion(self) -> dict | None:
        return read_champion(self.path)

    def stage(self) -> Path:
        """An empty folder to build the next deployed model in (a stale one from a killed run is discarded)."""
        shutil.rmtree(self.staged, ignore_errors=True)
        self.staged.mkdir(parents=True)
        return self.staged

    def switch(self, decision: dict, commit: Callable[[dict], None]) -> None:
        """Deploy the staged folder: journal, exchange, then ``commit(decision)`` (pointer, history), then tidy up."""
        new = read_champion(self.staged)
        if new is None:
            raise ValueError(f"{self.staged} holds no {CHAMPION_FILE}: nothing to deploy")
        old = self.champion()
        atomic_write_text(self.journal, json.dumps({"decision": decision, "new": new.get("id"),
                                                    "old": old.get("id") if old else None}))
        if self.path.exists():
            shutil.rmtree(self.retired, ignore_errors=True)
            try:
                _exchange(self.staged, self.path)
                os.rename(self.staged, self.retired)
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                    raise
                os.rename(self.path, self.retired)  # the journal covers the moment between the two renames
                os.rename(self.staged, self.path)
        else:
            os.rename(self.staged, self.path)
        self._finish(decision, commit)

    def recover(self, commit: Callable[[dict], None]) -> str:
        """Finish or undo a switch a killed run left; returns what was done ('' when nothing was pending)."""
        if not self.journal.is_file():
            shutil.rmtree(self.staged, ignore_errors=True)
            return ""
        pending = json.loads(self.journal.read_text())
        current = self.champion()
        if not self.path.exists() and self.retired.exists():  # killed between the two fallback renames
            os.rename(self.retired, self.path)
            current = self.champion()
        if current is not None and current.get("id") == pending["new"]:
            self._finish(pending["decision"], commit)
            return f"completed the interrupted deployment of {pending['new']}"
        shutil.rmtree(self.staged, ignore_errors=True)
        shutil.rmtree(self.retired, ignore_errors=True)
        self.journal.unlink()
        return f"discarded an interrupted deployment of {pending['new']}; {pending['old']} stays deployed"

    def _finish(self, decision: dict, commit: Callable[[dict], None]) -> None:
        commit(decision)
        shutil.rmtree(self.retired, ignore_errors=True)
        shutil.rmtree(self.staged, ignore_errors=True)
        self.journal.unlink(missing_ok=True)
