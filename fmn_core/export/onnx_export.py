"""ONNX export of the descriptor model, written only once onnxruntime is shown to agree with PyTorch.

The exported graph takes a normalised image batch and returns eq. (6)'s FMN
descriptor (and, on request, the GRN-only and LAN-only descriptors of
Table 1's ablation rows). Before the file replaces anything, onnxruntime on
the CPU runs it on a fixed batch: every output must lie within ``tolerance``
(max abs) of PyTorch's, and ranking a small gallery by the ONNX descriptors
must give PyTorch's order (up to ties closer than numerical noise). A failed
check raises :class:`ExportParityError` naming the output and the gap, and
leaves the destination as it was.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from fmn_core.data.loading import IMAGENET_MEAN, IMAGENET_STD, normalize
from fmn_core.models.fmn import FeatureMaskNetwork, descriptors_from_features
from fmn_core.retrieval.descriptors import DESCRIPTOR_KINDS, load_descriptor_model
from fmn_core.retrieval.distance import pairwise_distance
from fmn_core.retrieval.extractor import ImageLike, image_to_uint8
from fmn_core.retrieval.onnx_format import OnnxDescriptorMetadata, run_onnx
from fmn_core.utils.atomic import atomic_write_path
from fmn_core.utils.errors import FMNInputError

DEFAULT_OPSET = 18
#: Squared distances closer than this are ties: their order is numerical noise in either runtime.
RANK_TIE_TOLERANCE = 1e-5


class ExportError(FMNInputError, RuntimeError):
    """The model could not be exported."""


class ExportParityError(ExportError):
    """onnxruntime's results differ from PyTorch's; nothing was written."""


class DescriptorGraph(nn.Module):
    """What the ONNX file computes: normalised images -> L2-normalised descriptors, in ``outputs`` order."""

    def __init__(self, model: FeatureMaskNetwork, alpha: float, outputs: Sequence[str]):
        super().__init__()
        self.model, self.alpha, self.outputs = model, float(alpha), tuple(outputs)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images)
        descriptors = descriptors_from_features(out.g, out.l, self.alpha, self.outputs)
        return tuple(descriptors[name] for name in self.outputs)


@dataclass
class ParityReport:
    """How closely onnxruntime matched PyTorch on the check set."""

    max_abs: dict[str, float]
    tolerance: float
    images: int
    queries: int
    gallery: int
    rankings_identical: int  # queries whose whole gallery order is the same, tie for tie
    rankings_consistent: int  # queries whose ONNX order is a valid PyTorch order up to ties < RANK_TIE_TOLERANCE

    @property
    def passed(self) -> bool:
        return all(v <= self.tolerance for v in self.max_abs.values()) and self.rankings_consistent == self.queries

    def problems(self) -> list[str]:
        out = [f"output '{name}' differs from PyTorch by {value:.3g} (max abs; tolerance {self.tolerance:.0e})"
               for name, value in self.max_abs.items() if not value <= self.tolerance]
        if self.rankings_consistent != self.queries:
            out.append(f"{self.queries - self.rankings_consistent} of {self.queries} queries rank the "
                       f"{self.gallery}-image check gallery differently")
        return out

    def as_dict(self) -> dict:
        return {"max_abs": {k: float(v) for k, v in self.max_abs.items()}, "tolerance": self.tolerance,
                "images": self.images, "queries": self.queries, "gallery": self.gallery,
                "rankings_identical": self.rankings_identical, "rankings_consistent": self.rankings_consistent}


@dataclass
class ExportResult:
    path: Path
    parity: ParityReport
    metadata: OnnxDescriptorMetadata
    size_bytes: int


def check_images(input_size: tuple[int, int], count: int = 32, seed: int = 0) -> torch.Tensor:
    """A fixed uint8 batch ``(count, 3, H, W)`` for the parity check when no real image is given.

    Smooth random colour fields (coarse noise upsampled, plus fine noise): unlike
    white noise, they give descriptors spread out enough for a ranking to mean something.
    """
    generator = torch.Generator().manual_seed(seed)
    height, width = input_size
    coarse = torch.rand(count, 3, max(2, height // 16), max(2, width // 16), generator=generator) * 255
    smooth = F.interpolate(coarse, size=input_size, mode="bilinear", align_corners=False)
    noise = torch.randn(count, 3, height, width, generator=generator) * 12
    return (smooth + noise).round().clamp(0, 255).to(torch.uint8)


def _export_graph(graph: DescriptorGraph, example: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1)},)} if dynamic_batch else {}
    log = io.StringIO()
    try:  # the exporter narrates its passes on stdout; keep it for the error message only
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), str(path), input_names=["images"], output_names=list(graph.outputs),
                              opset_version=opset, dynamo=True, external_data=False, **kwargs)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed (opset {opset}): {type(exc).__name__}: {exc}\n"
                          f"{log.getvalue()[-2000:]}") from exc


def _add_metadata(path: Path, metadata: OnnxDescriptorMetadata) -> None:
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _ranking_agreement(reference: np.ndarray, candidate: np.ndarray, queries: int) -> tuple[int, int]:
    """(identical, consistent) query counts when ranking the rest of the batch by each descriptor set."""
    expected = pairwise_distance(reference[:queries], reference[queries:])
    got = pairwise_distance(candidate[:queries], candidate[queries:])
    identical = consistent = 0
    for row in range(queries):
        order_ref = np.argsort(expected[row], kind="stable")
        order_got = np.argsort(got[row], kind="stable")
        identical += bool(np.array_equal(order_ref, order_got))
        # the ONNX order, read with PyTorch's distances, must never go down by more than a tie
        consistent += bool(np.all(np.diff(expected[row][order_got]) >= -RANK_TIE_TOLERANCE))
    return identical, consistent


def parity_check(onnx_path: Path, graph: DescriptorGraph, pixels: torch.Tensor, tolerance: float,
                 queries: int, batch_size: int | None) -> ParityReport:
    """Run PyTorch and onnxruntime (CPU) on the same normalised batch and compare."""
    import onnxruntime as ort

    images = normalize(pixels)
    with torch.inference_mode():
        reference = [t.numpy() for t in graph(images)]
    feed = images.numpy()
    try:  # onnxruntime's errors derive from Exception only; say which step failed
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        onnx_out = run_onnx(session, graph.outputs, feed, batch_size)
    except Exception as exc:
        raise RuntimeError(f"onnxruntime cannot run the exported graph ({type(exc).__name__}: {exc})") from exc
    max_abs = {name: float(np.abs(ref - got).max()) for name, ref, got in zip(graph.outputs, reference, onnx_out,
                                                                               strict=True)}
    identical, consistent = _ranking_agreement(reference[0], onnx_out[0], queries)
    return ParityReport(max_abs, tolerance, len(feed), queries, len(feed) - queries, identical, consistent)


def supported_opsets() -> range:
    """Opsets an export may ask for: torch's exporter writes 18 and newer, the installed onnx knows up to its own."""
    import onnx

    return range(DEFAULT_OPSET, onnx.defs.onnx_opset_version() + 1)


def export_onnx(checkpoint: str | Path | FeatureMaskNetwork, out: str | Path, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = False, batch_size: int = 1, outputs: Sequence[str] = ("fmn",),
                tolerance: float = 1e-4, images: Sequence[ImageLike] | None = None,
                queries: int | None = None) -> ExportResult:
    """Export the descriptor model of a stage-2 checkpoint to ``out``, after proving parity.

    ``images``: the parity-check images (paths, arrays or PIL images; the first
    ``queries`` are ranked against the rest); default: a fixed synthetic batch of 32.
    ``batch_size`` is the fixed batch of a static export; ``dynamic_batch`` accepts any.
    """
    outputs = tuple(dict.fromkeys(outputs))
    unknown = [name for name in outputs if name not in DESCRIPTOR_KINDS]
    if unknown or not outputs:
        raise FMNInputError(f"outputs must be a non-empty subset of {DESCRIPTOR_KINDS}, got {list(outputs)}")
    if batch_size < 1:
        raise FMNInputError(f"batch_size must be at least 1, got {batch_size}")
    opsets = supported_opsets()
    if opset not in opsets:
        raise FMNInputError(f"opset must be from {opsets.start} to {opsets.stop - 1} (the newest the installed onnx "
                            f"knows), got {opset}")
    if not (tolerance >= 0 and np.isfinite(tolerance)):
        raise FMNInputError(f"tolerance must be a finite number of at least 0, got {tolerance}")
    loaded = load_descriptor_model(checkpoint)
    model = loaded.model.float().eval()
    graph = DescriptorGraph(model, loaded.alpha, outputs).eval()
    pixels = (check_images(model.input_size) if images is None else
              torch.stack([image_to_uint8(item, model.input_size) for item in images]))
    if len(pixels) < 3:
        raise FMNInputError(f"the parity check needs at least 3 images (queries and a gallery), got {len(pixels)}")
    queries = max(1, min(len(pixels) // 4, 16)) if queries is None else queries
    if not 1 <= queries < len(pixels):
        raise FMNInputError(f"queries must be between 1 and {len(pixels) - 1} for {len(pixels)} images, got {queries}")
    metadata = OnnxDescriptorMetadata(
        input_size=model.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, alpha=loaded.alpha, outputs=outputs,
        model_hash=loaded.model_hash, arch=model.arch, masked_layer=model.masked_layer,
        batch_size=None if dynamic_batch else batch_size)
    example = normalize(pixels[:2] if dynamic_batch else pixels[:1].repeat(batch_size, 1, 1, 1))
    out = Path(out)
    with atomic_write_path(out) as tmp:  # a failure below removes the temporary file; `out` stays as it was
        _export_graph(graph, example, tmp, opset, dynamic_batch)
        parity = parity_check(tmp, graph, pixels, tolerance, queries, metadata.batch_size)
        if not parity.passed:
            raise ExportParityError(f"ONNX export of {checkpoint} failed its parity check, nothing was written to "
                                    f"{out}: " + "; ".join(parity.problems()))
        metadata.parity = parity.as_dict()
        _add_metadata(tmp, metadata)
    return ExportResult(out, parity, metadata, out.stat().st_size)


def parity_images(table: pd.DataFrame, queries: int = 8, gallery: int = 24) -> list[str]:
    """Real images for an export's parity check: the first query images, then gallery images."""
    pick = [table[table["split"] == "query"].head(queries), table[table["split"] == "gallery"].head(gallery)]
    return [path for part in pick for path in part["path"]]
