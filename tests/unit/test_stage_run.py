"""The parts of a training stage, each alone: the resume decision, what an epoch leaves behind, the finish.

Training itself (both stages end to end, a resumed run ending bit-identical to an uninterrupted one) is in
tests/integration/test_training.py; these tests hand each part a tiny untrained network and check the files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from fmn_core.engine import load_checkpoint, load_recipe
from fmn_core.engine.checkpoint import build_model
from fmn_core.engine.progress import read_metrics_log
from fmn_core.engine.recipes import config_file
from fmn_core.engine.trainer import (
    RUNTIME_FIELDS,
    StageFiles,
    _resumable_state,
    _StageRun,
    build_optimizer,
    build_scheduler,
)

CLASSES = 4
EXTRA = {"train_fingerprint": "abc"}


@pytest.fixture
def config():
    return load_recipe("paper", arch="resnet18", pretrained="none", input_height=64, input_width=32, crop_pad=3,
                       stage1_epochs=3, stage1_lr_drop_epoch=2)


def _run(config, out: Path, seed: int = 0) -> _StageRun:
    torch.manual_seed(seed)
    model = build_model(config, CLASSES)
    optimizer = build_optimizer(model, config, 1)
    return _StageRun(1, config, model, optimizer, build_scheduler(optimizer, config, 1), StageFiles.of(out, 1),
                     {pid: pid for pid in range(CLASSES)}, dict(EXTRA))


def _row(epoch: int) -> dict:
    return {"stage": 1, "epoch": epoch, "lr": 0.1, "loss": 1.0 / epoch, "acc": 0.5, "images": 8, "seconds": 0.1,
            "images_per_s": 80.0}


def _partial(config, out: Path, epoch: int = 1, extra: dict = EXTRA) -> _StageRun:
    """A partial checkpoint after ``epoch`` epochs of a run with ``config`` and ``extra``."""
    run = _run(config, out, seed=1)
    run.extra = dict(extra)
    run.history = [_row(e) for e in range(1, epoch + 1)]
    run.save(run.files.partial, epoch, complete=False)
    return run


def test_the_files_of_each_stage():
    assert StageFiles.of(Path("out"), 1) == StageFiles(Path("out/grn.pt"), Path("out/grn.partial.pt"),
                                                       Path("out/stage1_metrics.jsonl"))
    assert StageFiles.of(Path("out"), 2).partial == Path("out/fmn.partial.pt")


def test_a_partial_checkpoint_of_this_run_is_resumed_with_its_weights_epoch_and_history(tmp_path, config):
    earlier = _partial(config, tmp_path, epoch=2)
    state = _resumable_state(StageFiles.of(tmp_path, 1), 1, config, EXTRA)
    assert state is not None
    run = _run(config, tmp_path)
    run.resume_from(state)
    assert (run.start_epoch, run.history) == (2, earlier.history)
    for key, value in earlier.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[key], value), key


@pytest.mark.parametrize("field", sorted(RUNTIME_FIELDS))
def test_a_runtime_setting_may_change_between_a_run_and_its_resumption(tmp_path, config, field):
    _partial(config, tmp_path)
    changed = {"device": "cpu", "decode_workers": 3, "checkpoint_every": 2}[field]
    assert _resumable_state(StageFiles.of(tmp_path, 1), 1, config.replace(**{field: changed}), EXTRA) is not None


@pytest.mark.parametrize(("what", "stage", "changes", "extra"), [
    ("other settings", 1, {"stage1_lr": 0.05}, EXTRA),
    ("other training data", 1, {}, {"train_fingerprint": "other"}),
    ("another stage's checkpoint", 2, {}, EXTRA),
])
def test_a_mismatching_partial_checkpoint_is_trained_over_with_a_warning(tmp_path, config, caplog, what, stage,
                                                                        changes, extra):
    _partial(config, tmp_path)
    files = StageFiles.of(tmp_path, 1)
    with caplog.at_level(logging.WARNING, logger="fmn_core.engine.trainer"):
        assert _resumable_state(files, stage, config.replace(**changes), extra) is None, what
    assert f"partial checkpoint {files.partial} was made with other settings or data; starting over" in caplog.text
    assert files.partial.is_file()  # kept until the finish replaces it


def test_an_unreadable_partial_checkpoint_is_trained_over_and_a_missing_one_is_no_question(tmp_path, config, caplog):
    files = StageFiles.of(tmp_path, 1)
    assert _resumable_state(files, 1, config, EXTRA) is None and not caplog.text
    files.partial.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="fmn_core.engine.trainer"):
        assert _resumable_state(files, 1, config, EXTRA) is None
    assert "ignoring unreadable partial checkpoint" in caplog.text


def test_an_epoch_keeps_its_row_and_a_partial_checkpoint_every_checkpoint_every_epochs_but_the_last(tmp_path, config):
    run = _run(config.replace(checkpoint_every=2), tmp_path)
    run.record(_row(1), is_main=True, progress=False)
    assert not run.files.partial.exists() and read_metrics_log(run.files.metrics) == [_row(1)]
    run.record(_row(2), is_main=True, progress=False)
    state = load_checkpoint(run.files.partial)
    assert (state["epoch"], state["complete"], state["history"]) == (2, False, [_row(1), _row(2)])
    run.files.partial.unlink()
    run.record(_row(3), is_main=True, progress=False)  # 3 epochs: the last one writes the finished checkpoint instead
    assert not run.files.partial.exists() and len(read_metrics_log(run.files.metrics)) == 3


def test_another_rank_keeps_the_row_and_writes_nothing(tmp_path, config):
    run = _run(config.replace(checkpoint_every=1), tmp_path)
    run.record(_row(1), is_main=False, progress=True)
    assert run.history == [_row(1)] and not any(tmp_path.iterdir())


def test_the_finish_writes_the_checkpoint_and_its_recipe_and_removes_the_partial(tmp_path, config):
    run = _partial(config, tmp_path, epoch=2)
    run.history.append(_row(3))
    run.finish({"mean": 1.5})
    state = load_checkpoint(run.files.final)
    assert (state["stage"], state["epoch"], state["complete"]) == (1, 3, True)
    assert state["history"] == run.history and state["diagnostics"] == {"mask": {"mean": 1.5}}
    assert state["extra"] == EXTRA and state["label_map"] == run.label_map
    assert load_recipe(config_file(run.files.final)) == config  # a recipe that trains the same run again
    assert not run.files.partial.exists()
    assert read_metrics_log(run.files.metrics) == run.history


def test_a_finish_without_diagnostics_records_none(tmp_path, config):
    run = _run(config, tmp_path)
    run.finish(None)
    assert load_checkpoint(run.files.final)["diagnostics"] == {}


def test_each_stage_records_its_own_thread_counts(config, tmp_path):
    """A run resumed under another FMN_THREADS names both counts; stage 2 carries the GRN's beside its own."""
    from fmn_core.export.model_card import _threads_sentence

    run = _run(config, tmp_path)
    run.history = [{**_row(1), "threads": 1}, {**_row(2), "threads": 2}, {**_row(3), "threads": 2}]
    run.save(run.files.final, 3, complete=True)
    assert load_checkpoint(run.files.final)["threads"] == {"stage1": [1, 2]}
    stage2 = _run(config, tmp_path / "fmn")
    stage2.stage, stage2.threads_before = 2, {"stage1": [1, 2]}
    stage2.history = [{**_row(1), "stage": 2, "threads": 2}]
    assert stage2.threads == {"stage1": [1, 2], "stage2": [2]}
    sentence = _threads_sentence(stage2.threads)
    assert "stage 1 (GRN) 1 then 2" in sentence and "stage 2 (MN + LAN) 2" in sentence
    assert "not recorded" in _threads_sentence({})  # a checkpoint from before the record says so, not a guess
