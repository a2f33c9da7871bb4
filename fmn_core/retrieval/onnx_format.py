"""The ONNX descriptor format: what an exported file says about itself, and how it is run.

The preprocessing (input size, normalisation), eq. (6)'s alpha, the outputs and
the hash of the weights it was exported from travel in the ONNX model's
``metadata_props``; :class:`~fmn_core.retrieval.extractor.FeatureExtractor`
reads them back and preprocesses exactly as it does for a checkpoint. It lives
below both the extractor and :mod:`fmn_core.export`, so only export imports retrieval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from fmn_core.utils.errors import FMNInputError

ONNX_FORMAT = "fmn-onnx/1"
_PREFIX = "fmn."


@dataclass
class OnnxDescriptorMetadata:
    """The contract of an exported descriptor model.

    Input ``images``: float32 ``(batch, 3, height, width)``, RGB, ``(pixel / 255 - mean) / std``.
    Outputs: one L2-normalised descriptor per name in ``outputs`` (``fmn`` is eq. 6).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    alpha: float
    outputs: tuple[str, ...]
    model_hash: str
    arch: str
    masked_layer: str
    batch_size: int | None  # None: any batch size (exported with --dynamic-batch)
    parity: dict = field(default_factory=dict)
    format: str = ONNX_FORMAT

    def to_props(self) -> dict[str, str]:
        return {_PREFIX + key: json.dumps(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "ONNX file") -> OnnxDescriptorMetadata:
        values = {key[len(_PREFIX):]: value for key, value in props.items() if key.startswith(_PREFIX)}
        if json.loads(values.get("format", "null")) != ONNX_FORMAT:
            raise FMNInputError(f"{source} is not a descriptor model exported by 'fmn export' (no {_PREFIX}format = "
                                f"{ONNX_FORMAT!r} in its metadata): its preprocessing is unknown")
        decoded = {key: json.loads(value) for key, value in values.items() if key in cls.__dataclass_fields__}
        for key in ("input_size", "mean", "std", "outputs"):
            decoded[key] = tuple(decoded[key])
        return cls(**decoded)


def run_onnx(session, outputs: Sequence[str], images: np.ndarray, batch_size: int | None,
             input_name: str = "images") -> list[np.ndarray]:
    """``outputs`` of an onnxruntime session for ``images``; a static-batch model gets exactly
    ``batch_size`` images per call (the last call padded by repeating its last image)."""
    if batch_size is None:
        return session.run(list(outputs), {input_name: images})
    pieces = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
        pieces.append([out[:len(chunk)] for out in session.run(list(outputs), {input_name: padded})])
    return [np.concatenate([piece[i] for piece in pieces]) for i in range(len(outputs))]
