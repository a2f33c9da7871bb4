"""Using a trained FMN outside training: ONNX export with a parity check, and the model card."""

from fmn_core.export.onnx_export import (
           ExportError,
           ExportParityError,
           ExportResult,
           ParityReport,
           export_onnx,
           parity_images,
)
from fmn_core.retrieval.onnx_format import OnnxDescriptorMetadata

__all__ = ["ExportError", "ExportParityError", "ExportResult", "OnnxDescriptorMetadata", "ParityReport",
           "export_onnx", "parity_images"]
