"""Deployable graphs of trained models: ONNX (``torch.onnx.export(dynamo=True)``) and ``torch.export``.

A graph holds the tokenizer's front end, so a deployed image classifier takes pixels, an audio
classifier a waveform (log-mel inside) and a language model token ids plus its KV cache as plain
tensors. Every export is run again (onnxruntime, or the loaded exported program) and compared with
eager PyTorch; a graph that disagrees is deleted, never kept. See ``docs/EXPORT.md``.
"""

from omniformer.graph_export.check import GraphMismatchError
from omniformer.graph_export.export import GraphExportReport, export_graph, export_net
from omniformer.graph_export.writers import FORMATS, GraphExportError

__all__ = [
    "FORMATS",
    "GraphExportError",
    "GraphExportReport",
    "GraphMismatchError",
    "export_graph",
    "export_net",
]
