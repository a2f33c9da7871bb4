"""A real two-node Slurm cluster on the two hosts of tests/deploy/hosts.py: munged, slurmctld on host A, one slurmd
per host, all from Debian's packages, with their own configuration, key, state and logs in one folder.

Nothing of the machine's Slurm or munge setup is read or changed: every daemon gets its files by option
(``SLURM_CONF``, munged's ``--socket`` / ``--key-file``), and each is stopped by its process group.
``proctrack/linuxproc`` and ``task/none``: the two slurmd share one kernel, so neither may claim the cgroups.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.deploy.hosts import TwoHosts

DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "sinfo", "scontrol")


def missing_requirements() -> str | None:
    for tool in DAEMONS:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).is_file():
            return f"no {tool} (apt-get install slurm-wlm munge)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    """Nodes ``fmn-host-a`` and ``fmn-host-b`` (2 CPUs each) in partition ``main``; :attr:`env` reaches them."""

    def __init__(self, hosts: TwoHosts, folder: Path) -> None:
        self.hosts, self.folder = hosts, folder
        self.conf = folder / "slurm.conf"
        self.munge_socket = folder / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a Slurm client (srun, sinfo) needs besides the usual environment: the cluster's configuration."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        a, b = self.hosts.a, self.hosts.b
        state = self.folder / "state"
        for sub in ("state", "munge", f"spool-{a.name}", f"spool-{b.name}", "logs"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "munge").chmod(0o700)
        self.conf.write_text(f"""\
ClusterName=fmntest
SlurmctldHost={a.name}({a.address})
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={self.folder}/spool-%n
SlurmctldPidFile={self.folder}/slurmctld.pid
SlurmdPidFile={self.folder}/slurmd-%n.pid
SlurmctldLogFile={self.folder}/logs/slurmctld.log
SlurmdLogFile={self.folder}/logs/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName={a.name} NodeAddr={a.address} CPUs=2 State=UNKNOWN
NodeName={b.name} NodeAddr={b.address} CPUs=2 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self, seconds: float = 90) -> None:
        self._write_config()
        key = self.folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        logs = self.folder / "logs"
        munge = self.folder / "munge"
        self.munged = subprocess.Popen(
            [_tool("munged"), "--foreground", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed", f"--log-file={logs}/munged.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        self.hosts.processes.append(self.munged)
        self._wait(lambda: self.munge_socket.exists(), seconds, "munged did not create its socket", logs / "munged.log")
        env = self.env
        self.hosts.start(self.hosts.a, [_tool("slurmctld"), "-D", "-i", "-f", str(self.conf)],
                         logs / "slurmctld.out", env=env)
        for host in (self.hosts.a, self.hosts.b):
            self.hosts.start(host, [_tool("slurmd"), "-D", "-N", host.name, "-f", str(self.conf)],
                             logs / f"slurmd-{host.name}.out", env=env)

        def both_idle() -> bool:
            listed = self.hosts.run(self.hosts.a, ["sinfo", "-h", "-N", "-o", "%N %t"], env=env, timeout=30)
            states = dict(line.split() for line in listed.stdout.splitlines() if len(line.split()) == 2)
            return states.get(self.hosts.a.name) == "idle" and states.get(self.hosts.b.name) == "idle"

        self._wait(both_idle, seconds, "the two slurmd did not register as idle nodes", logs)

    @staticmethod
    def _wait(ready, seconds: float, problem: str, log: Path) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                files = sorted(log.glob("*")) if log.is_dir() else [log]
                shown = "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}" for f in files
                                  if f.is_file())
                raise AssertionError(f"{problem} in {seconds} s:\n{shown}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}"
                         for f in sorted((self.folder / "logs").glob("*")) if f.is_file())
