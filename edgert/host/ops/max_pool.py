"""MaxPool: a Numba kernel for 2-D (the common case), NumPy over kernel taps otherwise; optional Indices output."""
from __future__ import annotations

import numpy as np

from edgert.host import parallel
from edgert.host.im2col import pad_spatial, required_extent, window_geometry, window_slices
from edgert.host.jit import kernel
from edgert.host.registry import op


def padded_for_pool(ctx, x, value, kernel_shape):
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    strides, dilations, begin, end, out_shape = window_geometry(ctx, x.shape[2:], kernel_shape, ceil_mode)
    need = required_extent(out_shape, kernel_shape, strides, dilations)
    # ceil_mode windows may run past the end padding: extend it with the neutral value.
    end = tuple(max(e, n - b - s) for e, n, b, s in zip(end, need, begin, x.shape[2:], strict=True))
    return pad_spatial(x, begin, end, value), strides, dilations, begin, out_shape


def max_pool_numpy(xp, kernel_shape, strides, dilations, out_shape):
    out = None
    for off in np.ndindex(*kernel_shape):
        tap = xp[(slice(None), slice(None), *window_slices(off, out_shape, strides, dilations))]
        out = tap.copy() if out is None else np.maximum(out, tap)
    return out


# Time of one window element visit in BLAS multiply-adds (edgert.host.parallel): ResNet-18's 3x3/2
# pool of 64x112x112 (1.8M visits) takes 0.9 ms on one thread.
MAX_POOL_COST = 16


@kernel(nogil=True)
def _max_pool2d(xp, out, kh, kw, sh, sw, dh, dw, start, stop):
    # Taps outermost, output columns innermost: each tap is one max over a (strided) input row into the
    # output row, which vectorises (window-by-window took 2 ms for ResNet-18's pool on one thread).
    n, c, oh, ow = out.shape
    for nc in range(start, stop):
        i = nc // c
        ch = nc % c
        for y in range(oh):
            o = out[i, ch, y]
            first = xp[i, ch, y * sh]
            for x in range(ow):
                o[x] = first[x * sw]
            for p in range(kh):
                row = xp[i, ch, y * sh + p * dh]
                for q in range(kw):
                    for x in range(ow):
                        v = row[x * sw + q * dw]
                        o[x] = v if v > o[x] else o[x]


def max_pool2d(xp, kernel_shape, strides, dilations, out_shape, threads: int = 1):
    out = np.empty((*xp.shape[:2], *out_shape), dtype=xp.dtype)
    xp = np.ascontiguousarray(xp)
    parallel.run_chunks(lambda a, b: _max_pool2d(xp, out, *kernel_shape, *strides, *dilations, a, b),
                        out.shape[0] * out.shape[1], threads, MAX_POOL_COST * out.size * kernel_shape[0] * kernel_shape[1])
    return out


def _indices(x, y, kernel_shape, strides, dilations, begin, out_shape, order):
    """Flat index (into x, row-major; column-major over spatial axes when storage_order=1) of each maximum."""
    n, c = x.shape[:2]
    best = np.full(y.shape, -1, dtype=np.int64)
    grids = np.meshgrid(*(np.arange(o) for o in out_shape), indexing="ij")
    for off in np.ndindex(*kernel_shape):
        pos = [g * s + o * d - b for g, s, o, d, b in zip(grids, strides, off, dilations, begin, strict=True)]
        inside = np.all([(p >= 0) & (p < size) for p, size in zip(pos, x.shape[2:], strict=True)], axis=0)
        clipped = [np.clip(p, 0, size - 1) for p, size in zip(pos, x.shape[2:], strict=True)]
        vals = x[(slice(None), slice(None), *clipped)]
        hit = inside & (vals == y) & (best < 0)
        dims = x.shape[2:] if order == 0 else x.shape[2:][::-1]
        flat = np.ravel_multi_index(tuple(clipped) if order == 0 else tuple(clipped[::-1]), dims)
        best = np.where(hit, flat, best)
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * int(np.prod(x.shape[2:]))
    return best + base.reshape(n, c, *([1] * len(out_shape)))


@op("MaxPool", since=1)
def max_pool(ctx, x):
    kernel_shape = tuple(ctx.attr("kernel_shape"))
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp, strides, dilations, begin, out_shape = padded_for_pool(ctx, x, lowest, kernel_shape)
    if len(out_shape) == 2 and x.dtype in (np.float32, np.float64):
        y = max_pool2d(xp, kernel_shape, strides, dilations, out_shape, ctx.threads)
    else:
        y = max_pool_numpy(xp, kernel_shape, strides, dilations, out_shape)
    if len(ctx.outputs) > 1 and ctx.outputs[1]:
        return y, _indices(x, y, kernel_shape, strides, dilations, begin, out_shape, ctx.attr("storage_order", 0))
    return y
