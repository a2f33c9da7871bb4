"""The main job's short terminal view, read from the events a real Dagster run stored in its instance."""

import io

import dagster as dg

from fmn_assets.console import RunFollower, RunView


@dg.asset
def grn_checkpoint(context: dg.AssetExecutionContext) -> None:
    context.log.debug("internals nobody needs on the terminal")
    for epoch in (1, 2):
        context.log.info(f"stage 1 epoch {epoch}/2: lr 0.05, loss {4.1 / epoch:.2f}, acc 0.{epoch}, images 1312, "
                         f"images_per_s 143.6")


@dg.asset_check(asset=grn_checkpoint, blocking=True)
def grn_checkpoint_loads() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(deps=[grn_checkpoint])
def fmn_checkpoint() -> None:
    raise dg.Failure(description="cannot use the GRN checkpoint of 'synthetic': truncated", allow_retries=False)


def _run(instance: dg.DagsterInstance, tags: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([grn_checkpoint, fmn_checkpoint, grn_checkpoint_loads], instance=instance,
                          raise_on_error=False, tags=tags)


def test_short_view_keeps_steps_checks_epochs_and_errors_and_logs_every_event():
    with dg.DagsterInstance.ephemeral() as instance:
        result = _run(instance)
        log, out = io.StringIO(), io.StringIO()
        RunView(log, out=out).feed(entry for entry in instance.all_logs(result.run_id))
    shown = out.getvalue().splitlines()
    assert shown[:3] == ["[fmn] grn_checkpoint ...",
                         "[fmn]   stage 1 epoch 1/2: loss 4.10, acc 0.1, images_per_s 143.6",
                         "[fmn]   stage 1 epoch 2/2: loss 2.05, acc 0.2, images_per_s 143.6",
                         ]
    assert any(line.startswith("[fmn] grn_checkpoint done in ") and line.endswith(" s") for line in shown)
    assert any("grn_checkpoint_loads" in line and "passed" in line for line in shown)
    failure = next(i for i, line in enumerate(shown) if line.startswith("[fmn] fmn_checkpoint: step failure"))
    assert "truncated" in " ".join(shown[failure:failure + 4])  # the error a user needs, without the stack trace
    assert not any("internals" in line or "RESOURCE_INIT" in line or "STEP_OUTPUT" in line for line in shown)
    assert shown[-1].startswith("[fmn] RUN_FAILURE: ")
    logged = log.getvalue()
    assert "internals nobody needs" in logged and "STEP_START" in logged and "truncated" in logged


def test_the_follower_shows_a_run_while_it_executes_and_stops_after_its_last_event():
    with dg.DagsterInstance.ephemeral() as instance:
        out = io.StringIO()
        follower = RunFollower(instance, ("fmn/main", "t1"), RunView(io.StringIO(), out=out), poll_s=0.05)
        follower.start()
        result = _run(instance, tags={"fmn/main": "t1"})
        follower.finish()
        other = _run(instance, tags={"fmn/main": "t2"})  # another run is not followed
    assert follower.run_id == result.run_id != other.run_id and not follower.is_alive()
    shown = out.getvalue().splitlines()
    assert shown[0] == "[fmn] grn_checkpoint ..." and shown[-1].startswith("[fmn] RUN_FAILURE: ")
    assert sum(line == "[fmn] grn_checkpoint ..." for line in shown) == 1  # each event shown once


def test_a_run_that_fails_outside_any_step_shows_its_reason():
    """An executor that cannot reach its broker fails the run in an engine event: its error reaches the terminal."""
    from dagster._core.events import EngineEventData
    from dagster._utils.error import SerializableErrorInfo

    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([grn_checkpoint], instance=instance)
        run = instance.get_run_by_id(result.run_id)
        error = SerializableErrorInfo("kombu.exceptions.OperationalError: Error 111 connecting to 127.0.0.1:6399.",
                                      stack=["a frame nobody needs"], cls_name="OperationalError")
        instance.report_engine_event("An exception was thrown during execution", run,
                                     EngineEventData(error=error))
        out = io.StringIO()
        RunView(io.StringIO(), out=out).feed(instance.all_logs(result.run_id))
    shown = out.getvalue()
    assert "[fmn] ENGINE_EVENT: An exception was thrown during execution" in shown
    assert "Error 111 connecting to 127.0.0.1:6399" in shown and "a frame nobody needs" not in shown
