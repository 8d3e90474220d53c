"""Transpose by ``perm`` (default: reverse the axes)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Transpose", since=1)
def transpose(ctx, x):
    return np.transpose(x, ctx.attr("perm"))
