"""Shape as int64, optionally a [start, end) range of it (opset 15)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Shape", since=1)
def shape(ctx, x):
    start, end = ctx.attr("start", 0), ctx.attr("end")
    return np.array(x.shape[start:end], dtype=np.int64)
