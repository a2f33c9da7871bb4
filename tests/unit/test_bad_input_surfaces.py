"""Bad input on the newer surfaces: the --out lock, limits, recipe files, FMN_* variables, run configs, executors.

Real files, real processes and a real Dagster run where the behaviour depends on them. The bad-input table of
docs/operations.md has a row for each case.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import dagster as dg
import pytest

from fmn_core.cli import main as fmn_main
from fmn_core.engine.out_lock import LOCK_NAME, TrainingOutputError, training_output
from fmn_core.engine.recipes import load_recipe
from fmn_core.utils.errors import FMNInputError
from tests.helpers import market

REPO = Path(__file__).resolve().parents[2]


def fmn(*args: object) -> tuple[int, str]:
    """The `fmn` command in this process: (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = fmn_main([str(a) for a in args])
    return code, out.getvalue()


def train_args(root: Path, out: Path, *sets: str) -> list[str]:
    """`fmn train-stage1` on a minimal Market-1501 folder, the CPU recipe without downloads."""
    return ["train-stage1", "--dataset", "market1501", "--root", str(root), "--config", "cpu", "--set",
            "pretrained=none", "--set", "device=cpu", *[a for s in sets for a in ("--set", s)], "--out", str(out)]


# -- the --out lock -------------------------------------------------------------------------------------------


def test_a_lock_that_is_a_symbolic_link_is_refused_and_its_target_is_unchanged_byte_for_byte(tmp_path):
    precious = tmp_path / "elsewhere" / "thesis.tex"
    precious.parent.mkdir()
    content = b"\\documentclass{article} % a user's file outside --out\n" * 50
    precious.write_bytes(content)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(precious)
    code, text = fmn(*train_args(market(tmp_path / "market"), out))
    assert code == 2 and f"{LOCK_NAME} is a symbolic link (to {precious})" in text and "nothing was changed" in text
    assert precious.read_bytes() == content  # byte for byte
    assert (out / LOCK_NAME).is_symlink() and os.readlink(out / LOCK_NAME) == str(precious)  # the link stays too
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_a_lock_with_a_second_hard_link_or_of_another_kind_is_refused_untouched(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    other = tmp_path / "notes.txt"
    other.write_text("a second name for the same file\n")
    os.link(other, out / LOCK_NAME)
    with pytest.raises(TrainingOutputError, match="has 2 hard links"), training_output(out, stage=1):
        pass
    assert other.read_text() == "a second name for the same file\n" and (out / LOCK_NAME).exists()
    (out / LOCK_NAME).unlink()
    os.mkfifo(out / LOCK_NAME)  # would block an open without O_NONBLOCK
    with pytest.raises(TrainingOutputError, match="is not a regular file"), training_output(out, stage=1):
        pass
    (out / LOCK_NAME).unlink()
    with training_output(out, stage=1):  # fmn's own lock: created, then removed
        assert (out / LOCK_NAME).is_file()
    assert not (out / LOCK_NAME).exists()


# -- limits that are limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting, expect", [
    ("stage1_epochs=99999999999999999999999", "stage1_epochs=1e+23: must lie in 0..1000"),
    ("batch_size=100000", "batch_size=100000: must lie in 1..4096"),
    ("input_height=100000", "input_height=100000: must lie in 32..1024"),
    ("stage1_lr=1000", "stage1_lr=1000.0: must lie in (0, 10]"),
    ("lr_gamma=3", "lr_gamma=3.0: must lie in (0, 1]"),
    ("weight_decay=5", "weight_decay=5.0: must lie in 0..1"),
    ("log_mask_max=1000", "log_mask_max=1000.0: must lie in (0, 10]"),
    ("decode_workers=100000", "decode_workers=100000: must lie in 0..256"),
    ("crop_pad=40", "crop_pad=40: must be below half the smaller input side (64 pixels)"),
])
def test_impossible_training_values_are_refused_naming_the_field_value_and_range(tmp_path, setting, expect):
    out = tmp_path / "run"
    code, text = fmn(*train_args(market(tmp_path / "market"), out, setting))
    assert code == 2 and expect in text, text
    assert not out.exists()  # nothing created, no stale lock


def test_a_recipe_file_with_an_impossible_epoch_count_is_refused(tmp_path):
    recipe = tmp_path / "forever.yaml"
    recipe.write_text("base: cpu\nstage1_epochs: 99999999999999999999999\n")
    with pytest.raises(FMNInputError, match=r"forever.yaml.*stage1_epochs=1e\+23: must lie in 0..1000"):
        load_recipe(recipe)


def test_more_threads_than_cores_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_THREADS", "999")
    out = tmp_path / "run"
    code, text = fmn(*train_args(market(tmp_path / "market"), out))
    cores = len(os.sched_getaffinity(0))
    assert code == 2 and f"FMN_THREADS=999: this process may use {cores} CPU core(s); expected 1 to {cores}" in text
    assert not out.exists()


# -- recipe files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, expect", [
    ("empty.yaml", b"", "recipe file {path} is empty; a recipe is a YAML mapping of training options"),
    ("comments.yaml", b"# only a comment\n", "recipe file {path} is empty"),
    ("latin1.yaml", "arch: café\n".encode("latin-1"), "recipe file {path} is not UTF-8 text (byte 9 is 0xe9)"),
    ("binary.yaml", bytes(range(256)), "recipe file {path} is not UTF-8 text (byte 128 is 0x80)"),
    ("list.yaml", b"- cpu\n", "expected a mapping of training options, got list"),
])
def test_a_recipe_file_that_is_not_a_recipe_is_named_with_what_a_recipe_looks_like(tmp_path, name, content, expect):
    path = tmp_path / name
    path.write_bytes(content)
    code, text = fmn(*[*train_args(market(tmp_path / "market"), tmp_path / "run")[:5], "--config", path, "--out",
                       tmp_path / "run"])
    assert code == 2 and expect.format(path=path) in text, text
    assert path.read_bytes() == content


def test_a_folder_given_as_the_recipe_says_it_is_a_folder(tmp_path):
    folder = tmp_path / "recipes.yaml"
    folder.mkdir()
    for spec in (folder, tmp_path):
        with pytest.raises(FMNInputError, match=rf"recipe {spec} is a folder; give a recipe"):
            load_recipe(spec)


def test_on_off_variables_refuse_other_words(tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_OFFLINE", "maybe")
    code, text = fmn(*train_args(market(tmp_path / "market"), tmp_path / "run"))
    assert code == 2 and "FMN_OFFLINE='maybe': expected one of 1, true, yes, on (on) or 0, false, no, off" in text
    monkeypatch.setenv("FMN_OFFLINE", "1")
    monkeypatch.setenv("FMN_DEBUG", "sometimes")
    code, text = fmn("inspect", "market1501", market(tmp_path / "market2"))
    assert code == 2 and "FMN_DEBUG='sometimes'" in text


def _attempts(result: dg.ExecuteInProcessResult, step: str) -> tuple[int, list[str]]:
    """How many times ``step`` started, and its failure messages."""
    starts = [e for e in result.all_events if e.event_type_value == "STEP_START" and e.step_key == step]
    failures = [e.event_specific_data.error for e in result.all_events
                if e.event_type_value == "STEP_FAILURE" and e.step_key == step]
    return len(starts), [f"{e.message} {e.cause.message if e.cause else ''}" for e in failures]


def _project_with_splits(tmp_path: Path):
    from fmn_assets.resources import DVCResource, ProjectPaths
    from fmn_core.data import read_dataset

    paths = ProjectPaths(project_dir=str(tmp_path / "project"))
    read_dataset("market1501", market(tmp_path / "market")).save(paths.splits("synthetic"))
    return {"paths": paths, "dvc": DVCResource()}


@pytest.mark.parametrize("config, expect", [
    ({"nodes": 0}, "GRNTrainingConfig: nodes=0: Input should be greater than or equal to 1"),
    ({"overrides": {"stage1_epochs": 5000}}, "stage1_epochs=5000: must lie in 0..1000"),
    ({"nodes": 2, "launcher": "command", "rendezvous": "localhost:1", "launch_command": ["true"]},
     "no stage 1 training ran: `true "),
])
def test_a_training_step_does_not_retry_an_input_error(tmp_path, config, expect):
    """Launched without the main job's pre-flight check (the UI, automation): one attempt, the reason named."""
    from fmn_assets.assets.training import grn_checkpoint

    result = dg.materialize([grn_checkpoint], partition_key="synthetic", resources=_project_with_splits(tmp_path),
                            run_config={"ops": {"grn_checkpoint": {"config": config}}}, raise_on_error=False)
    attempts, failures = _attempts(result, "grn_checkpoint")
    assert attempts == 1 and len(failures) == 1 and expect in failures[0], failures
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    if "launch_command" in config:
        assert "launch_command must start its argument (the torchrun command) once on each node" in failures[0]
