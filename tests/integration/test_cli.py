"""The command line, end to end, as a user runs it; and a real SIGKILL in the middle of training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fmn_core.data import read_dataset
from fmn_core.data.synthetic import generate_synthetic, read_metadata
from fmn_core.engine import load_checkpoint, load_recipe, preset, train_stage1

FAST = dict(input_height=64, input_width=32, batch_size=16, crop_pad=3, stage1_lr=0.02, stage2_lr=0.02, device="cpu",
            decode_workers=2)


def sets(**extra) -> list[str]:
    return [item for name, value in {**FAST, **extra}.items() for item in ("--set", f"{name}={value}")]


def fmn(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fmn_core", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert result.returncode == 0, f"fmn {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "synthetic"
    generate_synthetic(root, "tiny")
    return root


def test_train_extract_evaluate(tiny_root, tmp_path):
    data = ["--dataset", "synthetic", "--root", str(tiny_root)]
    fmn("inspect", "synthetic", str(tiny_root), "--out", str(tmp_path / "splits.parquet"), cwd=tmp_path)
    fmn("train-stage1", "--splits", str(tmp_path / "splits.parquet"), *sets(stage1_epochs=2),
        "--out", str(tmp_path / "run"), cwd=tmp_path)
    # Table 5's ablation: stage 2 masks another layer (res3) than the GRN was built with (the cpu recipe's res2)
    # ... from the configuration stage 1 wrote beside its checkpoint, used as the recipe
    fmn("train-stage2", *data, "--config", str(tmp_path / "run" / "grn.config.yaml"), "--set", "stage2_epochs=1",
        "--set", "masked_layer=res3", "--out", str(tmp_path / "run"), "--grn", str(tmp_path / "run" / "grn.pt"),
        cwd=tmp_path)
    assert load_checkpoint(tmp_path / "run" / "grn.pt")["config"]["masked_layer"] == "res2"
    fmn_config = load_checkpoint(tmp_path / "run" / "fmn.pt")["config"]
    assert fmn_config["masked_layer"] == "res3" and fmn_config["input_height"] == FAST["input_height"]
    assert load_recipe(tmp_path / "run" / "fmn.config.yaml").to_dict() == fmn_config
    out = fmn("extract", *data, "--checkpoint", str(tmp_path / "run" / "fmn.pt"), "--out",
              str(tmp_path / "desc.parquet"), "--flip", cwd=tmp_path)
    counts = read_metadata(tiny_root)["counts"]  # what the generator wrote: junk boxes are not descriptors
    assert f"{counts['query']['images'] + counts['gallery']['images']} descriptors" in out.stdout
    out = fmn("evaluate", str(tmp_path / "desc.parquet"), "--rerank", "--json", str(tmp_path / "m.json"), cwd=tmp_path)
    assert all(f"| {row} |" in out.stdout for row in ("GRN", "LAN", "FMN", "FMN + re-ranking"))
    assert "| queries (skipped) |" in out.stdout
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["FMN"]["valid_queries"] + metrics["FMN"]["skipped_queries"] == counts["query"]["images"]


def test_errors_are_one_clear_line(tiny_root, tmp_path):
    result = fmn("train-stage1", "--dataset", "market1501", "--root", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "o"), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = fmn("train-stage1", "--dataset", "synthetic", "--root", str(tmp_path), "--set", "arch=vgg",
                 "--out", str(tmp_path / "o"), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "arch='vgg'" in result.stderr
    (tmp_path / "bad.pt").write_bytes(b"broken")
    result = fmn("extract", "--dataset", "synthetic", "--root", str(tiny_root), "--checkpoint",
                 str(tmp_path / "bad.pt"), "--out", str(tmp_path / "d.parquet"), cwd=tmp_path, check=False)
    assert result.returncode == 2 and "bad.pt (6 bytes) is truncated, corrupt" in result.stderr
    assert not (tmp_path / "d.parquet").exists()


def test_sigkill_mid_stage_then_restart_matches_uninterrupted(tiny_root, tmp_path):
    settings = dict(stage1_epochs=6, stage1_lr_drop_epoch=4)
    config = preset("cpu", **FAST, **settings)
    straight = train_stage1(read_dataset("synthetic", tiny_root).table, config, tmp_path / "straight",
                            progress=False)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fmn_core", "train-stage1", "--dataset", "synthetic", "--root", str(tiny_root),
               *sets(**settings), "--out", str(out)]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = out / "grn.partial.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not partial.exists() and process.poll() is None:
        time.sleep(0.05)
    assert partial.exists(), "training never wrote a partial checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "grn.pt").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(partial)["epoch"]
    assert 1 <= killed_at < 6

    result = fmn("train-stage1", "--dataset", "synthetic", "--root", str(tiny_root), *sets(**settings),
                 "--out", str(out), cwd=tmp_path)
    assert "checkpoint written" in result.stdout
    resumed, uninterrupted = load_checkpoint(out / "grn.pt"), load_checkpoint(straight.checkpoint)
    assert resumed["history"][0]["loss"] == uninterrupted["history"][0]["loss"]
    for key, value in uninterrupted["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
