"""Losses of section 3.3."""

from fmn_core.losses.ranking import identity_loss, ranking_loss, true_class_probability

__all__ = ["identity_loss", "ranking_loss", "true_class_probability"]
