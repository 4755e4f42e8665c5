"""Stand-in for transformers' `tests/exporters/test_export.py`, which the 5.25.0 sdist does not ship.

`ModelTesterMixin` derives from `ExportTesterMixin` to inherit the exporter tests (torch.export, ONNX, ExecuTorch).
This stand-in adds none: the torch.export tests of the GemmaEncoder classes are written in
modeling_tests/test_modeling_gemma_encoder.py (static and dynamic shapes, outputs compared with eager).
"""


class ExportTesterMixin:
    pass
