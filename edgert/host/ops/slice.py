"""Slice: starts/ends/axes as attributes (< 10) or inputs with steps (10+), clamped as ONNX specifies."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _slice(x, starts, ends, axes, steps):
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            index[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            index[a] = slice(s, None if e < 0 else e, st)
    return x[tuple(index)]


@op("Slice", since=1)
def slice_attr(ctx, x):
    return _slice(x, ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None)


@op("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    return _slice(x, starts, ends, axes, steps)
