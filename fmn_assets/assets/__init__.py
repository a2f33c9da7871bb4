"""The asset graph, stage by stage: data -> training -> retrieval -> evaluation -> deployment."""

import fmn_assets._warnings  # noqa: F401 -- before any definition
from fmn_assets.assets.data import dataset_splits, raw_datasets
from fmn_assets.assets.data_checks import split_table_suites
from fmn_assets.assets.deployed import deployed_model, deployed_model_is_whole
from fmn_assets.assets.deployment import model_card, onnx_model, onnx_model_matches_checkpoint
from fmn_assets.assets.retrieval import (
    descriptor_tables,
    evaluation_metrics,
    gallery_descriptors_usable,
    metrics_in_range,
    query_descriptors_usable,
)
from fmn_assets.assets.training import (
    fmn_checkpoint,
    fmn_checkpoint_loads,
    fmn_mask_alive,
    grn_checkpoint,
    grn_checkpoint_loads,
)

ASSETS = [raw_datasets, dataset_splits, grn_checkpoint, fmn_checkpoint, descriptor_tables,
          evaluation_metrics, onnx_model, model_card, deployed_model]
CHECKS = [split_table_suites, grn_checkpoint_loads, fmn_checkpoint_loads, fmn_mask_alive, query_descriptors_usable,
          gallery_descriptors_usable, metrics_in_range, onnx_model_matches_checkpoint, deployed_model_is_whole]
