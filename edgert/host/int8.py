"""Integer matrix product with int32 accumulation (ConvInteger, MatMulInteger, QLinearConv, QLinearMatMul).

Operands arrive with their zero points already subtracted (int16 holds
uint8 - zp and int8 - zp exactly); products and sums stay in int32 as in the
ONNX integer operators.
"""
from __future__ import annotations

import numpy as np

from edgert.host import parallel
from edgert.host.jit import kernel


def int_matmul_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Specification: exact product in int64, wrapped to int32 as int32 accumulation does."""
    return (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32)


@kernel(nogil=True)
def _int_matmul(a, b, out, start, stop):
    k = a.shape[1]
    n = b.shape[1]
    for i in range(start, stop):
        row = out[i]
        for j in range(n):
            row[j] = 0
        for p in range(k):
            av = np.int32(a[i, p])
            if av == 0:
                continue
            src = b[p]
            for j in range(n):
                row[j] += av * np.int32(src[j])


def int_matmul(a: np.ndarray, b: np.ndarray, threads: int = 1) -> np.ndarray:
    """(M, K) x (K, N) -> int32 (M, N), int16 operands, int32 accumulation (Numba), rows split over ``threads``."""
    a = np.ascontiguousarray(a, dtype=np.int16)
    b = np.ascontiguousarray(b, dtype=np.int16)
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.int32)
    parallel.run_chunks(lambda s, e: _int_matmul(a, b, out, s, e), a.shape[0], threads, a.size * b.shape[1])
    return out


def requantize(acc: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """saturate(round_half_even(acc * scale) + zero_point) in ``dtype``."""
    info = np.iinfo(dtype)
    y = np.rint(acc.astype(np.float32) * np.asarray(scale, np.float32)) + np.asarray(zero_point, np.float32)
    return np.clip(y, info.min, info.max).astype(dtype)


def int_conv(ctx, xs: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """Integer convolution of zero-point-shifted operands (int16) -> int32 (N, Cout, *out); groups supported."""
    from edgert.host.im2col import im2col, pad_spatial, window_geometry

    kernel_shape = tuple(ctx.attr("kernel_shape") or ws.shape[2:])
    strides, dilations, begin, end, out_shape = window_geometry(ctx, xs.shape[2:], kernel_shape)
    group = ctx.attr("group", 1)
    n = xs.shape[0]
    xp = pad_spatial(xs, begin, end)  # pads with the zero point, i.e. 0 after the shift
    outs = []
    for xg, wg in zip(np.split(xp, group, axis=1), np.split(ws, group), strict=True):
        cols = im2col(xg, kernel_shape, strides, dilations, out_shape)
        w2 = wg.reshape(wg.shape[0], -1)
        outs.append(np.stack([int_matmul(w2, cols[i], ctx.threads) for i in range(n)]))
    return np.concatenate(outs, axis=1).reshape(n, ws.shape[0], *out_shape)


def shifted(x: np.ndarray, zero_point, axis: int | None = None) -> np.ndarray:
    """x - zero_point as int16 (exact for 8-bit data); a 1-D zero point applies along ``axis``."""
    z = np.asarray(0 if zero_point is None else zero_point).astype(np.int16)
    if z.ndim == 1 and z.size > 1 and axis is not None:
        shape = [1] * x.ndim
        shape[axis] = z.size
        z = z.reshape(shape)
    return x.astype(np.int16) - z
