"""HardSwish: x * max(0, min(1, x / 6 + 1/2))."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("HardSwish", since=14)
def hard_swish(ctx, x):
    return (x * np.clip(x / np.asarray(6, x.dtype) + np.asarray(0.5, x.dtype), 0, 1)).astype(x.dtype)
