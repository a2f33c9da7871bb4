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
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from fmn_core.utils.errors import FMNInputError

LOCK_NAME = ".training.lock"


class TrainingOutputError(FMNInputError):
    """The output folder cannot be held for a training (its lock file is not fmn's own)."""


class TrainingInProgressError(TrainingOutputError):
    """Another training holds the output folder."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text())
        return (f"pid {info['pid']} on {info['host']}, stage {info['stage']}, started {info['started']} "
                f"({info['command']})")
    except (OSError, ValueError, KeyError):
        return "another process (its details are unreadable)"


def _open_own_lock(lock_path: Path, out_dir: Path) -> int:
    """A descriptor of ``lock_path`` that is fmn's own lock file: never a link, a device or a file linked elsewhere.

    ``O_NOFOLLOW`` refuses a symbolic link (whose target may be any file of the user's) and ``O_NONBLOCK`` keeps a
    FIFO from blocking the open; a regular file with a second hard link is refused too, because truncating it would
    change that other name's content. Nothing is written before these checks pass.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if lock_path.is_symlink():
            raise TrainingOutputError(
                f"--out {out_dir}: {LOCK_NAME} is a symbolic link (to {os.readlink(lock_path)}), not the lock file "
                f"fmn writes; nothing was changed. Remove the link ({lock_path}) or give another --out folder"
            ) from None
        raise TrainingOutputError(f"--out {out_dir}: cannot open the lock file {lock_path} ({exc.strerror}); give "
                                  "another --out folder") from None
    info = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(info.st_mode) else
               f"has {info.st_nlink} hard links (another name shares its content)" if info.st_nlink > 1 else "")
    if problem:
        os.close(fd)
        raise TrainingOutputError(f"--out {out_dir}: {LOCK_NAME} {problem}, so it is not the lock file fmn writes; "
                                  f"nothing was changed. Remove {lock_path} or give another --out folder")
    os.set_blocking(fd, True)
    return fd


def _acquire(lock_path: Path, out_dir: Path):
    """The open, locked lock file; retried when the holder removed the file between our open and lock."""
    while True:
        handle = os.fdopen(_open_own_lock(lock_path, out_dir), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            handle.close()
            raise TrainingInProgressError(
                f"--out {out_dir} is in use by another training: {holder}. Wait for it to finish, or give another "
                "--out folder") from None
        if _same_file(lock_path, handle):
            return handle
        handle.close()  # we locked a file the previous holder had already removed: lock the current one


def _same_file(lock_path: Path, handle) -> bool:
    """Whether ``lock_path`` still names the file ``handle`` has open (not a file put there since)."""
    try:
        return os.lstat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


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
        if _same_file(lock_path, handle):  # remove our own file only, never one that replaced it
            with contextlib.suppress(OSError):
                lock_path.unlink()
        handle.close()  # closing releases the lock
        if created and not succeeded:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only when empty: anything the training wrote stays
