"""One training per output folder at a time, and no empty folder left by a training that failed.

Two trainings writing one ``--out`` would overwrite each other's partial and final checkpoints
and both report success. The Dagster graph serialises its steps with its run queue and
``ProjectPaths.exclusive``; this lock gives the CLI and library callers the same guarantee. It is
an advisory ``flock`` on ``<out>/.training.lock``, released by the kernel when the process dies,
so a killed training never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from fmn_core.utils.errors import FMNInputError

LOCK_NAME = ".training.lock"


class TrainingInProgressError(FMNInputError):
    """Another training holds the output folder."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return (f"pid {info['pid']} on {info['host']}, stage {info['stage']}, started {info['started']} "
                f"({info['command']})")
    except (OSError, ValueError, KeyError):
        return "another process (its details are unreadable)"


def _acquire(lock_path: Path, out_dir: Path):
    """The open, locked lock file; retried when the holder removed the file between our open and lock."""
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the whole training
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            handle.close()
            raise TrainingInProgressError(
                f"--out {out_dir} is in use by another training: {holder}. Wait for it to finish, or give another "
                "--out folder") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()  # we locked a file the previous holder had already removed: lock the current one


@contextlib.contextmanager
def training_output(out_dir: Path, stage: int, enabled: bool = True) -> Iterator[Path]:
    """Hold ``out_dir`` for one training; refuse at once, naming the holder, if another has it.

    A folder this call created is removed again when the training fails before writing anything
    into it. ``enabled=False`` (torchrun ranks other than 0) only creates the folder.
    """
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not enabled:
        yield out_dir
        return
    lock_path = out_dir / LOCK_NAME
    handle = _acquire(lock_path, out_dir)
    succeeded = False
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                                 "started": dt.datetime.now().isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv[:3])[:200]}))
        handle.flush()
        yield out_dir
        succeeded = True
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()  # closing releases the lock
        if created and not succeeded:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty: anything the training wrote stays
