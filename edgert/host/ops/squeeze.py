"""Squeeze: axes as attribute (< 13) or input (13+); none given = every size-1 axis."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _squeeze(x, axes):
    if axes is None or len(axes) == 0:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) for a in np.asarray(axes).reshape(-1)))


@op("Squeeze", since=1)
def squeeze_attr(ctx, x):
    return _squeeze(x, ctx.attr("axes"))


@op("Squeeze", since=13)
def squeeze(ctx, x, axes=None):
    return _squeeze(x, axes)
