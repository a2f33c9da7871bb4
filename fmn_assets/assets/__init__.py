"""The asset graph, stage by stage: data -> training -> retrieval -> evaluation."""

import fmn_assets._warnings  # noqa: F401 -- before any definition
from fmn_assets.assets.data import dataset_splits, raw_datasets
from fmn_assets.assets.data_checks import (
    identities_disjoint,
    images_readable,
    official_counts,
    queries_matchable,
    split_table_schema,
)
from fmn_assets.assets.retrieval import descriptor_tables, evaluation_metrics, metrics_in_range
from fmn_assets.assets.training import (
    fmn_checkpoint,
    fmn_checkpoint_loads,
    fmn_mask_alive,
    grn_checkpoint,
    grn_checkpoint_loads,
)

ASSETS = [raw_datasets, dataset_splits, grn_checkpoint, fmn_checkpoint, descriptor_tables, evaluation_metrics]
CHECKS = [split_table_schema, images_readable, identities_disjoint, queries_matchable, official_counts,
          grn_checkpoint_loads, fmn_checkpoint_loads, fmn_mask_alive, metrics_in_range]
