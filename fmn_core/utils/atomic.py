"""Atomic file and folder writes.

A reader must never see a half-written artifact: an interrupted write leaves
the previous version (or nothing) in place. Everything is written next to its
destination, flushed, then moved into place with ``os.replace``, which is
atomic on POSIX file systems when source and destination share a folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: errno values that mean "no room": the disk, a quota, or the process's file-size limit
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
#: less free space than this after a failed write is taken as the reason it failed
_LOW_SPACE_BYTES = 16 * 2**20


class NoRoomToWriteError(OSError):
    """A write ran out of room. Not bad input (the same command succeeds once there is space), so not an
    FMNInputError; the message names the file, what was written, and the space and limits left."""


def _read_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: Read once, at import, while nothing else runs: os.umask can only be read by setting it.
_UMASK = _read_umask()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write_path(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``destination``.

    On an exception the temporary file is removed and ``destination`` is left
    exactly as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            yield tmp
        except Exception as exc:
            reason = _no_room(exc, tmp)
            if reason is None:
                raise
            kept = f"the previous {destination.name} is kept" if destination.exists() else "no file was left"
            error = NoRoomToWriteError(f"could not write {destination}: {reason}; nothing was changed ({kept}). "
                                       "Free some space (or raise the limit) and run the same command again")
            error.errno = errno.ENOSPC
            raise error from exc
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, destination)
        _fsync_dir(destination.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _no_room(exc: BaseException, tmp: Path) -> str | None:
    """Why a write failed for lack of room, in words, or None when it failed for another reason.

    Libraries wrap the OS error (torch: RuntimeError, pyarrow: "Error writing bytes", the ONNX
    exporter its own), so the errno is looked for along the chain, then the space itself is checked.
    """
    written = tmp.stat().st_size if tmp.exists() else 0
    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    by_errno = any(isinstance(e, OSError) and e.errno in _NO_ROOM for e in _chain(exc))
    texts = " ".join(str(e) for e in _chain(exc)).lower()
    by_text = any(t in texts for t in ("no space left", "file too large", "disk quota", "error writing bytes"))
    at_limit = limit != resource.RLIM_INFINITY and written >= limit
    low = free is not None and free < _LOW_SPACE_BYTES
    if not (by_errno or by_text or at_limit or low):
        return None
    first_line = (str(exc).splitlines() or [repr(exc)])[0]
    after = f" after {_size(written)}" if written else ""
    parts = [f"the write failed{after} ({type(exc).__name__}: {first_line})"]
    if free is not None:
        parts.append(f"{_size(free)} free on the file system of {tmp.parent}")
    if limit != resource.RLIM_INFINITY:
        parts.append(f"this process may write files of at most {_size(limit)} (ulimit -f)")
    return "; ".join(parts)


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count} bytes"


def atomic_write_bytes(destination: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``destination`` atomically."""
    with atomic_write_path(destination) as tmp:
        tmp.write_bytes(data)
    return Path(destination)


def atomic_write_text(destination: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``destination`` atomically."""
    return atomic_write_bytes(destination, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``destination`` on success.

    An existing ``destination`` is swapped out only after the new folder is
    complete, so a crash mid-way never leaves a partial folder under the final
    name.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        yield tmp
        if destination.exists():
            old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
            os.replace(destination, old)
            os.replace(tmp, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, destination)
        _fsync_dir(destination.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
