"""ScatterElements: a copy of ``data`` with ``updates`` written (or reduced) at ``indices`` along ``axis``."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@op("ScatterElements", since=11)
def scatter_elements(ctx, data, indices, updates):
    axis = ctx.attr("axis", 0) % data.ndim
    idx = indices.astype(np.int64)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    grid = list(np.indices(idx.shape, sparse=True))
    grid[axis] = idx
    out = data.copy()
    reduction = ctx.attr("reduction", "none")
    if reduction == "none":
        out[tuple(grid)] = updates
    else:
        _REDUCE[reduction].at(out, tuple(grid), updates)
    return out
