"""LayerNormalization (opset 17): normalise over the axes from ``axis`` on; Mean and InvStdDev as optional outputs."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("LayerNormalization", since=17)
def layer_normalization(ctx, x, scale, bias=None):
    axis = ctx.attr("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float32) if ctx.attr("stash_type", 1) == 1 else x
    mean = xf.mean(axis=axes, keepdims=True)
    d = xf - mean
    inv = 1 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + np.float32(ctx.attr("epsilon", 1e-5)))
    y = d * inv * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean.astype(np.float32), inv.astype(np.float32)
