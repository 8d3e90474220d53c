"""Add, Sub, Mul, Div, Pow: elementwise with NumPy (multidirectional) broadcasting."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("Add", since=1)
def add(ctx, a, b):
    return np.add(a, b)


@op("Sub", since=1)
def sub(ctx, a, b):
    return np.subtract(a, b)


@op("Mul", since=1)
def mul(ctx, a, b):
    return np.multiply(a, b)


@op("Div", since=1)
def div(ctx, a, b):
    if a.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (C semantics), NumPy's // floors.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.trunc(np.true_divide(a, b)).astype(a.dtype)
    return np.divide(a, b)


@op("Pow", since=1)
def pow_(ctx, a, b):
    return np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b).astype(a.dtype)
