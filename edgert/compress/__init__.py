"""Compression passes: pure functions ``Model -> (Model, report)`` recorded in the model's history."""
from edgert.compress.quantize import QuantizeReport, QuantizeSpec, quantize

__all__ = ["QuantizeReport", "QuantizeSpec", "quantize"]
