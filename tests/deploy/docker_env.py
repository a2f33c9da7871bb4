"""A private Docker for the image test: its own daemon, a base image made from Debian's packages, and the host's
pip indexes served on loopback to the build.

Nothing of the machine's Docker or network is used or changed: the daemon has its own data root, socket and exec
root, no bridge and no iptables rules (builds and containers use ``--network host``), and it is stopped by its
process id and its folder removed afterwards, images included. No registry is needed: the base is
``debootstrap --variant=minbase`` of bookworm (python3 3.11, venv, CA certificates, git) imported as an image, with
the host's CA bundle, so pip in the build trusts what the host's pip trusts.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

#: What the image's base needs: the interpreter requirements.lock is resolved for, venv, TLS roots and git (DVC).
BASE_PACKAGES = "python3,python3-venv,ca-certificates,git"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def missing_requirements() -> str | None:
    """Why this machine cannot run the image test, or None."""
    if os.geteuid() != 0:
        return "the image test starts its own dockerd and needs root"
    for tool in ("dockerd", "docker", "debootstrap"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (apt-get install docker.io debootstrap)"
    return None


class DockerDaemon:
    """``dockerd`` with its own data root and socket under ``folder``; :meth:`docker` runs the client against it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "docker.sock"
        self.log = folder / "dockerd.log"
        self.process: subprocess.Popen | None = None

    def start(self, seconds: float = 60) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["dockerd", "--data-root", str(self.folder / "data"), "--exec-root", str(self.folder / "exec"),
                   "-H", f"unix://{self.socket}", "--pidfile", str(self.folder / "docker.pid"),
                   "--bridge=none", "--iptables=false", "--ip-masq=false"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + seconds
        while self.docker("info", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dockerd did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)

    def docker(self, *args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def stop(self) -> None:
        """Stop the daemon (and its containerd) by process group, unmount what it left, remove its folder."""
        if self.process is not None and self.process.poll() is None:
            for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
                try:
                    self.process.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with contextlib.suppress(ProcessLookupError):  # containerd and shims share the group
            os.killpg(self.process.pid, signal.SIGKILL) if self.process else None
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.folder))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def build_debian_base(daemon: DockerDaemon, root: Path, name: str) -> float:
    """debootstrap a minimal bookworm into ``root`` and import it as image ``name``; returns the seconds taken."""
    started = time.monotonic()
    result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(root),
                             DEBIAN_MIRROR], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise AssertionError(f"debootstrap failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    if HOST_CA_BUNDLE.is_file():  # the roots the host's pip verifies its index with (a TLS proxy's, say)
        shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = daemon.docker("import", "-", name, stdin=tar.stdout)
    tar.wait(timeout=60)
    assert tar.returncode == 0 and imported.returncode == 0
    shutil.rmtree(root, ignore_errors=True)
    return time.monotonic() - started


def host_pip_indexes() -> tuple[str | None, list[str]]:
    """The host pip's index-url and extra-index-url settings (environment and config files, as pip reads them)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=False).stdout
    index, extra = None, []
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"")
        if key.endswith(".index-url") and not key.endswith("extra-index-url"):
            index = value
        elif key.endswith(".extra-index-url"):
            extra += value.split()
    return index, extra


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        return


@contextlib.contextmanager
def pip_build_args() -> Iterator[list[str]]:
    """``--build-arg`` options that give pip in the build the host's indexes: an http(s) index as it is, a
    ``file://`` index (a wheel mirror on the host's disk) served read-only on 127.0.0.1 while the build runs."""
    index, extra = host_pip_indexes()
    servers: list[socketserver.TCPServer] = []
    urls: list[str] = []
    try:
        for url in ([index] if index else []) + extra:
            parsed = urlparse(url)
            if parsed.scheme != "file":
                urls.append(url)
                continue
            folder = Path(parsed.path.rstrip("/"))
            if not folder.is_dir():
                continue
            handler = functools.partial(_QuietHandler, directory=str(folder.parent))
            server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            urls.append(f"http://127.0.0.1:{server.server_address[1]}/{folder.name}/")
        args = ["--build-arg", "PIP_TRUSTED_HOST=127.0.0.1"]
        if index and urlparse(index).scheme != "file":
            args += ["--build-arg", f"PIP_INDEX_URL={index}"]
            urls.remove(index)
        if urls:
            args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={' '.join(urls)}"]
        yield args
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
