"""Conv (1-D/2-D/3-D, grouped, depthwise, dilated): im2col + BLAS, a Numba depthwise kernel, CSR for sparse weights."""
from __future__ import annotations

import math

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


# Time of one depthwise kernel step (a tap on one wide-plane element; an element of the phase copy,
# scalar and branchy, counts as 3) in BLAS multiply-adds (edgert.host.parallel): MobileNetV2's layers
# took 0.10-0.19 ns a step on one thread with _depthwise2d (96 channels 112x112 -> 56x56: 1.2 ms for
# 6.5M steps); _depthwise2d_wide does its planes 1.2-1.7x faster, still well above the split threshold.
DEPTHWISE_COST = 5
DEPTHWISE_BLOCK = 2048  # outputs per block of _depthwise2d_wide (8 KB of accumulators)
DEPTHWISE_WIDE = 48  # input width from which _depthwise2d_wide runs (MobileNetV2: 56 and 112 gain, 28 loses)


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


@kernel(nogil=True, fastmath=True)
def _depthwise2d_wide(x, w, bias, lo, hi, out, sh, sw, dh, dw, top, left, hq, wq, start, stop):
    # _depthwise2d for wide planes (DEPTHWISE_WIDE). Hot loops index with uint64 (u): numba wraps
    # negative signed indices, a select per element that kept LLVM from vectorising the copy and the
    # clamp; and they take no slices, whose reference counting costs. Its many short vectorised loops
    # (each with alias checks and a remainder) made it 2-2.5x slower than _depthwise2d on 7x7 and 14x14
    # planes, and 1.2-1.7x faster on 56x56 and 112x112 ones.
    n, c, oh, ow = out.shape
    height, width = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    u = np.uint64
    xf = x.reshape((n * c, height * width))
    of = out.reshape((n * c, oh * ow))
    ph = np.empty((sh * sw, hq * wq), dtype=np.float32)
    length = oh * wq
    acc = np.empty(length, dtype=np.float32)
    for nc in range(start, stop):
        ch = nc % c
        for a in range(sh):
            for b in range(sw):
                phase = a * sw + b
                # Phase columns j0..j1 read input columns j * sw + b - left; the others are padding.
                j0 = min(wq, max(0, -((b - left) // sw)))
                j1 = max(j0, min(wq, -((b - left - width) // sw)))
                for y in range(hq):
                    r = y * sh + a - top
                    base = u(y * wq)
                    if r < 0 or r >= height:
                        for j in range(wq):
                            ph[phase, base + u(j)] = 0
                        continue
                    for j in range(j0):
                        ph[phase, base + u(j)] = 0
                    src0 = u(max(r * width + j0 * sw + b - left, 0))
                    dst0 = base + u(j0)
                    for k in range(j1 - j0):
                        ph[phase, dst0 + u(k)] = xf[nc, src0 + u(k) * u(sw)]
                    for j in range(j1, wq):
                        ph[phase, base + u(j)] = 0
        # In blocks of DEPTHWISE_BLOCK outputs, all taps per block: the block of acc stays in L1 over
        # the taps (a 112x112 plane is 51 KB).
        for j0 in range(0, length, DEPTHWISE_BLOCK):
            size = min(DEPTHWISE_BLOCK, length - j0)
            a0 = u(j0)
            bv = bias[ch]
            for j in range(size):
                acc[a0 + u(j)] = bv
            for p in range(kh):
                for q in range(kw):
                    phase = ((p * dh) % sh) * sw + (q * dw) % sw
                    t0 = u(((p * dh) // sh) * wq + (q * dw) // sw + j0)
                    wv = w[ch, p, q]
                    for j in range(size):
                        acc[a0 + u(j)] += wv * ph[phase, t0 + u(j)]
        for y in range(oh):
            s0 = u(y * wq)
            d0 = u(y * ow)
            for j in range(ow):
                v = acc[s0 + u(j)]
                of[nc, d0 + u(j)] = hi if v > hi else (lo if v < lo else v)  # a select: vectorises


def _depthwise_task(args, start, stop):
    # A native task (edgert.host.parallel.compile_task): channels [start, stop) of depthwise2d, its arguments
    # read from the int64 block at ``args`` (_depthwise_args). Compiled from this file, so its disk cache is
    # invalidated with the kernels it calls.
    a = carray(_i64_ptr(args), 24)  # noqa: F821 - injected by compile_task
    f = carray(_f32_ptr(args + 8 * 22), 3)  # noqa: F821 - lo, hi: the low halves of words 22, 23
    n, c, h, wd, kh, kw, oh, ow = a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]
    lo, hi = f[0], f[2]
    x = carray(_f32_ptr(a[0]), (n, c, h, wd))  # noqa: F821
    w = carray(_f32_ptr(a[1]), (c, kh, kw))  # noqa: F821
    bias = carray(_f32_ptr(a[2]), c)  # noqa: F821
    out = carray(_f32_ptr(a[3]), (n, c, oh, ow))  # noqa: F821
    if a[21]:
        _depthwise2d_wide(x, w, bias, lo, hi, out, a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19], start, stop)
    else:
        _depthwise2d(x, w, bias, lo, hi, out, a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19], start, stop)


def _depthwise_args(x, w, b, out, strides, dilations, pads_begin, hq, wq, wide, lo, hi) -> np.ndarray:
    args = np.zeros(24, np.int64)
    args[:22] = (x.ctypes.data, w.ctypes.data, b.ctypes.data, out.ctypes.data, *x.shape, *w.shape[1:], *out.shape[2:],
                 *strides, *dilations, *pads_begin, hq, wq, 0, wide)
    args[22:].view(np.float32)[::2] = (lo, hi)  # little-endian: the low half of each word
    return args


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
    wide = wd >= DEPTHWISE_WIDE
    fn = _depthwise2d_wide if wide else _depthwise2d
    edges = parallel.native_bounds(n * c, threads, DEPTHWISE_COST * n * c * (3 * sh * sw * hq * wq + oh * wq * kh * kw))
    if edges.size == 2:
        fn(x, w, b, lo, hi, out, sh, sw, dilations[0], dilations[1], top, left, hq, wq, 0, n * c)
        return out
    task = parallel.compile_task(_depthwise_task, _depthwise2d=_depthwise2d.compiled(),
                                 _depthwise2d_wide=_depthwise2d_wide.compiled())
    parallel.run_native(task, _depthwise_args(x, w, b, out, strides, dilations, pads_begin, hq, wq, wide, lo, hi),
                        edges, threads)
    return out


def bias_clip_numpy(y: np.ndarray, bias: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Specification of _bias_clip: y (N, C, L) + bias per channel, clamped to [lo, hi]."""
    return np.clip(y + bias.reshape(1, -1, 1), lo, hi)


@kernel(nogil=True)
def _bias_clip(y, bias, lo, hi):
    # Bias and the fused Relu/Clip in one pass over the conv output, in place (NumPy took two:
    # 0.7 ms against 0.2 ms over MobileNetV2's pointwise outputs).
    n, c, length = y.shape
    for i in range(n):
        for ch in range(c):
            bv = bias[ch]
            row = y[i, ch]
            for j in range(length):
                v = row[j] + bv
                row[j] = hi if v > hi else (lo if v < lo else v)


def im2col_matmul(w2: np.ndarray, xp: np.ndarray, kernel_shape, strides, dilations, out_shape, threads: int = 1):
    """w2 (M, C*prod(kernel)) @ im2col(xp) -> (N, M, prod(out_shape)) for a padded input ``xp``. On several
    threads each chunk of output rows gathers its own columns and multiplies them, so im2col runs in
    parallel too and its block is still in cache for the product; when the output has too few rows
    (deep layers), the columns are gathered once and the product is split by rows of w2."""
    n, m = xp.shape[0], w2.shape[0]
    per_row = math.prod(out_shape[1:])
    work = n * m * w2.shape[1] * per_row * out_shape[0]
    edges = parallel.bounds(out_shape[0], threads, work, -(-parallel.COLUMN_ALIGN // per_row))
    if len(edges) == 2:
        return parallel.matmul(w2, im2col(xp, kernel_shape, strides, dilations, out_shape), threads)
    out = np.empty((n, m, out_shape[0] * per_row), dtype=np.result_type(w2, xp))
    reach = (kernel_shape[0] - 1) * dilations[0] + 1

    def rows(a: int, b: int) -> None:
        part = xp[:, :, a * strides[0]:(b - 1) * strides[0] + reach]
        cols = im2col(part, kernel_shape, strides, dilations, (b - a, *out_shape[1:]))
        np.matmul(w2, cols, out=out[:, :, a * per_row:b * per_row])

    parallel.run_bounds(rows, edges, threads)
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
        if csr is None and not pointwise:
            outs.append(im2col_matmul(w2[g], xg, kernel_shape, strides, dilations, out_shape, ctx.threads))
            continue
        cols = xg.reshape(n, xg.shape[1], -1) if pointwise else im2col(xg, kernel_shape, strides, dilations, out_shape)
        if csr is not None:
            outs.append(np.stack([csr_matmul(csr, cols[i], ctx.threads) for i in range(n)]))
        elif cols.dtype == np.float32 and w2[g].dtype == np.float32:
            outs.append(parallel.native_matmul(w2[g], cols, ctx.threads))
        else:
            outs.append(parallel.matmul(w2[g], cols, ctx.threads))
    y = np.ascontiguousarray(outs[0] if group == 1 else np.concatenate(outs, axis=1))  # in place below
    if y.dtype == np.float32 and (b is not None or clip is not None):
        bias = np.zeros(cout, np.float32) if b is None else np.ascontiguousarray(b, np.float32)
        lo, hi = clip or (-np.inf, np.inf)
        _bias_clip(y.reshape(n, cout, -1), bias, np.float32(lo), np.float32(hi))
    y = y.reshape(n, cout, *out_shape)
    if y.dtype != np.float32:
        if b is not None:
            y += b.reshape(1, -1, *([1] * len(out_shape))).astype(y.dtype)
        if clip is not None:
            np.clip(y, clip[0], clip[1], out=y)
    return y.astype(x.dtype, copy=False)
