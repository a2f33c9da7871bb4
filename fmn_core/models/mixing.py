"""The Mixing Network (MN), section 3.2, equations (1)-(3).

    m' = ReLU(W^T g)                          (1)  W: an FC layer, m -> h*w
    m_{i,j} = exp(m'_k), k = h*j + i          (2)  0-based: column-major reshape
    o_c = f_c * m  for every channel c        (3)  one spatial mask for all channels

Eq. (2) fills the h x w mask column by column (row index fastest), the
MATLAB/MatConvNet order the paper was written in; :func:`reshape_mask` keeps
that order so a mask exported from the paper's code lays out the same way.

Numerics: exp(ReLU(.)) is at least 1 and unbounded. The mask is computed in
float32 with autocast off, and the exponent is clamped at ``log_mask_max``
(10 by default, a mask of at most e^10 = 22026), so it stays finite under
bf16/fp16 autocast and with any input. The clamp is this implementation's
addition; the paper does not discuss it.
"""

from __future__ import annotations

import torch
from torch import nn


def reshape_mask(flat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, h*w)`` -> ``(B, h, w)`` in the paper's column-major order (eq. 2)."""
    return flat.reshape(flat.shape[0], width, height).transpose(1, 2)


class MixingNetwork(nn.Module):
    """Predicts a spatial mask from the global feature and applies it to a local feature map."""

    def __init__(self, global_dim: int, mask_size: tuple[int, int], log_mask_max: float = 10.0):
        super().__init__()
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))
        self.log_mask_max = float(log_mask_max)
        self.transform = nn.Linear(global_dim, self.mask_size[0] * self.mask_size[1])

    def mask(self, global_feature: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(2): the ``(B, h, w)`` float32 mask, every value in [1, e^log_mask_max]."""
        with torch.autocast(device_type=global_feature.device.type, enabled=False):
            logits = nn.functional.linear(global_feature.float(), self.transform.weight.float(),
                                          self.transform.bias.float())
            transitional = torch.relu(logits).clamp(max=self.log_mask_max)  # eq. (1), kept finite
            return reshape_mask(torch.exp(transitional), *self.mask_size)  # eq. (2)

    def forward(self, local_feature: torch.Tensor, global_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (3): returns the re-weighted local feature and the mask."""
        mask = self.mask(global_feature)
        if local_feature.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"mask is {tuple(mask.shape[-2:])} but the local feature map is "
                             f"{tuple(local_feature.shape[-2:])}: the model was built for another input size")
        return local_feature.float() * mask.unsqueeze(1), mask
