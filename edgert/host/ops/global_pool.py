"""GlobalAveragePool and GlobalMaxPool: mean / max over all spatial axes, kept as size-1 axes."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("GlobalAveragePool", since=1)
def global_average_pool(ctx, x):
    return np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32).astype(x.dtype)


@op("GlobalMaxPool", since=1)
def global_max_pool(ctx, x):
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)
