"""Where: elementwise select with broadcasting."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Where", since=9)
def where(ctx, cond, x, y):
    return np.where(cond, x, y)
