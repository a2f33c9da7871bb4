"""The losses of section 3.3: identity cross-entropy (eq. 4) and the ranking loss (eq. 5).

    L_rank(p_t^G, p_t^L) = max(0, p_t^G - p_t^L + m)                 (5)

p_t^G and p_t^L are the softmax probabilities the GRN and the LAN give the
true identity t. The GRN is frozen in stage 2, so p_t^G is a fixed reference
(no gradient) and the loss pushes the LAN to be more confident than the GRN
by the margin m. The paper does not give m; it is a parameter here
(``margin``, default 0.1). The per-sample losses are averaged over the batch.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def true_class_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each sample's true class, computed in float32."""
    return F.softmax(logits.float(), dim=1).gather(1, targets.view(-1, 1)).squeeze(1)


def ranking_loss(grn_logits: torch.Tensor, lan_logits: torch.Tensor, targets: torch.Tensor,
                 margin: float = 0.1) -> torch.Tensor:
    """Eq. (5), batch mean; the GRN side is detached (it is the fixed reference)."""
    p_global = true_class_probability(grn_logits.detach(), targets)
    p_local = true_class_probability(lan_logits, targets)
    return torch.clamp(p_global - p_local + margin, min=0).mean()


def identity_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. (4): softmax cross-entropy over the r training identities, in float32.

    ``label_smoothing`` (not in the paper; Szegedy et al., used by re-ID's Bag of Tricks) mixes the one-hot target
    with a uniform one, so an over-confident identity classifier is penalised.
    """
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
