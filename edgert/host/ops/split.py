"""Split: sizes from the ``split`` attribute (< 13), input (13+), or ``num_outputs`` / equal parts."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _split(ctx, x, sizes):
    axis = ctx.attr("axis", 0)
    n = len(ctx.outputs)
    if sizes is None or len(sizes) == 0:
        num = ctx.attr("num_outputs", n)
        chunk = -(-x.shape[axis] // num)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(num)]
    bounds = np.cumsum([int(s) for s in sizes])[:-1]
    return tuple(np.split(x, bounds, axis=axis))


@op("Split", since=1)
def split_attr(ctx, x, split=None):
    return _split(ctx, x, ctx.attr("split") if split is None else split)


@op("Split", since=13)
def split(ctx, x, split=None):
    return _split(ctx, x, split)
