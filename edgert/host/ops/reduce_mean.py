"""ReduceMean: axes as attribute (opset < 18) or input (18+), keepdims, noop_with_empty_axes."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _reduce(ctx, x, axes):
    if axes is None or len(axes) == 0:
        if ctx.attr("noop_with_empty_axes", 0):
            return x
        axes = None
    else:
        axes = tuple(int(a) for a in np.asarray(axes).reshape(-1))
    return np.mean(x, axis=axes, keepdims=bool(ctx.attr("keepdims", 1)), dtype=np.float64 if x.dtype.kind != "f" else None
                   ).astype(x.dtype)


@op("ReduceMean", since=1)
def reduce_mean_attr(ctx, x):
    return _reduce(ctx, x, ctx.attr("axes"))


@op("ReduceMean", since=18)
def reduce_mean(ctx, x, axes=None):
    return _reduce(ctx, x, axes)
