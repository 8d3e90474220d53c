"""Flatten: to 2-D at ``axis``."""
from __future__ import annotations

import math

from edgert.host.registry import op


@op("Flatten", since=1)
def flatten(ctx, x):
    axis = ctx.attr("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
