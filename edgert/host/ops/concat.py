"""Concat along ``axis``."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Concat", since=1)
def concat(ctx, *xs):
    return np.concatenate(xs, axis=ctx.attr("axis", 1))
