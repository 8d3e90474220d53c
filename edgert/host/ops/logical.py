"""Not, And, Or, Xor on bool tensors (broadcasting)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Not", since=1)
def not_(ctx, x):
    return np.logical_not(x)


@op("And", since=1)
def and_(ctx, a, b):
    return np.logical_and(a, b)


@op("Or", since=1)
def or_(ctx, a, b):
    return np.logical_or(a, b)


@op("Xor", since=1)
def xor(ctx, a, b):
    return np.logical_xor(a, b)
