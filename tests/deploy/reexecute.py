"""Re-execute a failed run of the pipeline job from its failed steps (Dagster's "re-execute from failure"), on the
instance at $DAGSTER_HOME with the job's executor; prints the new run's id. Used by the Celery test on host A."""

from __future__ import annotations

import sys

import dagster as dg

from fmn_assets.main import pipeline_job


def main(parent_run_id: str) -> int:
    with dg.DagsterInstance.get() as instance:
        parent = instance.get_run_by_id(parent_run_id)
        if parent is None:
            raise SystemExit(f"no run {parent_run_id} on the instance at {instance.root_directory}")
        # execute_job does not carry the parent's partition over by itself (the UI's re-execution does)
        tags = {key: value for key, value in parent.tags.items() if key == "dagster/partition"}
        result = dg.execute_job(dg.reconstructable(pipeline_job), instance=instance, tags=tags,
                                reexecution_options=dg.ReexecutionOptions.from_failure(parent_run_id, instance))
        print(result.run_id)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
