"""Gelu (opset 20): x * Phi(x), exact (erf) or the tanh approximation."""
from __future__ import annotations

import math

import numpy as np

from edgert.host.ops.erf import erf_kernel
from edgert.host.registry import op


@op("Gelu", since=20)
def gelu(ctx, x):
    if ctx.attr("approximate", "none") == "tanh":
        inner = np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)
        return (0.5 * x * (1 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x * (1 + erf_kernel(x / np.sqrt(np.asarray(2, x.dtype)), ctx.threads))).astype(x.dtype)
