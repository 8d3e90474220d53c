"""ConstantOfShape: a tensor of the given shape filled with ``value`` (float32 0 by default)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("ConstantOfShape", since=9)
def constant_of_shape(ctx, shape):
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else value
    return np.full(tuple(int(s) for s in shape), value.reshape(-1)[0], dtype=value.dtype)
