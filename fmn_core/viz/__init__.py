"""The pictures people look at: CMC curves, ranked lists (Figure 4), mask and activation heat maps
(Figures 1 and 4), training curves. Every function writes one PNG (atomically) and returns its path."""

from fmn_core.viz.curves import plot_cmc, plot_training_curves
from fmn_core.viz.heatmaps import plot_heatmaps
from fmn_core.viz.ranked_lists import plot_ranked_lists, plot_search_results

__all__ = ["plot_cmc", "plot_heatmaps", "plot_ranked_lists", "plot_search_results", "plot_training_curves"]
