"""One static partition per dataset, so each dataset has its own lineage."""

from __future__ import annotations

import dagster as dg

from fmn_core.data import DATASET_READERS

#: The synthetic default first; the rest in the order the paper reports them.
DATASETS: tuple[str, ...] = ("synthetic", "market1501", "cuhk01", "cuhk03_detected", "cuhk03_labeled", "dukemtmc_reid",
                             "custom")
assert set(DATASETS) == set(DATASET_READERS), "every reader needs a partition"

dataset_partitions = dg.StaticPartitionsDefinition(list(DATASETS))
