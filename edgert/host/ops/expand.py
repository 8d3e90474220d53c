"""Expand: broadcast to ``shape`` (bidirectionally: a 1 in ``shape`` keeps the input's size)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Expand", since=8)
def expand(ctx, x, shape):
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))))
