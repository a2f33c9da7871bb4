"""Using a trained FMN outside training: ONNX export with a parity check, and the model card."""

from fmn_core.export.metadata import OnnxDescriptorMetadata
from fmn_core.export.onnx_export import ExportError, ExportParityError, ExportResult, ParityReport, export_onnx

__all__ = ["ExportError", "ExportParityError", "ExportResult", "OnnxDescriptorMetadata", "ParityReport",
           "export_onnx"]
