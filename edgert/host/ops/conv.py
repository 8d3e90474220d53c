"""Conv (1-D/2-D/3-D, grouped, depthwise, dilated): im2col + BLAS, a Numba depthwise kernel, CSR for sparse weights."""
from __future__ import annotations

import numpy as np

from edgert.host import parallel
from edgert.host.im2col import im2col, pad_spatial, window_geometry, window_slices
from edgert.host.jit import kernel
from edgert.host.registry import op
from edgert.host.sparse import csr_matmul, maybe_csr


def depthwise_numpy(x: np.ndarray, w: np.ndarray, strides, dilations, pads_begin, out_shape) -> np.ndarray:
    """Specification of the depthwise kernel: (N, C, *spatial) with w (C, *k), zero padded -> (N, C, *out)."""
    need = [(o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_shape, strides, w.shape[1:], dilations, strict=True)]
    pads_end = [max(0, nd - n - b) for nd, n, b in zip(need, x.shape[2:], pads_begin, strict=True)]
    xp = pad_spatial(x, pads_begin, pads_end)
    out = np.zeros((*xp.shape[:2], *out_shape), dtype=np.float32)
    for off in np.ndindex(*w.shape[1:]):
        tap = w[(slice(None), *off)].reshape(1, -1, *([1] * len(out_shape)))
        out += tap * xp[(slice(None), slice(None), *window_slices(off, out_shape, strides, dilations))]
    return out


@kernel(nogil=True, fastmath=True)
def _depthwise2d(x, w, bias, lo, hi, out, sh, sw, dh, dw, top, left, hq, wq, start, stop):
    # Per channel: copy the (implicitly zero-padded) input into stride phases, phase (a, b) holding
    # padded rows a::sh and columns b::sw as one flat plane of row width wq. Every tap is then one
    # long contiguous multiply-add over a "wide" output plane (oh rows of wq columns; the columns
    # past ow are dropped at the end), which vectorises whatever the stride and however small the plane.
    n, c, oh, ow = out.shape
    height, width = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    ph = np.empty((sh, sw, hq * wq), dtype=np.float32)
    length = oh * wq
    acc = np.empty(length, dtype=np.float32)
    for nc in range(start, stop):
        i = nc // c
        ch = nc % c
        src = x[i, ch]
        for a in range(sh):
            for b in range(sw):
                plane = ph[a, b]
                for y in range(hq):
                    r = y * sh + a - top
                    base = y * wq
                    if r < 0 or r >= height:
                        for j in range(wq):
                            plane[base + j] = 0
                    else:
                        row = src[r]
                        for j in range(wq):
                            col = j * sw + b - left
                            plane[base + j] = row[col] if col >= 0 and col < width else 0
        for j in range(length):
            acc[j] = bias[ch]
        for p in range(kh):
            for q in range(kw):
                plane = ph[(p * dh) % sh, (q * dw) % sw]
                off = ((p * dh) // sh) * wq + (q * dw) // sw
                tap = plane[off:off + length]
                wv = w[ch, p, q]
                for j in range(length):
                    acc[j] += wv * tap[j]
        o = out[i, ch]
        for y in range(oh):
            for j in range(ow):
                o[y, j] = min(max(acc[y * wq + j], lo), hi)


def depthwise2d(x: np.ndarray, w: np.ndarray, strides, dilations, pads_begin, out_shape, bias=None,
                clip=(-np.inf, np.inf), threads: int = 1) -> np.ndarray:
    """Depthwise 2-D convolution (Numba) of an unpadded input, zero padding ``pads_begin`` before
    (and whatever the output size needs after), with optional bias and clamp fused."""
    n, c, h, wd = x.shape
    sh, sw = strides
    (top, left), (oh, ow) = pads_begin, out_shape
    kh, kw = w.shape[1:]
    # Rows/columns each phase needs: up to the last tap of the last output (+1 spare row for the wide plane).
    hq = oh + ((kh - 1) * dilations[0]) // sh + 1
    wq = ow + ((kw - 1) * dilations[1]) // sw
    out = np.empty((n, c, oh, ow), dtype=np.float32)
    b = np.zeros(c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    x = np.ascontiguousarray(x, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    lo, hi = np.float32(clip[0]), np.float32(clip[1])
    parallel.run_chunks(lambda s, e: _depthwise2d(x, w, b, lo, hi, out, sh, sw, dilations[0], dilations[1],
                                                  top, left, hq, wq, s, e),
                        n * c, threads, n * c * oh * wq * kh * kw)
    return out


def _prepare(ctx) -> None:
    w = ctx.const(1)
    if w is None or w.dtype != np.float32:
        return
    group = ctx.attr("group", 1)
    ctx.cache["w2"] = [np.ascontiguousarray(g.reshape(g.shape[0], -1)) for g in np.split(w, group)]
    if group == 1:
        ctx.cache["csr"] = maybe_csr(ctx.cache["w2"][0], ctx.options.sparse_threshold)


@op("Conv", since=1, prepare=_prepare)
def conv(ctx, x, w, b=None):
    kernel_shape = tuple(ctx.attr("kernel_shape") or w.shape[2:])
    strides, dilations, begin, end, out_shape = window_geometry(ctx, x.shape[2:], kernel_shape)
    group = ctx.attr("group", 1)
    n, c = x.shape[:2]
    cout = w.shape[0]
    clip = ctx.cache.get("clip")
    if group == c == cout and len(out_shape) == 2 and x.dtype == np.float32:
        return depthwise2d(x, w[:, 0], strides, dilations, begin, out_shape, b, clip or (-np.inf, np.inf), ctx.threads)
    xp = pad_spatial(x, begin, end)
    w2 = ctx.cache.get("w2") or [g.reshape(g.shape[0], -1) for g in np.split(w, group)]
    csr = ctx.cache.get("csr")
    pointwise = all(k == 1 for k in kernel_shape) and all(s == 1 for s in strides)
    outs = []
    for g, xg in enumerate(np.split(xp, group, axis=1) if group > 1 else (xp,)):
        cols = xg.reshape(n, xg.shape[1], -1) if pointwise else im2col(xg, kernel_shape, strides, dilations, out_shape)
        if csr is not None:
            outs.append(np.stack([csr_matmul(csr, cols[i], ctx.threads) for i in range(n)]))
        else:
            outs.append(parallel.matmul(w2[g], cols, ctx.threads))
    y = (outs[0] if group == 1 else np.concatenate(outs, axis=1)).reshape(n, cout, *out_shape)
    if b is not None:
        y += b.reshape(1, -1, *([1] * len(out_shape))).astype(y.dtype)
    if clip is not None:
        np.clip(y, clip[0], clip[1], out=y)
    return y.astype(x.dtype, copy=False)
