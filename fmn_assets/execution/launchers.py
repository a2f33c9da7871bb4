"""How a training step starts torchrun: on this host, or across nodes through a scheduler's launcher.

``processes`` is torchrun's ``--nproc-per-node``; ``nodes`` is ``--nnodes``. One node: ``torchrun --standalone``
on the step's host. Several: every node runs one torchrun, and they meet at a c10d rendezvous:

- ``srun`` (Slurm): the step runs ``srun --nodes=N --ntasks-per-node=1 ...`` itself, so Slurm allocates the nodes
  (inside an ``salloc``/``sbatch`` allocation srun uses that one instead); the rendezvous is on the allocation's
  first node unless ``rendezvous`` names one.
- ``command``: ``launch_command`` is a prefix that starts its argument once on each node (``pdsh -w a,b``,
  ``mpirun -H a,b -npernode 1``, ``clush -w ...``); ``rendezvous`` (host:port on one of the nodes) is required.
- Kubernetes: ``fmn_assets.execution.k8s.multi_node_training_manifests`` writes the Indexed Job for the same command.

All nodes must see the same project folder (split table, checkpoints) and the same environment path; rank 0 alone
writes the checkpoint. Pure functions: tests/unit/test_launchers.py checks the commands.
"""

from __future__ import annotations

import shlex
from enum import StrEnum
from pathlib import Path

#: torchrun's c10d rendezvous port when only a host is known.
RENDEZVOUS_PORT = 29400


class Launcher(StrEnum):
    local = "local"
    srun = "srun"
    command = "command"


#: Inside each srun task: the allocation's first node is the rendezvous host (same answer on every node).
_SRUN_RENDEZVOUS = ('exec "$0" --rdzv-endpoint="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):'
                    f'{RENDEZVOUS_PORT}" "$@"')


def torchrun_command(torchrun: Path | str, entry_args: list[str], processes: int, nodes: int = 1,
                     launcher: Launcher | str = Launcher.local, launch_command: list[str] | None = None,
                     rendezvous: str = "", rendezvous_id: str = "fmn") -> list[str]:
    """The command line that runs ``torchrun ... entry_args`` on ``nodes`` nodes of ``processes`` processes."""
    launcher = Launcher(launcher)
    launch_command = list(launch_command or [])
    if processes < 1 or nodes < 1:
        raise ValueError(f"processes and nodes must be at least 1, got processes={processes}, nodes={nodes}")
    if nodes == 1 and launcher is Launcher.local:
        return [str(torchrun), "--standalone", "--nproc_per_node", str(processes), *entry_args]
    if launcher is Launcher.local:
        raise ValueError(f"nodes: {nodes} needs a launcher that starts torchrun on every node: srun (Slurm) or "
                         "command (with launch_command, e.g. [pdsh, -w, host1,host2]); local runs on this host only")
    if launcher is Launcher.command and not launch_command:
        raise ValueError("launcher: command needs launch_command, the prefix that starts its argument once per node")
    if launcher is Launcher.command and not rendezvous:
        raise ValueError("launcher: command needs rendezvous, host:port of torchrun's c10d store on one of the nodes")
    if rendezvous and ":" not in rendezvous:
        rendezvous = f"{rendezvous}:{RENDEZVOUS_PORT}"
    elastic = [f"--nnodes={nodes}", f"--nproc-per-node={processes}", "--rdzv-backend=c10d",
               f"--rdzv-id={rendezvous_id}", "--max-restarts=0"]
    if launcher is Launcher.command:
        return [*launch_command, str(torchrun), *elastic, f"--rdzv-endpoint={rendezvous}", *entry_args]
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
            *launch_command]
    if rendezvous:
        return [*srun, str(torchrun), *elastic, f"--rdzv-endpoint={rendezvous}", *entry_args]
    return [*srun, "sh", "-c", _SRUN_RENDEZVOUS, str(torchrun), *elastic, *entry_args]


def describe(command: list[str]) -> str:
    """The command as a shell line, for the step's log."""
    return shlex.join(command)
