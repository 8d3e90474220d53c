"""Gather along ``axis`` (negative indices count from the end)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Gather", since=1)
def gather(ctx, x, indices):
    return np.take(x, indices.astype(np.int64), axis=ctx.attr("axis", 0))
