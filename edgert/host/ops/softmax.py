"""Softmax: over one axis (opset 13+), or over the axes from ``axis`` on, flattened (before 13)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _softmax(x, axis):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@op("Softmax", since=1)
def softmax_2d(ctx, x):
    axis = ctx.attr("axis", 1) % max(1, x.ndim)
    flat = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    return _softmax(flat, 1).reshape(x.shape)


@op("Softmax", since=13)
def softmax(ctx, x):
    return _softmax(x, ctx.attr("axis", -1))
