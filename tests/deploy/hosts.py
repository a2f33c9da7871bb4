"""Two hosts on one machine: two network namespaces joined by a veth pair, each with its own address, host name and
``/etc/hosts``, and processes started inside them.

What the hosts share is what pods of one deployment would share: the file system (the artifact volume, the DVC
remote, the Dagster instance's storage). Nothing else: each process sees only its namespace's network, so a step
that ran on host B reached the broker over the veth link, not over loopback. Everything is created here and removed
by :meth:`TwoHosts.remove`: the namespaces (and with them the veth pair), and every process started, by process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def missing_requirements() -> str | None:
    """Why this machine cannot make the two hosts, or None."""
    if os.geteuid() != 0:
        return "the two-host tests create network namespaces and need root"
    for tool in ("ip", "nsenter", "unshare", "hostname", "mount"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    probe = subprocess.run(["unshare", "-n", "-m", "-u", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"this machine refuses new namespaces: {probe.stderr.strip()}"
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    hosts_file: Path


@dataclass
class TwoHosts:
    """``a`` and ``b``, at 10.231.N.1 and 10.231.N.2 (N from the process id, so parallel test runs do not meet)."""

    folder: Path
    a: Host = field(init=False)
    b: Host = field(init=False)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        tag = f"{os.getpid() % 10000}"
        subnet = f"10.231.{os.getpid() % 250 + 1}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.a = Host("fmn-host-a", f"fmn-a-{tag}", f"{subnet}.1", self.folder / "hosts-a")
        self.b = Host("fmn-host-b", f"fmn-b-{tag}", f"{subnet}.2", self.folder / "hosts-b")

    def create(self) -> None:
        a, b = self.a, self.b
        veth_a, veth_b = f"veth{a.namespace[-9:]}", f"veth{b.namespace[-9:]}"
        commands = [["ip", "netns", "add", a.namespace], ["ip", "netns", "add", b.namespace],
                    ["ip", "link", "add", veth_a, "type", "veth", "peer", "name", veth_b],
                    ["ip", "link", "set", veth_a, "netns", a.namespace],
                    ["ip", "link", "set", veth_b, "netns", b.namespace]]
        for host, veth in ((a, veth_a), (b, veth_b)):
            commands += [["ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", veth],
                         ["ip", "-n", host.namespace, "link", "set", veth, "up"],
                         ["ip", "-n", host.namespace, "link", "set", "lo", "up"]]
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                self.remove()
                raise AssertionError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        table = f"127.0.0.1 localhost\n{a.address} {a.name}\n{b.address} {b.name}\n"
        for host in (a, b):  # each host resolves its own name to its own address, as torchrun and Celery expect
            host.hosts_file.write_text(table)

    def command(self, host: Host, argv: list[str]) -> list[str]:
        """``argv`` run on ``host``: in its network namespace, with its host name and its /etc/hosts."""
        setup = f'mount --bind {host.hosts_file} /etc/hosts && hostname {host.name} && exec "$@"'
        return ["nsenter", f"--net=/run/netns/{host.namespace}", "unshare", "-m", "-u", "--propagation", "private",
                "sh", "-c", setup, "sh", *argv]

    def start(self, host: Host, argv: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        """Start ``argv`` on ``host`` in its own process group, output to ``log``; stopped by :meth:`remove`."""
        with log.open("ab") as out:
            process = subprocess.Popen(self.command(host, argv), stdout=out, stderr=subprocess.STDOUT, env=env,
                                       cwd=cwd, start_new_session=True)
        self.processes.append(process)
        return process

    def run(self, host: Host, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(host, argv), capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=timeout, check=False)

    @staticmethod
    def stop(process: subprocess.Popen, grace: float = 20) -> None:
        """SIGTERM to the process and everything below it (a Celery worker's pool, a daemon that left its process
        group), by process id; SIGKILL to what is left after ``grace``."""
        try:
            root = psutil.Process(process.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        _terminate(tree, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def remove(self) -> None:
        """Stop every process started here, then any process still inside the namespaces (only this test can
        have put it there), then delete the namespaces and with them the veth pair."""
        for process in reversed(self.processes):
            self.stop(process)
        for host in (self.a, self.b):
            listed = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True,
                                    check=False).stdout.split()
            left = []
            for pid in listed:
                with contextlib.suppress(psutil.NoSuchProcess):
                    left.append(psutil.Process(int(pid)))
            _terminate(left, 10)
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, check=False)


def _terminate(processes: list[psutil.Process], grace: float) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)
