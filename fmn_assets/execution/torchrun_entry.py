"""The process torchrun starts for a multi-process training step: fmn_core's training, reported through Pipes.

``grn_checkpoint`` / ``fmn_checkpoint`` with ``processes: N`` launch
``torchrun -m fmn_assets.execution.torchrun_entry --stage K --splits FILE --config FILE --out DIR [--grn FILE]``
through Dagster's ``PipesSubprocessClient``. The step's resolved configuration travels as a recipe file
(``fmn_core.engine.recipes.save_config``) and is read back by ``load_recipe``: one schema, no option strings to
print and parse again. Rank 0 opens the
Pipes channel, so every epoch shows in the run's event log while training runs; the other ranks train silently.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from contextlib import nullcontext
from pathlib import Path

from dagster_pipes import open_dagster_pipes

from fmn_core.data import load_split_table
from fmn_core.engine import load_recipe, train_stage1, train_stage2
from fmn_core.engine.distributed import gather_objects, init_distributed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fmn_assets.execution.torchrun_entry", description=__doc__)
    parser.add_argument("--stage", type=int, choices=(1, 2), required=True)
    parser.add_argument("--splits", type=Path, required=True, help="the partition's saved split table")
    parser.add_argument("--config", type=Path, required=True, help="the resolved configuration, a recipe file")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grn", type=Path, help="stage 2: the GRN checkpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_recipe(args.config)
    if args.stage == 2 and args.grn is None:
        raise SystemExit("--grn is required for --stage 2")
    is_main_rank = int(os.environ.get("RANK", "0")) == 0
    total = config.stage(args.stage).epochs
    table = load_split_table(args.splits)
    with open_dagster_pipes() if is_main_rank else nullcontext() as pipes:
        def report(stage: int, epoch: int, row: dict) -> None:
            if pipes is not None:
                pipes.log.info(f"stage {stage} epoch {epoch}/{total}: " + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                    if k not in ("stage", "epoch")) + f" (rank 0 of {os.environ.get('WORLD_SIZE', '1')})")

        if args.stage == 1:
            result = train_stage1(table, config, args.out, on_epoch_end=report)
        else:
            result = train_stage2(table, config, args.grn, args.out, on_epoch_end=report)
        # which host each rank ran on, and who wrote the checkpoint: the step's metadata shows both
        ranks = gather_objects({"rank": int(os.environ.get("RANK", "0")), "host": socket.gethostname(),
                                "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
                                "wrote_checkpoint": result.wrote_checkpoint, "threads": result.threads},
                               init_distributed(config.device))
        print(f"rank {os.environ.get('RANK', '0')} on {socket.gethostname()}: "
              f"{'wrote' if result.wrote_checkpoint else 'did not write'} {result.checkpoint}", file=sys.stderr)
        if pipes is not None:
            pipes.report_custom_message({"epochs": result.epochs, "wall_seconds": result.wall_seconds,
                                         "images_per_second": result.images_per_second, "ranks": ranks})
    return 0


if __name__ == "__main__":
    sys.exit(main())
