"""The Feature Mask Network (section 3.1, Figure 2).

* GRN (Global Representation Network): a ResNet whose ImageNet classifier is
  replaced by one over the r training identities. Its global feature ``g`` is
  the globally average-pooled output of the last stage (2048-d for ResNet-50,
  the descriptor size in Table 1); the paper calls it "the last FC layer"
  feature, and the only 2048-d feature of a ResNet-50 is the input of its FC
  layer, so that is the interpretation taken here.
* MN (Mixing Network): :class:`~fmn_core.models.mixing.MixingNetwork`; it maps
  ``g`` to a mask for the output of the masked layer (``pool1`` by default,
  Table 5's best; ``res2``, ``res3``, ``res4`` selectable).
* LAN (Locally Attentive Network): the ResNet stages after the masked layer,
  with their own parameters, initialised from the same weights as the GRN
  started from (Algorithm 1: theta_o -> theta_l), and its own identity
  classifier. Its global feature ``l`` has the GRN's width.

The GRN's stem up to the masked layer feeds the LAN (Figure 2), so a frozen
GRN in stage 2 also fixes the local features the mask is applied to.

With ``bn_neck`` (not in the paper; Luo et al., "Bag of Tricks", 2019) each
identity classifier reads its feature through a BatchNorm1d whose bias stays 0,
and has no bias itself: the cross-entropy then shapes a normalised copy while
g and l, taken before the BatchNorm, stay the retrieval features (eq. 6, the MN's
input, the triplet loss). Without it the necks are identities with no weights,
so checkpoints keep their keys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fmn_core.models.backbone import STAGES, build_backbone, feature_dim, maskable_layers, stage_strides
from fmn_core.models.mixing import MixingNetwork
from fmn_core.utils.errors import FMNInputError


def feature_map_size(input_size: tuple[int, int], stage: str, arch: str = "resnet50") -> tuple[int, int]:
    """Spatial size of a stage's output: every stride-2 layer rounds up (pad 1 or 3)."""
    halvings = int(math.log2(stage_strides(arch)[stage]))
    height, width = input_size
    for _ in range(halvings):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


def _identity_classifier(in_dim: int, num_classes: int, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_dim, num_classes, bias=bias)
    nn.init.normal_(layer.weight, std=0.001)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _neck(width: int, enabled: bool) -> nn.Module:
    """BNNeck's BatchNorm1d with its bias fixed at 0, as Bag of Tricks has it (a learned shift would bring back the
    classifier bias the neck drops); an identity, without weights, when off."""
    if not enabled:
        return nn.Identity()
    norm = nn.BatchNorm1d(width)
    norm.bias.requires_grad_(False)
    return norm


def descriptors_from_features(g: torch.Tensor, l: torch.Tensor, alpha: float = 0.5,  # noqa: E741
                              kinds: Sequence[str] = ("grn", "lan", "fmn")) -> dict[str, torch.Tensor]:
    """Table 1's descriptors from one forward pass: the unit-length g (GRN), the unit-length l (LAN) and eq. (6)'s
    D = [alpha g/||g||, (1 - alpha) l/||l||] (FMN). The extraction loop, the extractor and the ONNX graph all
    call this, so the three give the same numbers."""
    g_unit = nn.functional.normalize(g.float(), dim=1)
    l_unit = nn.functional.normalize(l.float(), dim=1)
    everything = {"grn": lambda: g_unit, "lan": lambda: l_unit,
                  "fmn": lambda: torch.cat([alpha * g_unit, (1.0 - alpha) * l_unit], dim=1)}
    return {kind: everything[kind]() for kind in kinds}


def fmn_descriptor(g: torch.Tensor, l: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:  # noqa: E741
    """Eq. (6): D = [alpha g/||g||, (1 - alpha) l/||l||]."""
    return descriptors_from_features(g, l, alpha, ("fmn",))["fmn"]


@dataclass
class FMNOutput:
    """Everything one forward pass yields; ``None`` where a branch did not run."""

    g: torch.Tensor
    grn_logits: torch.Tensor
    l: torch.Tensor | None = None  # noqa: E741
    lan_logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    grn_map: torch.Tensor | None = None
    lan_map: torch.Tensor | None = None


class FeatureMaskNetwork(nn.Module):
    """GRN + MN + LAN. ``forward_grn`` is stage 1; ``forward`` runs all three (stage 2, test)."""

    def __init__(self, num_classes: int, arch: str = "resnet50", pretrained: str = "none",
                 masked_layer: str = "pool1", input_size: tuple[int, int] = (256, 128), log_mask_max: float = 1.0,
                 normalize_global: bool = True, constant_mask: bool = False, mask_cell: int = 1,
                 mask_mean_one: bool = False, bn_neck: bool = False, mask_form: str = "amplify"):
        super().__init__()
        if num_classes < 2:
            raise FMNInputError(f"num_classes must be at least 2 training identities, got {num_classes}")
        width, layers = feature_dim(arch), maskable_layers(arch)
        if masked_layer not in layers:
            raise FMNInputError(f"masked_layer must be one of {sorted(layers)} for {arch}, got {masked_layer!r}")
        self.arch, self.masked_layer, self.num_classes = arch, masked_layer, int(num_classes)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.tap_stage = layers[masked_layer]

        stages = build_backbone(arch, pretrained)
        lan_names = STAGES[STAGES.index(self.tap_stage) + 1:]
        # theta_o -> theta_l: the LAN copies the GRN's initial weights before any fine-tuning.
        self.lan_stages = nn.ModuleDict({name: copy.deepcopy(stages[name]) for name in lan_names})
        self.grn_stages = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.grn_classifier = _identity_classifier(width, num_classes, bias=not bn_neck)
        self.lan_classifier = _identity_classifier(width, num_classes, bias=not bn_neck)
        self.bn_neck = bn_neck
        self.grn_neck, self.lan_neck = _neck(width, bn_neck), _neck(width, bn_neck)
        self.mixing = MixingNetwork(width, feature_map_size(self.input_size, self.tap_stage, arch), log_mask_max,
                                    normalize_global=normalize_global, constant=constant_mask, mask_cell=mask_cell,
                                    mean_one=mask_mean_one, form=mask_form)
        self._grn_frozen = False

    # -- stage control ---------------------------------------------------------------------------
    def grn_modules(self) -> list[nn.Module]:
        return [self.grn_stages, self.grn_neck, self.grn_classifier]

    def local_modules(self) -> list[nn.Module]:
        """What stage 2 trains: the MN and the LAN (with its neck and classifier)."""
        return [self.mixing, self.lan_stages, self.lan_neck, self.lan_classifier]

    def freeze_grn(self) -> None:
        """Fix theta_g: no gradients, and BatchNorm statistics (the neck's too) stay as stage 1 left them."""
        self._grn_frozen = True
        for module in self.grn_modules():
            module.requires_grad_(False)
            module.eval()

    @property
    def grn_frozen(self) -> bool:
        return self._grn_frozen

    def train(self, mode: bool = True) -> FeatureMaskNetwork:
        super().train(mode)
        if self._grn_frozen:
            for module in self.grn_modules():
                module.eval()
        return self

    # -- forward passes --------------------------------------------------------------------------
    def _grn(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (local feature at the masked layer, last feature map, g)."""
        x, tapped = images, None
        for name in STAGES:
            x = self.grn_stages[name](x)
            if name == self.tap_stage:
                tapped = x
        return tapped, x, torch.flatten(self.pool(x), 1)

    def forward_grn(self, images: torch.Tensor, return_maps: bool = False) -> FMNOutput:
        """Stage 1 (Algorithm 1, lines 1-2): the GRN alone."""
        _, last_map, g = self._grn(images)
        return FMNOutput(g=g, grn_logits=self.grn_classifier(self.grn_neck(g)),
                         grn_map=last_map if return_maps else None)

    def forward(self, images: torch.Tensor, branch: str = "all", return_maps: bool = False) -> FMNOutput:
        """``branch='all'``: GRN -> mask -> LAN (stage 2, test time); ``'grn'``: the GRN alone (stage 1).

        The branch is an argument of ``forward`` (rather than a second method)
        so DistributedDataParallel, which only wraps ``forward``, serves both stages.
        """
        if branch == "grn":
            return self.forward_grn(images, return_maps)
        if branch != "all":
            raise FMNInputError(f"branch must be 'all' or 'grn', got {branch!r}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._grn_frozen):
            local, grn_map, g = self._grn(images)
            grn_logits = self.grn_classifier(self.grn_neck(g))
        mixed, mask = self.mixing(local, g)
        x = mixed
        for stage in self.lan_stages.values():
            x = stage(x)
        l = torch.flatten(self.pool(x), 1)  # noqa: E741
        return FMNOutput(g=g, grn_logits=grn_logits, l=l, lan_logits=self.lan_classifier(self.lan_neck(l)), mask=mask,
                         grn_map=grn_map if return_maps else None, lan_map=x if return_maps else None)
