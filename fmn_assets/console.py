"""A short view of a Dagster CLI run for the terminal; the full event log goes to a file.

``dagster asset materialize`` prints every DEBUG event of every step (a few hundred
lines per run). The main job shows one line per step instead: when it starts and
how it ended, each asset check's verdict, and training progress (a bar on a
terminal, one line per epoch otherwise). Every line, DEBUG included, is kept in
the log file whose path the main job prints.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm.auto import tqdm

#: "2026-11-24 20:48:31 +0000 - dagster - DEBUG - <job> - <run id> - <rest>"
_PREFIX = re.compile(r"^\S+ \S+ [+-]\d{4} - dagster - (?P<level>[A-Z]+) - \S+ - [0-9a-f-]{36} - (?P<rest>.*)$")
_EVENT = re.compile(r"^[A-Z][A-Z_]+$")
_EPOCH = re.compile(r"^stage (?P<stage>\d) epoch (?P<epoch>\d+)/(?P<total>\d+): (?P<fields>.*)$")
_SHOWN_FIELDS = ("loss", "acc", "images_per_s")


@dataclass
class LogLine:
    """One Dagster console record: level, step (may be empty), event type (empty for user logs), message."""

    level: str
    step: str
    event: str
    message: str


def parse(line: str) -> LogLine | None:
    """The parts of a Dagster console line, or None for a continuation line (a stack trace, a warning)."""
    match = _PREFIX.match(line.rstrip("\n"))
    if not match:
        return None
    parts = match["rest"].split(" - ")
    if parts and parts[0].isdigit():  # the process id of framework events
        parts = parts[1:]
    for index, part in enumerate(parts[:3]):
        if _EVENT.match(part):
            return LogLine(match["level"], parts[index - 1] if index else "", part, " - ".join(parts[index + 1:]))
    return LogLine(match["level"], parts[0] if len(parts) > 1 else "", "", " - ".join(parts[1:]) or parts[0])


@dataclass
class RunView:
    """Turns the stream of console lines into the short view, writing every line to ``log``."""

    log: TextIO
    out: TextIO = sys.stdout
    interactive: bool = False
    _bars: dict[str, tqdm] = field(default_factory=dict)
    _failure_lines: int = 0

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.log.write(line)
            self.log.flush()
            self._show(line)
        for bar in self._bars.values():
            bar.close()

    def _print(self, text: str) -> None:
        if self._bars and self.interactive:
            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def _show(self, line: str) -> None:
        record = parse(line)
        if record is None:
            text = line.strip()
            # the failure's own lines, up to its stack trace; Python warnings of other steps may come in between
            noise = "Warning:" in text or text.startswith(("File ", "return ", "warnings.", "self.", "^"))
            if self._failure_lines and text and not noise and not text.startswith("Stack Trace"):
                self._print(f"      {text}")
                self._failure_lines -= 1
            if text.startswith("Stack Trace"):
                self._failure_lines = 0
            return
        if record.event == "STEP_START":
            self._print(f"[fmn] {record.step} ...")
        elif record.event == "STEP_SUCCESS":
            took = re.search(r" in ([\d.]+\s?\w+)\.?$", record.message)
            self._close_bar(record.step)
            self._print(f"[fmn] {record.step} done" + (f" in {took[1]}" if took else ""))
        elif record.event in ("STEP_FAILURE", "STEP_UP_FOR_RETRY", "STEP_RESTARTED"):
            self._close_bar(record.step)
            self._print(f"[fmn] {record.step}: {record.event.lower().replace('_', ' ')}: {record.message}")
            self._failure_lines = 6
        elif record.event == "ASSET_CHECK_EVALUATION":
            self._print(f"[fmn]   {record.message}")
        elif record.event in ("RUN_SUCCESS", "RUN_FAILURE", "PIPELINE_SUCCESS", "PIPELINE_FAILURE"):
            self._print(f"[fmn] {record.event}: {record.message}")
        elif not record.event and record.level in ("INFO", "WARNING", "ERROR", "CRITICAL"):
            self._user_log(record)

    def _user_log(self, record: LogLine) -> None:
        epoch = _EPOCH.match(record.message)
        if not epoch:
            self._print(f"[fmn]   {record.step}: {record.message}")
            return
        values = dict(item.split(" ", 1) for item in epoch["fields"].split(", ") if " " in item)
        shown = ", ".join(f"{k} {values[k]}" for k in _SHOWN_FIELDS if k in values)
        if not self.interactive:
            self._print(f"[fmn]   stage {epoch['stage']} epoch {epoch['epoch']}/{epoch['total']}: {shown}")
            return
        bar = self._bars.get(record.step)
        if bar is None:
            bar = self._bars[record.step] = tqdm(total=int(epoch["total"]), desc=f"stage {epoch['stage']}",
                                                unit="epoch", file=self.out, leave=True)
        bar.set_postfix_str(shown, refresh=False)
        bar.update(int(epoch["epoch"]) - bar.n)

    def _close_bar(self, step: str) -> None:
        bar = self._bars.pop(step, None)
        if bar is not None:
            bar.close()
