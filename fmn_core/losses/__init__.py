"""Losses of section 3.3, and the batch-hard triplet loss (an option, not in the paper)."""

from fmn_core.losses.ranking import identity_loss, ranking_loss, true_class_probability
from fmn_core.losses.triplet import batch_hard_triplet_loss

__all__ = ["batch_hard_triplet_loss", "identity_loss", "ranking_loss", "true_class_probability"]
