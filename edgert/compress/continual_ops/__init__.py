"""One converter per layer type for ``edgert.compress.continual``: op_type -> convert(builder, node)."""
from __future__ import annotations

from edgert.compress.continual_ops import conv, elementwise, merge, pad, pool, reduce, static
from edgert.compress.continual_ops._builder import ContinualError, StepBuilder, Timing, refuse

CONVERTERS = {
    "Conv": conv.convert,
    "MaxPool": pool.convert,
    "AveragePool": pool.convert,
    "Pad": pad.convert,
    **{op: reduce.convert for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
                                     "GlobalAveragePool", "GlobalMaxPool")},
    **{op: elementwise.convert for op in elementwise.UNARY},
    **{op: merge.convert for op in merge.OPS},
}

__all__ = ["CONVERTERS", "ContinualError", "StepBuilder", "Timing", "refuse", "static"]
