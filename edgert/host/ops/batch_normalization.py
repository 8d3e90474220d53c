"""BatchNormalization (inference): (x - mean) / sqrt(var + eps) * scale + B, folded into one multiply-add."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op


def _prepare(ctx) -> None:
    if ctx.attr("training_mode", 0) or len([o for o in ctx.outputs if o]) > 1:
        raise UnsupportedHostOperatorError(f"BatchNormalization node '{ctx.name}' is in training mode; "
                                           "export the model in eval mode")


@op("BatchNormalization", since=1, prepare=_prepare)
def batch_normalization(ctx, x, scale, bias, mean, var):
    if "mul" not in ctx.cache or not all(ctx.const(i) is not None for i in (1, 2, 3, 4)):
        mul = (scale / np.sqrt(var + np.asarray(ctx.attr("epsilon", 1e-5), var.dtype))).astype(x.dtype)
        add = (bias - mean * mul).astype(x.dtype)
        shape = (-1, *([1] * (x.ndim - 2)))
        ctx.cache["mul"], ctx.cache["add"] = mul.reshape(shape), add.reshape(shape)
    return x * ctx.cache["mul"] + ctx.cache["add"]
