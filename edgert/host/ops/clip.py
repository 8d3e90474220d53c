"""Clip: bounds as attributes (opset < 11) or optional inputs (opset 11+)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Clip", since=1)
def clip_attrs(ctx, x):
    return np.clip(x, ctx.attr("min", -3.4028234663852886e38), ctx.attr("max", 3.4028234663852886e38)).astype(x.dtype)


@op("Clip", since=11)
def clip(ctx, x, lo=None, hi=None):
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x
