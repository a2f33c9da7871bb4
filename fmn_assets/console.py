"""A short view of a run for the terminal, read from the run's events in the Dagster instance.

A run records a few hundred events (every resource, output and log line of every
step). The main job shows one line per step instead: when it starts and how it
ended, each asset check's verdict, and training progress (a bar on a terminal, one
line per epoch otherwise). It reads the structured events the instance stores,
the same ones the UI draws, so no log format is parsed. Every event, DEBUG
included, goes to the log file whose path the main job prints.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

import dagster as dg
from tqdm.auto import tqdm

#: The training steps' epoch lines (fmn_assets.assets.training logs one per epoch).
_EPOCH = re.compile(r"^stage (?P<stage>\d) epoch (?P<epoch>\d+)/(?P<total>\d+): (?P<fields>.*)$")
_SHOWN_FIELDS = ("loss", "acc", "images_per_s")
_RUN_ENDS = {"RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"}
_STEP_TROUBLE = {"STEP_FAILURE", "STEP_UP_FOR_RETRY", "STEP_RESTARTED"}


def log_line(entry: dg.EventLogEntry) -> str:
    """One event as a line of the log file: time, level, step, event type and message."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.timestamp))
    event = entry.dagster_event.event_type.name if entry.dagster_event else "LOG"
    level = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(entry.level, str(entry.level))
    text = entry.dagster_event.message if entry.dagster_event and entry.dagster_event.message else entry.user_message
    error = _error_text(entry)
    return f"{stamp} {level} {entry.step_key or '-'} {event} {text}" + (f"\n{error}" if error else "") + "\n"


def _error_text(entry: dg.EventLogEntry) -> str:
    """The user-facing part of a failure: the chain of error messages, without the stack trace."""
    data = entry.dagster_event.event_specific_data if entry.dagster_event else None
    error, messages = getattr(data, "error", None), []
    while error is not None:
        message = error.message.strip()
        if message.startswith("dagster._core.definitions.events.Failure: "):  # a step's own failure: its words
            message = message.split(": ", 1)[1]
        messages.append(message)
        error = error.cause
    return "\n".join(messages)


@dataclass
class RunView:
    """Turns a run's event log entries into the short view, writing every entry to ``log``."""

    log: TextIO
    out: TextIO = sys.stdout
    interactive: bool = False
    _bars: dict[str, tqdm] = field(default_factory=dict)
    _step_failed: bool = False

    def feed(self, entries: Iterable[dg.EventLogEntry]) -> None:
        for entry in entries:
            self.show(entry)
        self.close()

    def show(self, entry: dg.EventLogEntry) -> None:
        self.log.write(log_line(entry))
        self.log.flush()
        event = entry.dagster_event
        if event is None:
            if entry.level >= 20:  # INFO and above: what the steps say to people
                self._user_log(entry.step_key or "", entry.user_message)
            return
        kind, step = event.event_type.name, event.step_key or ""  # the name: RUN_FAILURE, not PIPELINE_FAILURE
        if kind == "STEP_START":
            self._print(f"[fmn] {step} ...")
        elif kind == "STEP_SUCCESS":
            self._close_bar(step)
            took = getattr(event.event_specific_data, "duration_ms", None)
            self._print(f"[fmn] {step} done" + (f" in {took / 1000:.1f} s" if took is not None else ""))
        elif kind in _STEP_TROUBLE:
            self._step_failed = self._step_failed or kind == "STEP_FAILURE"
            self._close_bar(step)
            self._print(f"[fmn] {step}: {kind.lower().replace('_', ' ')}: {event.message or ''}")
            for line in _error_text(entry).splitlines()[:6]:
                self._print(f"      {line}")
        elif kind == "ASSET_CHECK_EVALUATION":
            self._print(f"[fmn]   {event.message}")
        elif kind in _RUN_ENDS or (kind == "ENGINE_EVENT" and _error_text(entry)):
            self._print(f"[fmn] {kind}: {event.message}")
            if kind != "RUN_FAILURE" or not self._step_failed:  # a failure outside any step (an unreachable broker)
                for line in _error_text(entry).splitlines()[:6]:
                    self._print(f"      {line}")

    def close(self) -> None:
        for step in list(self._bars):
            self._close_bar(step)

    def _print(self, text: str) -> None:
        if self._bars and self.interactive:
            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def _user_log(self, step: str, message: str) -> None:
        epoch = _EPOCH.match(message)
        if not epoch:
            self._print(f"[fmn]   {step}: {message}")
            return
        values = dict(item.split(" ", 1) for item in epoch["fields"].split(", ") if " " in item)
        shown = ", ".join(f"{k} {values[k]}" for k in _SHOWN_FIELDS if k in values)
        if not self.interactive:
            self._print(f"[fmn]   stage {epoch['stage']} epoch {epoch['epoch']}/{epoch['total']}: {shown}")
            return
        bar = self._bars.get(step)
        if bar is None:
            bar = self._bars[step] = tqdm(total=int(epoch["total"]), desc=f"stage {epoch['stage']}",
                                          unit="epoch", file=self.out, leave=True)
        bar.set_postfix_str(shown, refresh=False)
        bar.update(int(epoch["epoch"]) - bar.n)

    def _close_bar(self, step: str) -> None:
        bar = self._bars.pop(step, None)
        if bar is not None:
            bar.close()


class RunFollower(threading.Thread):
    """Follows the run tagged ``tag`` in ``instance`` while it executes, feeding each new event to ``view``.

    The main job executes the run in the main thread (Dagster handles interrupts there); this thread polls
    the instance's event log, as the UI does, and stops after the run's last event once ``finish`` is called.
    """

    def __init__(self, instance: dg.DagsterInstance, tag: tuple[str, str], view: RunView, poll_s: float = 0.5):
        super().__init__(daemon=True, name="fmn-run-follower")
        self.instance, self.tag, self.view, self.poll_s = instance, tag, view, poll_s
        self.run_id: str | None = None
        self._finished = threading.Event()

    def finish(self, timeout_s: float = 60.0) -> None:
        self._finished.set()
        self.join(timeout_s)

    def run(self) -> None:
        try:
            self._follow()
        except Exception as exc:  # the run goes on without its view: say so rather than fall silent
            message = f"[fmn] the terminal view stopped ({type(exc).__name__}: {exc}); the Dagster UI shows the run"
            print(message, file=sys.stderr, flush=True)
            self.view.log.write(message + "\n")

    def _follow(self) -> None:
        cursor = None
        while True:
            done = self._finished.is_set()  # read first: one more poll after the run ended catches its last events
            if self.run_id is None:
                runs = self.instance.get_runs(dg.RunsFilter(tags={self.tag[0]: self.tag[1]}), limit=1)
                self.run_id = runs[0].run_id if runs else None
            if self.run_id is not None:
                while True:
                    page = self.instance.get_records_for_run(self.run_id, cursor=cursor, limit=500)
                    for record in page.records:
                        self.view.show(record.event_log_entry)
                    cursor = page.cursor
                    if not page.has_more:
                        break
            if done:
                self.view.close()
                return
            self._finished.wait(self.poll_s)
