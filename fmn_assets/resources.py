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
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml
from pydantic import Field

from fmn_assets.environment import PROJECT_DIR
from fmn_core.engine.trainer import STAGE_FILES


def project_dir() -> Path:
    return Path(PROJECT_DIR.value() or os.getcwd()).expanduser().resolve()


class ProjectPaths(dg.ConfigurableResource):
    """Where datasets are read from and artifacts are written to, and every artifact's file name.

    The file names live here and nowhere else, so an asset, its checks and the
    main job cannot disagree about where ``grn.pt`` or a descriptor table is.
    """

    project_dir: str = Field("", description="the project folder; empty: $FMN_PROJECT_DIR, else the working "
                                             "directory (workspace.yaml sets it to the repository root)")
    data_dir: str = "data"
    artifacts_dir: str = "artifacts"

    @property
    def root(self) -> Path:
        return Path(self.project_dir).expanduser().resolve() if self.project_dir else project_dir()

    def splits(self, dataset: str) -> Path:
        """The split table ``dataset_splits`` writes."""
        return self.artifacts(dataset) / "splits.parquet"

    def splits_report(self, dataset: str) -> Path:
        """The reader's report saved next to the split table."""
        return self.artifacts(dataset) / "splits.report.json"

    def checkpoint(self, dataset: str, stage: int) -> Path:
        """``grn.pt`` (stage 1, Algorithm 1 lines 1-2) or ``fmn.pt`` (stage 2, line 3)."""
        return self.artifacts(dataset) / STAGE_FILES[stage]  # the names fmn_core's trainer writes

    def descriptors(self, dataset: str, split: str) -> Path:
        """``query_descriptors.parquet`` or ``gallery_descriptors.parquet``."""
        return self.artifacts(dataset) / f"{split}_descriptors.parquet"

    def metrics_log(self, dataset: str, stage: int) -> Path:
        """The per-epoch log fmn_core's trainer writes for a stage."""
        return self.artifacts(dataset) / f"stage{stage}_metrics.jsonl"

    def metrics(self, dataset: str) -> Path:
        """Table 1 of the run as JSON (``metrics.md`` beside it holds the Markdown)."""
        return self.artifacts(dataset) / "metrics.json"

    def onnx_model(self, dataset: str) -> Path:
        """The ONNX export of ``fmn.pt`` (``fmn export``)."""
        return self.artifacts(dataset) / "fmn.onnx"

    def model_card(self, dataset: str) -> Path:
        """The model card, next to the checkpoint."""
        return self.artifacts(dataset) / "MODEL_CARD.md"

    def deployed(self, dataset: str) -> Path:
        """The deployed (champion) model's folder: fmn.pt, fmn.onnx, MODEL_CARD.md, its gallery and champion.json."""
        return self.artifacts(dataset) / "deployed"

    def promotions(self, dataset: str) -> Path:
        """Every promotion decision of the partition, one JSON object per line."""
        return self.artifacts(dataset) / "promotions.jsonl"

    def gate_cache(self, dataset: str) -> Path:
        """Descriptors the promotion gate extracted, by checkpoint and split table (not versioned: derived)."""
        return self.artifacts(dataset) / ".gate_cache"

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
    """What DVC says about a file or folder it tracks, and the git state it was versioned in."""

    path: Path
    dvc_file: Path
    md5: str
    size: int
    pushed: bool
    push_message: str
    #: HEAD of the project's git repository when the artifact was versioned ("" outside git or before a commit)
    git_commit: str = ""
    #: whether files other than DVC pointers differed from that commit (None: not a git repository)
    git_dirty: bool | None = None

    def metadata(self) -> dict:
        """The DVC and git fields every versioned asset shows, keyed as the materializations show them."""
        return {"dvc_md5": self.md5, "dvc_file": dg.MetadataValue.path(str(self.dvc_file)),
                "dvc_pushed": self.pushed, "dvc_push": self.push_message,
                "git_commit": self.git_commit or "none", "git_dirty": bool(self.git_dirty)}


class DVCError(RuntimeError):
    """A DVC command failed; the message holds the command and DVC's own words."""


class DVCResource(dg.ConfigurableResource):
    """DVC through its public command line: ``dvc add`` to version, ``dvc push`` to share, ``dvc ls`` to read.

    The remote is the repository's default DVC remote (a local folder out of
    the box; any DVC remote by configuration), or ``remote`` when set. A push
    that fails never loses the local artifact; every push sends all the
    pointers next to the new one (``artifacts/<dataset>/*.dvc``), and DVC skips
    what the remote already holds, so the next run uploads whatever an earlier
    failed push left behind. We hold no lock of our own: DVC holds its
    repository lock while it adds or pushes, and ``dvc add`` and ``dvc push``
    wait for it (``--wait-for-lock``) instead of failing; reading versions
    (``dvc ls``) takes no lock, so observation never waits behind a long push.
    """

    repo_dir: str = ""
    remote: str = ""
    push: bool = True

    @property
    def root(self) -> Path:
        return Path(self.repo_dir).expanduser().resolve() if self.repo_dir else project_dir()

    def _dvc(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        """Run the DVC CLI in the repository (no lock of ours: DVC locks what needs locking)."""
        self.ensure_repo()
        executable = Path(sys.executable).with_name("dvc")
        command = [str(executable) if executable.exists() else "dvc", *args]
        return subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout)

    def ensure_repo(self) -> None:
        if not (self.root / ".dvc").is_dir():
            raise dg.Failure(allow_retries=False,
                             description=f"{self.root} is not a DVC repository (no .dvc/ folder): run `dvc init` "
                                         "there, or set the dvc resource's repo_dir")

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def add(self, path: Path) -> tuple[Path, str, int]:
        """Track ``path``; returns (the .dvc file, its md5, its size in bytes).

        DVC holds its repository lock for the add; a concurrent add or push of
        another run makes this one wait for it instead of failing.
        """
        relative = self.relative(path)
        result = self._dvc("--wait-for-lock", "add", "--quiet", relative)
        if result.returncode != 0:
            raise dg.Failure(description=f"`dvc add {relative}` failed in {self.root} (exit code {result.returncode}): "
                                         f"{result.stderr.strip() or result.stdout.strip() or 'DVC said nothing'}")
        dvc_file = path.with_name(path.name + ".dvc")
        out = yaml.safe_load(dvc_file.read_text())["outs"][0]
        return dvc_file, str(out["md5"]), int(out.get("size", 0))

    def push_targets(self, dvc_files: list[Path]) -> tuple[bool, str]:
        """``dvc push`` these pointers; (ok, message). DVC uploads only objects the remote lacks."""
        if not self.push:
            return False, "push disabled by configuration (dvc resource push=false)"
        targets = sorted({self.relative(f) for f in dvc_files if f.is_file()})
        remote = ["--remote", self.remote] if self.remote else []
        where = self.remote or "the default remote"
        try:
            result = self._dvc("--wait-for-lock", "push", *remote, *targets)
        except subprocess.TimeoutExpired as exc:
            return False, (f"push to {where} timed out after {exc.timeout:.0f} s; the artifact is kept locally and the "
                           f"next push of these pointers uploads it (`dvc push {shlex.join(targets)}`)")
        if result.returncode == 0:
            said = (result.stdout.strip().splitlines() or ["done"])[-1]
            return True, f"{said} ({len(targets)} target(s) to {where}: {' '.join(targets)})"
        lines = [line for line in (result.stderr.strip() or result.stdout.strip()).splitlines()
                 if line.strip() and not line.startswith("Having any troubles")]
        message = " ".join(lines[-3:])
        return False, (f"push to {where} failed; the artifact is kept locally and the next push of these pointers "
                       f"uploads it (`dvc push {shlex.join(targets)}`): {message}")[:800]

    def cached_object(self, md5: str) -> Path | None:
        """The file DVC's cache holds for ``md5`` (a file it added or pulled), or None when it holds none."""
        result = self._dvc("cache", "dir", timeout=120)
        cache = Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else \
            self.root / ".dvc" / "cache"
        candidate = cache / "files" / "md5" / md5[:2] / md5[2:]
        return candidate if candidate.is_file() else None

    def tracked_md5(self, path: Path) -> str | None:
        """The md5 that ``<path>.dvc`` records, or None when the path is not tracked."""
        dvc_file = path.with_name(path.name + ".dvc")
        if not dvc_file.is_file():
            return None
        return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])

    def dataset_versions(self, folder: Path) -> dict[str, str]:
        """One version per top-level sub-folder of a tracked folder (``data/<dataset>``), from ``dvc ls``.

        DVC versions the whole folder (``data.dvc``); ``dvc ls --dvc-only
        --show-hash`` lists every tracked file under it with its md5 as the
        pointer records it (not the workspace). Each dataset's version is the md5
        of its sorted ``path<TAB>md5`` lines, so new Market-1501 files leave the
        synthetic lineage alone. Reads only: no lock, safe beside a running push.
        Raises :class:`DVCError` when DVC cannot list the folder.
        """
        if self.tracked_md5(folder) is None:
            return {}
        relative = self.relative(folder)
        result = self._dvc("ls", "--json", "--recursive", "--dvc-only", "--show-hash", ".", relative, timeout=600)
        if result.returncode != 0:
            raise DVCError(f"`dvc ls . {relative}` failed in {self.root} (exit code {result.returncode}): "
                           f"{result.stderr.strip() or result.stdout.strip() or 'DVC said nothing'}")
        by_folder: dict[str, list[str]] = {}
        for entry in json.loads(result.stdout or "[]"):
            top, _, rest = entry["path"].partition("/")
            if rest and entry.get("md5"):
                by_folder.setdefault(top, []).append(f"{rest}\t{entry['md5']}")
        return {top: hashlib.md5("\n".join(sorted(lines)).encode()).hexdigest() for top, lines in by_folder.items()}

    def git_state(self) -> tuple[str, bool | None]:
        """(HEAD commit, dirty) of the project's git repository.

        Dirty means tracked or new (not ignored) files other than DVC pointers
        differ from HEAD: the code that made the artifact is not exactly the
        commit. Pointers (``*.dvc``, and the ``.gitignore`` entries DVC adds)
        are left out, as each run rewrites them and they are what the next
        commit records. ("", None) outside git.
        """
        def git(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True, timeout=120)

        try:
            status = git("status", "--porcelain", "-z", "--untracked-files=normal")
        except (OSError, subprocess.TimeoutExpired):
            return "", None
        if status.returncode != 0:
            return "", None
        head = git("rev-parse", "--verify", "--quiet", "HEAD")
        entries = [e[3:] for e in status.stdout.split("\0") if len(e) > 3]
        dirty = any(not (name.endswith(".dvc") or Path(name).name == ".gitignore") for name in entries)
        return (head.stdout.strip() if head.returncode == 0 else ""), dirty

    def track(self, path: Path) -> Versioned:
        """``dvc add`` then push it with the pointers beside it; the local artifact is kept whatever the push does.

        The pointers beside ``artifacts/<dataset>/x.dvc`` are the partition's
        other artifacts, so a push that failed earlier is retried here; for
        ``data.dvc`` it is the data folder alone.
        """
        commit, dirty = self.git_state()
        dvc_file, md5, size = self.add(path)
        siblings = sorted(dvc_file.parent.glob("*.dvc"))
        pushed, message = self.push_targets([dvc_file, *siblings])
        return Versioned(path, dvc_file, md5, size, pushed, message, commit, dirty)
