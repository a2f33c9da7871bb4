"""The network of section 3.1: GRN, Mixing Network and LAN."""

from fmn_core.models.backbone import ARCHITECTURES, MASKABLE_LAYERS, WeightsUnavailableError, feature_dim
from fmn_core.models.fmn import FeatureMaskNetwork, FMNOutput, fmn_descriptor
from fmn_core.models.mixing import MixingNetwork, reshape_mask

__all__ = [
    "ARCHITECTURES", "MASKABLE_LAYERS", "FMNOutput", "FeatureMaskNetwork", "MixingNetwork",
    "WeightsUnavailableError", "feature_dim", "fmn_descriptor", "reshape_mask",
]
