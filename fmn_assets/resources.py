"""Resources for the systems outside the graph: the project's folders and DVC.

Paths are relative to the project folder: ``FMN_PROJECT_DIR`` when set,
otherwise the working directory Dagster runs the code in (``workspace.yaml``
sets it to the repository root).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml

from fmn_core.utils.atomic import atomic_write_text


def project_dir() -> Path:
    return Path(os.environ.get("FMN_PROJECT_DIR") or os.getcwd()).resolve()


class ProjectPaths(dg.ConfigurableResource):
    """Where datasets are read from and artifacts are written to."""

    data_dir: str = "data"
    artifacts_dir: str = "artifacts"

    @property
    def root(self) -> Path:
        return project_dir()

    def _resolve(self, path: str) -> Path:
        resolved = Path(path).expanduser()
        return resolved if resolved.is_absolute() else self.root / resolved

    @property
    def data_root(self) -> Path:
        """The folder DVC tracks as a whole (``data.dvc``)."""
        return self._resolve(self.data_dir)

    def dataset_root(self, dataset: str) -> Path:
        """``data/<dataset>``; a custom dataset is its ``manifest.csv`` there."""
        return self.data_root / dataset

    def artifacts(self, dataset: str) -> Path:
        folder = self._resolve(self.artifacts_dir) / dataset
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @contextmanager
    def exclusive(self, dataset: str, step: str) -> Iterator[None]:
        """Hold the partition's lock while a step writes its artifacts.

        Two runs of the same partition at once would interleave writes to the
        same files; the second one fails at once with a clear message instead.
        """
        lock_path = self.artifacts(dataset) / ".lock"
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise dg.Failure(
                    allow_retries=False,
                    description=f"partition '{dataset}' is being written by {holder}; "
                                f"this run ({step}) stops so neither corrupts the other. Launch it again once "
                                "the other run has finished.",
                    metadata={"lock": str(lock_path)}) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{step} (pid {os.getpid()})")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class Versioned:
    """What DVC says about a file or folder it tracks."""

    path: Path
    dvc_file: Path
    md5: str
    size: int
    pushed: bool
    push_message: str


class DVCResource(dg.ConfigurableResource):
    """DVC through its own command line: ``dvc add`` to version, ``dvc push`` to share.

    The remote is the repository's default DVC remote (a local folder out of
    the box; any DVC remote by configuration), or ``remote`` when set. A push
    that fails never loses the local artifact: it is recorded as pending and
    retried by the next push.
    """

    repo_dir: str = ""
    remote: str = ""
    push: bool = True

    @property
    def root(self) -> Path:
        return Path(self.repo_dir).expanduser().resolve() if self.repo_dir else project_dir()

    def _dvc(self, *args: str) -> subprocess.CompletedProcess:
        """Run the DVC CLI; calls from concurrent runs queue on a lock instead of failing on DVC's own."""
        self.ensure_repo()
        executable = Path(sys.executable).with_name("dvc")
        command = [str(executable) if executable.exists() else "dvc", *args]
        lock = self.root / ".dvc" / "tmp" / "fmn-dvc.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                return subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=3600)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure_repo(self) -> None:
        if not (self.root / ".dvc").is_dir():
            raise dg.Failure(allow_retries=False,
                             description=f"{self.root} is not a DVC repository (no .dvc/ folder): run `dvc init` "
                                         "there, or set the dvc resource's repo_dir")

    def add(self, path: Path) -> tuple[Path, str, int]:
        """Track ``path``; returns (the .dvc file, its md5, its size in bytes)."""
        relative = Path(os.path.relpath(path, self.root))
        result = self._dvc("add", "--quiet", str(relative))
        if result.returncode != 0:
            raise dg.Failure(description=f"`dvc add {relative}` failed: {result.stderr.strip() or result.stdout}")
        dvc_file = path.with_name(path.name + ".dvc")
        out = yaml.safe_load(dvc_file.read_text())["outs"][0]
        return dvc_file, str(out["md5"]), int(out.get("size", 0))

    @property
    def _pending_file(self) -> Path:
        return self.root / ".dvc" / "tmp" / "fmn-pending-push.json"

    def pending(self) -> list[str]:
        return json.loads(self._pending_file.read_text()) if self._pending_file.is_file() else []

    def push_targets(self, dvc_files: list[Path]) -> tuple[bool, str]:
        """Push these .dvc files and any whose earlier push failed; (ok, message)."""
        if not self.push:
            return False, "push disabled by configuration (dvc resource push=false)"
        targets = sorted({str(Path(os.path.relpath(f, self.root))) for f in dvc_files} | set(self.pending()))
        targets = [t for t in targets if (self.root / t).is_file()]
        args = ["push", "--quiet", *(["--remote", self.remote] if self.remote else []), *targets]
        result = self._dvc(*args)
        self._pending_file.parent.mkdir(parents=True, exist_ok=True)
        if result.returncode == 0:
            atomic_write_text(self._pending_file, "[]")
            return True, f"pushed {len(targets)} target(s) to {self.remote or 'the default remote'}"
        atomic_write_text(self._pending_file, json.dumps(targets))
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        return False, ("push failed, kept locally and queued for the next run: " + " ".join(message[-3:]))[:800]

    def tracked_md5(self, path: Path) -> str | None:
        """The md5 that ``<path>.dvc`` records, or None when the path is not tracked."""
        dvc_file = path.with_name(path.name + ".dvc")
        if not dvc_file.is_file():
            return None
        return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])

    def folder_versions(self, folder: Path) -> dict[str, str]:
        """One version per top-level sub-folder of a tracked folder (``data/<dataset>``).

        DVC versions the whole folder (``data.dvc``); its ``.dir`` manifest in the
        cache lists every file's md5, from which each dataset gets a version of
        its own, so new Market-1501 files do not make the synthetic lineage stale.
        """
        md5 = self.tracked_md5(folder)
        if md5 is None:
            return {}
        manifest = self._cache_dir() / "files" / "md5" / md5[:2] / md5[2:]
        if not manifest.is_file():
            return {}
        by_folder: dict[str, list[str]] = {}
        for entry in json.loads(manifest.read_text()):
            top, _, rest = entry["relpath"].partition("/")
            if rest:
                by_folder.setdefault(top, []).append(f"{rest}\t{entry['md5']}")
        return {top: hashlib.md5("\n".join(sorted(lines)).encode()).hexdigest() for top, lines in by_folder.items()}

    def _cache_dir(self) -> Path:
        result = self._dvc("cache", "dir")
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip().splitlines()[-1])
        return self.root / ".dvc" / "cache"

    def track(self, path: Path) -> Versioned:
        """``dvc add`` then push; the local artifact is kept whatever the push does."""
        dvc_file, md5, size = self.add(path)
        pushed, message = self.push_targets([dvc_file])
        return Versioned(path, dvc_file, md5, size, pushed, message)
