"""Unsqueeze: axes (of the output) as attribute (< 13) or input (13+)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _unsqueeze(x, axes):
    axes = [int(a) for a in np.asarray(axes).reshape(-1)]
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(a % rank for a in axes)))


@op("Unsqueeze", since=1)
def unsqueeze_attr(ctx, x):
    return _unsqueeze(x, ctx.attr("axes"))


@op("Unsqueeze", since=13)
def unsqueeze(ctx, x, axes):
    return _unsqueeze(x, axes)
