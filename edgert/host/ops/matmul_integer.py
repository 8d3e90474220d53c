"""MatMulInteger: (A - a_zero_point) @ (B - b_zero_point) with int32 accumulation."""
from __future__ import annotations

import numpy as np

from edgert.host.int8 import int_matmul, shifted
from edgert.host.registry import op


def batched_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.matmul semantics (broadcast batch dims, 1-D operands) over the int32 kernel."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, (*batch, *a2.shape[-2:])).reshape(-1, *a2.shape[-2:])
    b3 = np.broadcast_to(b2, (*batch, *b2.shape[-2:])).reshape(-1, *b2.shape[-2:])
    out = np.stack([int_matmul(a3[i], b3[i]) for i in range(a3.shape[0])]).reshape(*batch, a2.shape[-2], b2.shape[-1])
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


@op("MatMulInteger", since=10)
def matmul_integer(ctx, a, b, a_zero_point=None, b_zero_point=None):
    # A's zero point may be per row (axis -2 of A), B's per column (axis -1 of B).
    return batched_int_matmul(shifted(a, a_zero_point, axis=a.ndim - 2 if a.ndim > 1 else None),
                              shifted(b, b_zero_point, axis=b.ndim - 1))
