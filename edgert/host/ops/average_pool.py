"""AveragePool: sum over kernel taps divided by the number of taps inside the input (or the padded input)."""
from __future__ import annotations

import numpy as np

from edgert.host.im2col import window_geometry, window_slices
from edgert.host.ops.max_pool import padded_for_pool
from edgert.host.registry import op


@op("AveragePool", since=1)
def average_pool(ctx, x):
    kernel_shape = tuple(ctx.attr("kernel_shape"))
    xp, strides, dilations, begin, out_shape = padded_for_pool(ctx, x, 0, kernel_shape)
    # 1 where a tap counts: the input itself, or input + explicit pads with count_include_pad.
    mask = np.zeros((1, 1, *xp.shape[2:]), dtype=np.float32)
    if ctx.attr("count_include_pad", 0):
        end = window_geometry(ctx, x.shape[2:], kernel_shape, bool(ctx.attr("ceil_mode", 0)))[3]
        region = tuple(slice(0, b + n + e) for b, n, e in zip(begin, x.shape[2:], end, strict=True))
    else:
        region = tuple(slice(b, b + n) for b, n in zip(begin, x.shape[2:], strict=True))
    mask[(0, 0, *region)] = 1
    total = np.zeros((*x.shape[:2], *out_shape), dtype=np.float64 if x.dtype == np.float64 else np.float32)
    count = np.zeros((1, 1, *out_shape), dtype=np.float32)
    for off in np.ndindex(*kernel_shape):
        sl = (slice(None), slice(None), *window_slices(off, out_shape, strides, dilations))
        total += xp[sl]
        count += mask[sl]
    return (total / np.maximum(count, 1)).astype(x.dtype)
