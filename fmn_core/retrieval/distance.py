"""Euclidean distances between descriptor sets (section 3.4: nearest-neighbour search)."""

from __future__ import annotations

import numpy as np
import torch

from fmn_core.utils.errors import FMNInputError


def pairwise_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, squared: bool = True,
                      device: str | torch.device = "cpu", block: int = 4096) -> np.ndarray:
    """``||a_i - b_j||^2`` (or its square root) as a float32 numpy matrix, computed in blocks.

    Tiny negative values from floating-point cancellation are clamped to 0.
    """
    # a read-only array (a memory-mapped or Arrow-backed table) is copied, not wrapped: torch warns about those
    a, b = (np.array(x) if isinstance(x, np.ndarray) and not x.flags.writeable else x for x in (a, b))
    a_t = torch.as_tensor(a, dtype=torch.float32, device=device)
    b_t = torch.as_tensor(b, dtype=torch.float32, device=device)
    if a_t.ndim != 2 or b_t.ndim != 2 or a_t.shape[1] != b_t.shape[1]:
        raise FMNInputError(f"descriptor sets must be (n, d) and (m, d); got {tuple(a_t.shape)} and {tuple(b_t.shape)}")
    b_norm = (b_t * b_t).sum(1)
    out = np.empty((a_t.shape[0], b_t.shape[0]), dtype=np.float32)
    for start in range(0, a_t.shape[0], block):
        chunk = a_t[start:start + block]
        dist = (chunk * chunk).sum(1, keepdim=True) + b_norm[None, :] - 2.0 * chunk @ b_t.T
        dist.clamp_(min=0)
        if not squared:
            dist.sqrt_()
        out[start:start + block] = dist.cpu().numpy()
    return out
