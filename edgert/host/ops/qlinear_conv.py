"""QLinearConv: integer convolution with int32 accumulation (+ int32 bias), requantised per output channel."""
from __future__ import annotations

import numpy as np

from edgert.host.int8 import int_conv, requantize, shifted
from edgert.host.registry import op


@op("QLinearConv", since=10)
def qlinear_conv(ctx, x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, b=None):
    acc = int_conv(ctx, shifted(x, x_zero_point), shifted(w, w_zero_point, axis=0))
    if b is not None:
        acc += b.astype(np.int32).reshape(1, -1, *([1] * (acc.ndim - 2)))
    ws = np.asarray(w_scale, np.float32)
    if ws.ndim == 1 and ws.size > 1:
        ws = ws.reshape(1, -1, *([1] * (acc.ndim - 2)))
    scale = np.asarray(x_scale, np.float32) * ws / np.asarray(y_scale, np.float32)
    return requantize(acc, scale, y_zero_point, y_zero_point.dtype)
