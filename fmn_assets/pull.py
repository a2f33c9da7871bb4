"""``dvc pull`` that first says when the remote it would read from is a folder this machine does not have.

    python3 run.py pull                          # = .venv/bin/dvc pull, after the check
    python3 run.py pull data/synthetic -r team   # any dvc pull arguments

The project's default DVC remote is a folder in the home directory of the machine that pushed
(``~/.cache/fmn_reid/dvc-remote``). On a second machine, or under another ``HOME``, that folder does not exist,
and plain ``dvc pull`` ends in "Checkout failed ... Is your cache up to date?", the same words as for an object
that was never pushed. This command names the missing folder and how to point DVC at the team's remote, then
runs ``dvc pull`` unchanged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from fmn_assets.resources import project_dir

#: how to point DVC at a shared remote, for the message (docs/versioning.md has the whole round trip)
POINT_AT_TEAM_REMOTE = ("Point DVC at the remote the team pushes to, for this clone only: `.venv/bin/dvc remote add "
                        "--local -d team ssh://HOST/srv/fmn-dvc` (or s3://BUCKET/fmn, or a shared folder); see "
                        "docs/versioning.md")


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc), *args], cwd=root, capture_output=True, text=True, check=False)


def remotes(root: Path) -> tuple[dict[str, str], str]:
    """The configured remotes (name -> URL, as DVC resolves them) and the default remote's name ('' when none)."""
    names = [line.split()[0] for line in _dvc(root, "remote", "list").stdout.splitlines() if line.strip()]
    urls = {name: _dvc(root, "config", f"remote.{name}.url").stdout.strip() for name in names}
    default = _dvc(root, "remote", "default").stdout.strip()
    return urls, default if default in urls else ""


def local_folder(url: str, root: Path) -> Path | None:
    """The folder of a local remote (a path or file:// URL, relative to .dvc/ as DVC reads it); None otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file") or (parsed.scheme == "" and "://" in url):
        return None
    path = Path(parsed.path if parsed.scheme == "file" else url).expanduser()
    return path if path.is_absolute() else (root / ".dvc" / path).resolve()


def remote_problem(root: Path, remote: str | None) -> str:
    """Why ``dvc pull`` from ``remote`` (None: the default) cannot work on this machine; '' when it may."""
    urls, default = remotes(root)
    name = remote or default
    if not name:
        return f"no default DVC remote is configured in {root}. {POINT_AT_TEAM_REMOTE}"
    if name not in urls:
        return f"no DVC remote named {name!r} in {root} (configured: {', '.join(sorted(urls)) or 'none'})"
    folder = local_folder(urls[name], root)
    if folder is not None and not folder.is_dir():
        return (f"the DVC remote {name!r} is the folder {folder}, which does not exist on this machine: the data and "
                f"models are in that folder on the machine that pushed them. {POINT_AT_TEAM_REMOTE}, then run "
                "`python3 run.py pull` again")
    return ""


def _remote_argument(args: list[str]) -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--remote")
    known, _ = parser.parse_known_args(args)
    return known.remote


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = project_dir()
    problem = remote_problem(root, _remote_argument(args))
    if problem:
        print(f"[fmn] dvc pull not started: {problem}", file=sys.stderr)
        return 2
    return subprocess.call([str(Path(sys.executable).with_name("dvc")), "pull", *args], cwd=root)


if __name__ == "__main__":
    sys.exit(main())
