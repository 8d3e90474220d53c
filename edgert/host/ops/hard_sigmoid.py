"""HardSigmoid: max(0, min(1, alpha * x + beta))."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("HardSigmoid", since=1)
def hard_sigmoid(ctx, x):
    alpha, beta = np.asarray(ctx.attr("alpha", 0.2), x.dtype), np.asarray(ctx.attr("beta", 0.5), x.dtype)
    return np.clip(alpha * x + beta, 0, 1).astype(x.dtype)
