"""The main job's short terminal view of a Dagster CLI run, on lines in Dagster's console format."""

from __future__ import annotations

import io

from fmn_assets.console import RunView, parse

RUN = "9a06532e-3816-43bb-9125-0b946aba7421"
PREFIX = f"2026-11-24 20:48:31 +0000 - dagster - {{level}} - __ASSET_JOB - {RUN} - "
LINES = [PREFIX.format(level=level) + rest + "\n" for level, rest in [
    ("DEBUG", "26868 - RUN_START - Started execution of run for \"__ASSET_JOB\"."),
    ("DEBUG", "26929 - grn_checkpoint - RESOURCE_INIT_STARTED - Starting initialization of resources [dvc, paths]."),
    ("DEBUG", "26929 - grn_checkpoint - STEP_START - Started execution of step \"grn_checkpoint\"."),
    ("INFO", "grn_checkpoint - stage 1 epoch 1/2: lr 0.05, loss 4.1, acc 0.1, images 1312, images_per_s 143.6"),
    ("INFO", "grn_checkpoint - stage 1 epoch 2/2: lr 0.05, loss 2.5, acc 0.4, images 1312, images_per_s 150.2"),
    ("DEBUG", "26929 - grn_checkpoint - STEP_SUCCESS - Finished execution of step \"grn_checkpoint\" in 23.69s."),
    ("DEBUG", "27230 - grn_checkpoint_loads - ASSET_CHECK_EVALUATION - Asset check 'grn_checkpoint_loads' on "
              "'grn_checkpoint' passed."),
    ("ERROR", "27397 - fmn_checkpoint - STEP_FAILURE - Execution of step \"fmn_checkpoint\" failed."),
]] + ["\n", "dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred\n", "\n",
      "Failure: cannot use the GRN checkpoint of 'synthetic': truncated\n", "\n", "Stack Trace:\n",
      "  File \"x.py\", line 1, in f\n", "    secret internals\n",
      PREFIX.format(level="ERROR") + "26868 - RUN_FAILURE - Execution of run failed.\n"]


def test_lines_are_split_into_step_event_and_message():
    record = parse(LINES[2])
    assert (record.level, record.step, record.event) == ("DEBUG", "grn_checkpoint", "STEP_START")
    user = parse(LINES[3])
    assert user.event == "" and user.step == "grn_checkpoint" and user.message.startswith("stage 1 epoch 1/2")
    assert parse(LINES[0]).event == "RUN_START" and parse(LINES[0]).step == ""
    assert parse("  File \"x.py\", line 1\n") is None


def test_short_view_keeps_steps_checks_epochs_and_errors_and_logs_everything():
    log, out = io.StringIO(), io.StringIO()
    RunView(log, out=out).feed(LINES)
    shown = out.getvalue().splitlines()
    assert log.getvalue() == "".join(LINES)  # the file gets every line, DEBUG included
    assert shown[:4] == ["[fmn] grn_checkpoint ...",
                         "[fmn]   stage 1 epoch 1/2: loss 4.1, acc 0.1, images_per_s 143.6",
                         "[fmn]   stage 1 epoch 2/2: loss 2.5, acc 0.4, images_per_s 150.2",
                         "[fmn] grn_checkpoint done in 23.69s"]
    assert "[fmn]   Asset check 'grn_checkpoint_loads' on 'grn_checkpoint' passed." in shown
    assert any("truncated" in line for line in shown)  # the error a user needs
    assert not any("RESOURCE_INIT" in line or "secret internals" in line for line in shown)
    assert shown[-1] == "[fmn] RUN_FAILURE: Execution of run failed."
