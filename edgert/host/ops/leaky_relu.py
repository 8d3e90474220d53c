"""LeakyRelu: x if x >= 0 else alpha * x."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("LeakyRelu", since=1)
def leaky_relu(ctx, x):
    return np.where(x >= 0, x, x * np.asarray(ctx.attr("alpha", 0.01), x.dtype))
