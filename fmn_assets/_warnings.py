"""Quiet the notices Dagster prints for the two non-GA features the graph relies on, on purpose.

* checks partitioned like their assets (one result per dataset): ``PreviewWarning``;
* ``observable_source_asset`` for the DVC-versioned raw data, and ``include_sources`` of the automation sensor's
  target (so the raw data is observed on its cron): ``BetaWarning``.
"""

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.PreviewWarning, message=".*partitions_def on an AssetCheckSpec.*")
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*observable_source_asset.*")
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*include_sources.*")
