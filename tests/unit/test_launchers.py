"""The torchrun command lines a training step runs, per launcher (fmn_assets/execution/launchers.py)."""

from __future__ import annotations

import subprocess

import pytest

from fmn_assets.execution.launchers import RENDEZVOUS_PORT, torchrun_command

ENTRY = ["-m", "fmn_assets.execution.torchrun_entry", "--stage", "1"]


def test_one_node_is_torchrun_standalone_on_this_host():
    assert torchrun_command("torchrun", ENTRY, processes=2) == ["torchrun", "--standalone", "--nproc_per_node", "2",
                                                                *ENTRY]


def test_srun_starts_one_torchrun_per_node_meeting_on_the_allocations_first_node(tmp_path):
    command = torchrun_command("/venv/bin/torchrun", ENTRY, processes=4, nodes=2, launcher="srun",
                               launch_command=["--partition=gpu"], rendezvous_id="run1-stage1")
    assert command[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                           "--partition=gpu"]
    script, torchrun, *rest = command[8:]
    assert command[6:8] == ["sh", "-c"] and torchrun == "/venv/bin/torchrun"
    assert rest == ["--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-id=run1-stage1",
                    "--max-restarts=0", *ENTRY]
    # the task's shell puts the rendezvous before the other options: run it with Slurm's node-list expansion
    # stood in for by a script (no Slurm here) and echo for torchrun
    scontrol = tmp_path / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$1 $2 $3" = "show hostnames node[7-8]" ] && printf "node7\\nnode8\\n"\n')
    scontrol.chmod(0o755)
    shown = subprocess.run(["sh", "-c", script, "echo", "--nnodes=2"], capture_output=True, text=True, check=True,
                           env={"SLURM_JOB_NODELIST": "node[7-8]", "PATH": f"{tmp_path}:/usr/bin:/bin"}).stdout
    assert shown.split() == [f"--rdzv-endpoint=node7:{RENDEZVOUS_PORT}", "--nnodes=2"]


def test_srun_with_a_named_rendezvous_needs_no_shell():
    command = torchrun_command("torchrun", ENTRY, 1, nodes=3, launcher="srun", rendezvous="head")
    assert "sh" not in command and f"--rdzv-endpoint=head:{RENDEZVOUS_PORT}" in command


def test_a_launch_command_prefixes_torchrun():
    command = torchrun_command("torchrun", ENTRY, 1, nodes=2, launcher="command",
                               launch_command=["pdsh", "-w", "a,b"], rendezvous="a:29500")
    assert command[:4] == ["pdsh", "-w", "a,b", "torchrun"] and "--rdzv-endpoint=a:29500" in command


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"nodes": 2}, "needs a launcher"),
    ({"nodes": 2, "launcher": "command", "rendezvous": "a"}, "needs launch_command"),
    ({"nodes": 2, "launcher": "command", "launch_command": ["pdsh"]}, "needs rendezvous"),
    ({"nodes": 0}, "at least 1"),
])
def test_incomplete_settings_say_what_is_missing(kwargs, message):
    with pytest.raises(ValueError, match=message):
        torchrun_command("torchrun", ENTRY, 1, **kwargs)


def test_an_unknown_launcher_is_refused():
    with pytest.raises(ValueError, match="'mpirun' is not a valid Launcher"):
        torchrun_command("torchrun", ENTRY, 1, nodes=2, launcher="mpirun")
