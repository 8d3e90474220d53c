"""QLinearMatMul: integer product with int32 accumulation, requantised to the output's scale/zero point."""
from __future__ import annotations

import numpy as np

from edgert.host.int8 import requantize, shifted
from edgert.host.ops.matmul_integer import batched_int_matmul
from edgert.host.registry import op


@op("QLinearMatMul", since=10)
def qlinear_matmul(ctx, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = batched_int_matmul(shifted(a, a_zero_point, axis=a.ndim - 2), shifted(b, b_zero_point, axis=b.ndim - 1))
    scale = np.asarray(a_scale, np.float32) * np.asarray(b_scale, np.float32) / np.asarray(y_scale, np.float32)
    return requantize(acc, scale, y_zero_point, y_zero_point.dtype)
