"""The Mixing Network (MN), section 3.2, equations (1)-(3).

    m' = ReLU(W^T g)                          (1)  W: an FC layer, m -> h*w
    m_{i,j} = exp(m'_k), k = h*j + i          (2)  0-based: column-major reshape
    o_c = f_c * m  for every channel c        (3)  one spatial mask for all channels

Eq. (2) fills the h x w mask column by column (row index fastest), the
MATLAB/MatConvNet order the paper was written in; :func:`reshape_mask` keeps
that order so a mask exported from the paper's code lays out the same way.

Three changes to eq. (1)-(2), each because the literal form collapsed in
training here (the mask became one or two saturated dots at the same place
for every image, or 1 everywhere), each a parameter:

* ``g`` is standardised before the FC (``normalize_global``): a BatchNorm
  without affine weights, learning its statistics from the frozen GRN's
  features. ``g`` is a pooled post-ReLU feature, all positive with a large
  common mean, so ``W^T g`` is dominated by the mean image and barely changes
  from one image to the next; centred, the FC sees what makes an image differ.
* the exponent is bounded smoothly, ``m = exp(B tanh(ReLU(z) / B))`` with
  ``B = log_mask_max`` (1 by default: a mask in [1, e]) instead of a hard
  clamp; below the bound the gradient never vanishes, so no position is
  stuck at the ceiling where the hard clamp left it without a gradient.
  The bound's size matters most: with B = 3 the MN amplified some positions
  twenty-fold and the LAN generalised worse than with no mask at all (the
  README's ablation); with B = 1 the mask stays image-dependent and the LAN
  beats the GRN.
* the FC starts small with a positive bias (``initial_log_mask``), so every
  position starts in ReLU's open range with a mask a little above 1 and
  the MN learns from an almost uniform mask rather than from random dots.

The mask is computed in float32 with autocast off, so it stays finite under
bf16/fp16 autocast. ``constant=True`` replaces the mask by 1 everywhere: the
control that shows what the MN itself adds (a second network, no attention).

``form`` chooses the mask's range: ``amplify`` is eq. (1)-(2) (the ReLU keeps the
exponent at or above 0, so the mask only raises positions: [1, e^B]);
``signed`` drops the ReLU so the mask can also suppress a position
([e^-B, e^B]), a variant measured against the paper's form in docs/results.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fmn_core.utils.errors import FMNInputError

#: a position whose bounded exponent is this close to the bound has (almost) no gradient left
SATURATION = 0.99
#: the mask's range: the paper's (amplify only) or one that can also suppress a position
MASK_FORMS = ("amplify", "signed")


def reshape_mask(flat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, h*w)`` -> ``(B, h, w)`` in the paper's column-major order (eq. 2)."""
    return flat.reshape(flat.shape[0], width, height).transpose(1, 2)


class MixingNetwork(nn.Module):
    """Predicts a spatial mask from the global feature and applies it to a local feature map."""

    def __init__(self, global_dim: int, mask_size: tuple[int, int], log_mask_max: float = 1.0,
                 normalize_global: bool = True, initial_log_mask: float = 0.1, constant: bool = False,
                 mask_cell: int = 1, mean_one: bool = False, form: str = "amplify"):
        super().__init__()
        if form not in MASK_FORMS:
            raise FMNInputError(f"mask form {form!r}: expected one of {MASK_FORMS}")
        self.form = form
        if not log_mask_max > 0:
            raise FMNInputError(f"log_mask_max must be positive, got {log_mask_max}")
        if mask_cell < 1:
            raise FMNInputError(f"mask_cell must be at least 1, got {mask_cell}")
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))
        if mask_cell > 1 and mask_cell >= max(self.mask_size):
            raise FMNInputError(f"mask_cell={mask_cell} covers the whole {self.mask_size[0]}x{self.mask_size[1]} mask "
                                "of the masked layer: the MN would predict one value for every position, a constant "
                                f"mask; choose a cell smaller than {max(self.mask_size)} (1: one value per position)")
        self.mean_one = bool(mean_one)
        #: the FC predicts one value per mask_cell x mask_cell block; the mask is upsampled to mask_size
        self.grid_size = (-(-self.mask_size[0] // mask_cell), -(-self.mask_size[1] // mask_cell))
        self.log_mask_max = float(log_mask_max)
        self.constant = bool(constant)
        self.normalize = nn.BatchNorm1d(global_dim, affine=False) if normalize_global else nn.Identity()
        self.transform = nn.Linear(global_dim, self.grid_size[0] * self.grid_size[1])
        nn.init.normal_(self.transform.weight, std=0.1 / math.sqrt(global_dim))
        nn.init.constant_(self.transform.bias, float(initial_log_mask))

    def _standardise(self, g: torch.Tensor) -> torch.Tensor:
        """BatchNorm of g; a single image in training mode uses the running statistics (no batch to measure)."""
        norm = self.normalize
        if isinstance(norm, nn.BatchNorm1d) and self.training and g.shape[0] == 1:
            return nn.functional.batch_norm(g, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
        return norm(g)

    def log_mask(self, global_feature: torch.Tensor) -> torch.Tensor:
        """The bounded exponent ``B tanh(ReLU(W^T g) / B)``, ``(B, h*w)`` float32 in [0, B] ([-B, B] signed)."""
        with torch.autocast(device_type=global_feature.device.type, enabled=False):
            if self.constant:
                return torch.zeros((global_feature.shape[0], self.transform.out_features), dtype=torch.float32,
                                   device=global_feature.device)
            logits = self.transform(self._standardise(global_feature.float()))
            if self.form == "amplify":
                logits = torch.relu(logits)  # eq. (1)'s sigma
            return self.log_mask_max * torch.tanh(logits / self.log_mask_max)  # bounded

    def mask(self, global_feature: torch.Tensor) -> torch.Tensor:
        """Eq. (1)-(2): the ``(B, h, w)`` float32 mask, every value in [1, e^B] ([e^-B, e^B] signed)."""
        with torch.autocast(device_type=global_feature.device.type, enabled=False):
            log_mask = reshape_mask(self.log_mask(global_feature), *self.grid_size)  # eq. (2)'s order
            if self.grid_size != self.mask_size:
                log_mask = nn.functional.interpolate(log_mask.unsqueeze(1), size=self.mask_size, mode="bilinear",
                                                     align_corners=False).squeeze(1)
            mask = torch.exp(log_mask)
            return mask / mask.mean(dim=(1, 2), keepdim=True) if self.mean_one else mask

    def forward(self, local_feature: torch.Tensor, global_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. (3): returns the re-weighted local feature and the mask."""
        mask = self.mask(global_feature)
        if local_feature.shape[-2:] != mask.shape[-2:]:
            raise FMNInputError(f"mask is {tuple(mask.shape[-2:])} but the local feature map is "
                                f"{tuple(local_feature.shape[-2:])}: the model was built for another input size")
        return local_feature.float() * mask.unsqueeze(1), mask


def mask_diagnostics(masks: torch.Tensor, log_mask_max: float, form: str = "amplify") -> dict[str, float]:
    """How alive a set of masks ``(N, h, w)`` is; a collapsed MN shows here without a picture.

    * ``at_lower_bound``: share of positions where ReLU is closed (mask exactly 1, no gradient), or, for the
      signed form, within 1% of the lower bound e^-B;
    * ``at_upper_bound``: share within 1% of the bound e^B (the gradient is nearly gone);
    * ``variation_across_images``: per position, the standard deviation across images of the
      mask divided by its image's mean, averaged over positions (0 for a mask that ignores the image);
    * ``spatial_contrast``: per image, the spatial standard deviation over the mean (0 for a flat mask).
    """
    masks = masks.detach().float()
    if masks.dim() != 3 or masks.shape[0] < 2:
        raise FMNInputError(f"expected masks of shape (N >= 2, h, w), got {tuple(masks.shape)}")
    log_masks = masks.log()
    flat = masks.flatten(1)
    relative = flat / flat.mean(dim=1, keepdim=True)
    return {
        "at_lower_bound": float((log_masks <= (1e-6 if form == "amplify" else -SATURATION * log_mask_max))
                                .float().mean()),
        "at_upper_bound": float((log_masks >= SATURATION * log_mask_max).float().mean()),
        "variation_across_images": float(relative.std(dim=0).mean()),
        "spatial_contrast": float((flat.std(dim=1) / flat.mean(dim=1)).mean()),
        "mean": float(flat.mean()),
        "images": int(masks.shape[0]),
    }


#: below this variation across images, or with this share of positions at a bound, the mask has collapsed
COLLAPSE_VARIATION = 0.02
COLLAPSE_BOUND_SHARE = 0.9


def mask_collapse_reasons(diagnostics: dict[str, float]) -> list[str]:
    """Why a mask counts as collapsed (empty when it is alive)."""
    reasons = []
    if diagnostics["variation_across_images"] < COLLAPSE_VARIATION:
        reasons.append(f"the mask hardly changes between images (variation {diagnostics['variation_across_images']:.4f}"
                       f" < {COLLAPSE_VARIATION})")
    stuck = diagnostics["at_lower_bound"] + diagnostics["at_upper_bound"]
    if stuck >= COLLAPSE_BOUND_SHARE:
        reasons.append(f"{stuck:.0%} of mask positions sit at a bound, where no gradient flows")
    return reasons
