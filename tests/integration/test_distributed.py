"""DistributedDataParallel on CPU: two gloo processes launched by the real torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmn_core.data.synthetic import generate_synthetic, read_metadata
from fmn_core.engine import TrainConfig, load_checkpoint
from fmn_core.engine.progress import read_metrics_log
from fmn_core.engine.trainer import stage2_model

SETTINGS = ["input_height=64", "input_width=32", "batch_size=8", "crop_pad=3", "stage1_lr=0.02", "stage2_lr=0.02",
            "stage1_epochs=4", "stage1_lr_drop_epoch=3", "stage2_epochs=2", "stage2_lr_drop_epoch=2",
            "device=cpu", "decode_workers=1"]


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
               "-m", "fmn_core", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_two_process_gloo_training_both_stages(tmp_path):
    root = tmp_path / "synthetic"
    generate_synthetic(root, "tiny")
    out = tmp_path / "run"
    sets = [item for setting in SETTINGS for item in ("--set", setting)]
    torchrun(["train-stage1", "--dataset", "synthetic", "--root", str(root), "--preset", "cpu", *sets,
              "--out", str(out)], tmp_path)
    torchrun(["train-stage2", "--dataset", "synthetic", "--root", str(root), "--preset", "cpu", *sets,
              "--out", str(out), "--grn", str(out / "grn.pt")], tmp_path)

    stage1 = read_metrics_log(out / "stage1_metrics.jsonl")
    assert len(stage1) == 4 and stage1[-1]["loss"] < stage1[0]["loss"]
    # each rank takes half of every epoch's train images and drops its last partial batch of 8
    per_rank = read_metadata(root)["counts"]["train"]["images"] // 2
    assert stage1[0]["images"] == 2 * (per_rank // 8) * 8
    stage2 = read_metrics_log(out / "stage2_metrics.jsonl")
    assert len(stage2) == 2 and all(torch.isfinite(torch.tensor(row["loss"])) for row in stage2)

    state = load_checkpoint(out / "fmn.pt")
    config = TrainConfig.from_dict(state["config"])
    reference = stage2_model(load_checkpoint(out / "grn.pt"), config, state["num_classes"], "grn.pt").state_dict()
    assert {k: tuple(v.shape) for k, v in state["model"].items()} == {k: tuple(v.shape) for k, v in reference.items()}
