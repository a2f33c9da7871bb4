"""What the network looks at (Figures 1 and 4): the FMN mask, and GRN / LAN activation maps,
each laid over the input image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from fmn_core.data.loading import decode_image, normalize
from fmn_core.models import FeatureMaskNetwork
from fmn_core.utils.errors import FMNInputError
from fmn_core.viz._figure import save_figure


def _to_unit(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) -> (B, H, W) in [0, 1], bilinear, each map scaled by its own range."""
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.flatten(1).min(1).values[:, None, None]
    high = up.flatten(1).max(1).values[:, None, None]
    return ((up - low) / (high - low).clamp(min=1e-12)).cpu().numpy()


@torch.inference_mode()
def attention_maps(model: FeatureMaskNetwork, paths: Sequence[str], device: str | torch.device = "cpu"):
    """Images (uint8 HxWx3) and, per image, the mask, GRN activation and LAN activation in [0, 1].

    Activation maps are the channel energy (sum of squares over channels) of
    each branch's last feature map, the usual class-agnostic saliency.
    """
    model = model.to(device).eval()
    images = torch.stack([torch.from_numpy(decode_image(p, model.input_size)) for p in paths])
    out = model(normalize(images.to(device)), return_maps=True)
    size = model.input_size
    return (images.permute(0, 2, 3, 1).numpy(), _to_unit(out.mask, size),
            _to_unit(out.grn_map.float().pow(2).sum(1), size), _to_unit(out.lan_map.float().pow(2).sum(1), size))


def plot_heatmaps(model: FeatureMaskNetwork, paths: Sequence[str], path: str | Path, labels: Sequence[str] = (),
                  device: str | torch.device = "cpu", title: str = "FMN mask and activations") -> Path:
    """Rows: image, FMN mask (eq. 2), GRN activation, LAN activation; one column per image."""
    if not paths:
        raise FMNInputError("no images to draw")
    images, masks, grn, lan = attention_maps(model, paths, device)
    names = ("image", f"FMN mask ({model.masked_layer})", "GRN activation", "LAN activation")
    figure, axes = plt.subplots(4, len(paths), figsize=(len(paths) * 1.1, 4 * 2.0), squeeze=False)
    for c in range(len(paths)):
        for r, overlay in enumerate((None, masks[c], grn[c], lan[c])):
            axis = axes[r, c]
            axis.imshow(images[c])
            if overlay is not None:
                axis.imshow(overlay, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if c == 0:
                axis.set_ylabel(names[r], fontsize=7)
        if labels:
            axes[0, c].set_title(labels[c], fontsize=7)
    figure.suptitle(title, fontsize=10)
    return save_figure(figure, path)
