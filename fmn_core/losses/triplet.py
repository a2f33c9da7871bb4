"""Batch-hard triplet loss (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss", 2017).

Not in the paper: an option (``triplet_weight``) added to the identity loss, on
the retrieval features themselves (g in stage 1, l in stage 2, before any BNNeck),
so the distances the search ranks by are trained directly. For each anchor in
the batch, the farthest image of its identity and the nearest of another:

    L = mean_a max(0, d(a, p_hard) - d(a, n_hard) + margin)

with d the Euclidean distance between the un-normalised features (the choice
of Bag of Tricks; eq. 6 normalises only at test time). It needs batches that
hold at least two images per identity: the P x K batches of
``instances_per_identity``. An anchor with no other identity in its batch adds 0.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distances between the rows, in float32 (no matmul shortcut: stable near 0)."""
    features = features.float()
    return torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """The batch mean of each anchor's hardest-positive / hardest-negative hinge."""
    distances = pairwise_euclidean(features)
    same = labels[:, None] == labels[None, :]
    hardest_positive = distances.masked_fill(~same, float("-inf")).amax(dim=1)  # the anchor itself is 0 at worst
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    # An anchor without negatives has hardest_negative = inf: its hinge is 0 (no branch: no host sync on a GPU).
    return F.margin_ranking_loss(hardest_negative, hardest_positive, torch.ones_like(hardest_positive),
                                 margin=margin)
