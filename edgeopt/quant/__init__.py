"""Quantization: the configuration (``QuantConfig``), calibration, and the weight packing the passes share.

The passes themselves live in ``passes/`` (``quantize_static``, ``quantize_weights``, ``quantize_dynamic``);
this package holds what they have in common, the parts of static int8 that are a job of their own (calibration,
bias correction, the accuracy budget, the image conv, weight rounding), and what ``edgeopt.compile(quantize=...)``
needs to set them up.
"""

from .config import CALIBRATORS, MODES, QuantConfig, QuantizationError, as_config

__all__ = ["CALIBRATORS", "MODES", "QuantConfig", "QuantizationError", "as_config"]
