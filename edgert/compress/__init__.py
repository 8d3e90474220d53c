"""Compression passes: pure functions ``Model -> (Model, report)`` recorded in the model's history."""
# The function shadows its module here on purpose: ``edgert.compress.continual(model, time_axis)``.
from edgert.compress.continual import ContinualReport, ContinualSpec, continual  # noqa: E402,I001
from edgert.compress.lowrank import LowRankSpec, lowrank
from edgert.compress.prune import PassReport, PruneSpec, prune
from edgert.compress.quantize import QuantizeReport, QuantizeSpec, quantize

__all__ = ["ContinualReport", "ContinualSpec", "LowRankSpec", "PassReport", "PruneSpec", "QuantizeReport", "QuantizeSpec",
           "continual", "lowrank", "prune", "quantize"]
