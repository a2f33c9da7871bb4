"""The process torchrun starts for a multi-process training step: fmn_core's training, reported through Pipes.

``grn_checkpoint`` / ``fmn_checkpoint`` with ``processes: N`` launch
``torchrun -m fmn_assets.torchrun_entry train-stageK ...`` through Dagster's
``PipesSubprocessClient``. Rank 0 opens the Pipes channel, so every epoch shows in the
run's event log while training runs (not only a stderr tail after a failure); the
other ranks train silently. The arguments are exactly those of ``fmn train-stageK``.
"""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext

from dagster_pipes import open_dagster_pipes

from fmn_core.cli import build_parser, parse_overrides, train_from_args
from fmn_core.engine import preset


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    is_main_rank = int(os.environ.get("RANK", "0")) == 0
    config = preset(args.preset, **parse_overrides(args.set))
    total = config.stage1_epochs if args.command == "train-stage1" else config.stage2_epochs
    with open_dagster_pipes() if is_main_rank else nullcontext() as pipes:
        def report(stage: int, epoch: int, row: dict) -> None:
            if pipes is not None:
                pipes.log.info(f"stage {stage} epoch {epoch}/{total}: " + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                    if k not in ("stage", "epoch")) + f" (rank 0 of {os.environ.get('WORLD_SIZE', '1')})")

        result = train_from_args(args, on_epoch_end=report)
        if pipes is not None:
            pipes.report_custom_message({"epochs": result.epochs, "wall_seconds": result.wall_seconds,
                                         "images_per_second": result.images_per_second})
    return 0


if __name__ == "__main__":
    sys.exit(main())
