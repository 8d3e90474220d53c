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


# Depthwise kernel, channel-last: blocks of DEPTHWISE_LANES channels are transposed (16x16 tiles, vector
# shuffles) into a zero-padded channel-last buffer, so that each tap is one vector FMA over the block's
# channels for an output pixel, whatever the plane size; the outputs go back through the same transpose.
# The NCHW kernels it replaced (stride phases copied into a padded plane, one contiguous multiply-add per
# tap) ran 1.1-11 G multiply-adds/s on MobileNetV2's layers, the short loops of 7x7 and 14x14 planes
# being the slowest; this one 7-17 (all its layers: 1.6 ms against 4.0 at 1 thread). Written as LLVM IR
# because numba has no vector types: numba's loop over the lanes stayed scalar (the accumulator array
# might alias the inputs) and its transposes ran at ~0.4 elements a cycle.
DEPTHWISE_LANES = 16  # channels per block: one <16 x float> vector (an AVX-512 register, two AVX2 ones)
DEPTHWISE_PIXELS = 4  # output pixels per step: four independent FMA chains sharing each weight load
DEPTHWISE_BUFFER = 32768  # bytes of the padded input buffer: output rows are done in bands that fit it
# Time of the kernel in BLAS multiply-adds (edgert.host.parallel): per tap and output element, plus per
# input element (its transposes). MobileNetV2's layers took 0.06-0.1 ns per tap (32@112 stride 1: 3.6M taps
# in 0.21 ms; 96@112 stride 2: 2.7M taps and 1.2M inputs in 0.28 ms; 960@7: 0.42M taps in 43 us).
DEPTHWISE_COST = 2
DEPTHWISE_COPY_COST = 4
DEPTHWISE_WIDE = 48  # input width from which fewer channels than DEPTHWISE_LANES take _depthwise2d_wide
DEPTHWISE_BLOCK = 2048  # outputs per block of _depthwise2d_wide (8 KB of accumulators)

_tile_in = _tile_out = _tap_sum1 = _tap_sums = None  # LLVM intrinsics, set by _define_depthwise_intrinsics()


def _define_depthwise_intrinsics() -> None:
    """Define the vector pieces of _depthwise2d: the two 16x16 transposes and the taps of an output pixel."""
    global _tile_in, _tile_out, _tap_sum1, _tap_sums
    if _tile_in is not None:
        return
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    lanes = DEPTHWISE_LANES
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(f32, lanes)
    vptr = ir.PointerType(vec)

    def data(context, builder, ty, val):
        return context.make_array(ty)(context, builder, val).data

    def load(builder, base, offset):
        return builder.load(builder.bitcast(builder.gep(base, [offset]), vptr), align=4)

    def store(builder, v, base, offset):
        builder.store(v, builder.bitcast(builder.gep(base, [offset]), vptr), align=4)

    def const(v):
        return ir.Constant(i64, v)

    def transpose(builder, rows):
        # Swap bit b of the row index with bit b of the lane index, for b = 8, 4, 2, 1: a transpose.
        rows, b = list(rows), lanes // 2
        while b:
            lo = ir.Constant(ir.VectorType(i32, lanes), [j + lanes - b if j & b else j for j in range(lanes)])
            hi = ir.Constant(ir.VectorType(i32, lanes), [j + lanes if j & b else j + b for j in range(lanes)])
            for r in (r for r in range(lanes) if not r & b):
                rows[r], rows[r + b] = (builder.shuffle_vector(rows[r], rows[r + b], lo),
                                        builder.shuffle_vector(rows[r], rows[r + b], hi))
            b //= 2
        return rows

    @intrinsic
    def tile_in(typingctx, src, s0, s_step, dst, pos, p0, d0):
        # Rows i < lanes of src at s0 + i * s_step (channels), transposed: row j (pixel p0 + j) stored at
        # dst[d0 + pos[p0 + j]] (its place in the padded channel-last buffer).
        def codegen(context, builder, sig, args):
            sp, dp, pp = (data(context, builder, sig.args[i], args[i]) for i in (0, 3, 4))
            rows = [load(builder, sp, builder.add(args[1], builder.mul(args[2], const(i)))) for i in range(lanes)]
            for j, v in enumerate(transpose(builder, rows)):
                off = builder.load(builder.gep(pp, [builder.add(args[5], const(j))]))
                store(builder, v, dp, builder.add(args[6], off))
            return context.get_dummy_value()
        return types.void(src, types.int64, types.int64, dst, pos, types.int64, types.int64), codegen

    @intrinsic
    def tile_out(typingctx, src, s0, dst, d0, d_step):
        # Rows i < lanes of src at s0 + i * lanes (pixels, channel-last), transposed: row j (a channel)
        # stored at dst[d0 + j * d_step].
        def codegen(context, builder, sig, args):
            sp, dp = data(context, builder, sig.args[0], args[0]), data(context, builder, sig.args[2], args[2])
            rows = [load(builder, sp, builder.add(args[1], const(lanes * i))) for i in range(lanes)]
            for j, v in enumerate(transpose(builder, rows)):
                store(builder, v, dp, builder.add(args[3], builder.mul(args[4], const(j))))
            return context.get_dummy_value()
        return types.void(src, types.int64, dst, types.int64, types.int64), codegen

    def tap_sum(pixels):
        @intrinsic
        def tap_sum(typingctx, xt, wt, bt, offs, base, step, lo, hi, ot, o):
            # ``pixels`` outputs (at xt[base + i * step], stored at ot[o + i * lanes]): bias plus the taps
            # (offsets offs, weights wt[t * lanes]), clamped to [lo, hi]; the taps in a loop, the pixels unrolled.
            def codegen(context, builder, sig, args):
                xp, wp, bp, op, outp = (data(context, builder, sig.args[i], args[i]) for i in (0, 1, 2, 3, 8))
                ntap = context.make_array(sig.args[3])(context, builder, args[3]).nitems
                base, step, o = args[4], args[5], args[9]
                name = f"llvm.fma.v{lanes}f32"
                fma = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vec, [vec] * 3), name)
                start = load(builder, bp, const(0))
                bases = [builder.add(base, builder.mul(step, const(i))) for i in range(pixels)]
                fn, pre = builder.function, builder.block
                head, body, done = (fn.append_basic_block(f"dw.{n}") for n in ("head", "body", "done"))
                builder.branch(head)
                builder.position_at_end(head)
                t = builder.phi(i64)
                t.add_incoming(const(0), pre)
                accs = [builder.phi(vec) for _ in range(pixels)]
                for a in accs:
                    a.add_incoming(start, pre)
                builder.cbranch(builder.icmp_signed("<", t, ntap), body, done)
                builder.position_at_end(body)
                off = builder.load(builder.gep(op, [t]))
                wv = load(builder, wp, builder.mul(t, const(lanes)))
                for a, b in zip(accs, bases, strict=True):
                    a.add_incoming(builder.call(fma, [wv, load(builder, xp, builder.add(b, off)), a]), body)
                t.add_incoming(builder.add(t, const(1)), body)
                builder.branch(head)
                builder.position_at_end(done)
                lo, hi = (builder.shuffle_vector(builder.insert_element(ir.Constant(vec, None), s, ir.Constant(i32, 0)),
                                                 ir.Constant(vec, None), ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
                          for s in (args[6], args[7]))
                for i, acc in enumerate(accs):
                    v = builder.select(builder.fcmp_ordered(">", acc, hi), hi, acc)
                    v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
                    store(builder, v, outp, builder.add(o, const(i * lanes)))
                return context.get_dummy_value()
            return types.void(xt, wt, bt, offs, types.int64, types.int64, types.float32, types.float32, ot, types.int64), codegen
        return tap_sum

    _tile_out, _tap_sum1, _tap_sums = tile_out, tap_sum(1), tap_sum(DEPTHWISE_PIXELS)
    _tile_in = tile_in  # last: it marks the set as defined


@kernel(nogil=True, fastmath=True, setup=_define_depthwise_intrinsics)
def _depthwise2d(x, w, bias, lo, hi, out, sh, sw, dh, dw, top, left, band, start, stop):
    # Channels [start, stop) of the flat (image, channel) index, DEPTHWISE_LANES at a time (a block ends
    # at the end of an image; lanes past a short block compute leftovers that are not stored), output
    # rows ``band`` at a time. Unsigned indices (u) where numba would add a select for negative ones.
    n, c, oh, ow = out.shape
    height, width = x.shape[2], x.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    lanes = DEPTHWISE_LANES
    step = DEPTHWISE_PIXELS
    u = np.uint64
    hw, ohw, ntap = height * width, oh * ow, kh * kw
    wp = (ow - 1) * sw + (kw - 1) * dw + 1  # padded columns the outputs read
    xf = x.reshape(n * c * hw)
    of = out.reshape(n * c * ohw)
    wf = w.reshape((c, ntap))
    xt = np.zeros(((band - 1) * sh + (kh - 1) * dh + 1) * wp * lanes, np.float32)
    ot = np.empty(band * ow * lanes, np.float32)
    wt = np.zeros(ntap * lanes, np.float32)
    bt = np.zeros(lanes, np.float32)
    offs = np.empty(ntap, np.int64)
    for p in range(kh):
        for q in range(kw):
            offs[p * kw + q] = (p * dh * wp + q * dw) * lanes
    pos = np.empty(hw, np.int64)  # where each input pixel goes in the padded plane (a band is a window of it)
    for r in range(height):
        for j in range(width):
            pos[r * width + j] = ((r + top) * wp + j + left) * lanes
    c0, c1 = min(wp, left), min(wp, left + width)  # padded columns [c0, c1) hold input columns
    nc = start
    while nc < stop:
        ch = nc % c
        nb = min(lanes, stop - nc, c - ch)
        full = nb == lanes
        for k in range(nb):
            bt[k] = bias[ch + k]
            for t in range(ntap):
                wt[u(t * lanes + k)] = wf[ch + k, t]
        for y0 in range(0, oh, band):
            y1 = min(oh, y0 + band)
            r0 = y0 * sh - top  # input row of the band's first buffer row
            rows = (y1 - 1 - y0) * sh + (kh - 1) * dh + 1
            for rr in range(rows):  # the padding: rows outside the input, columns beside it
                r = r0 + rr
                d = u(rr * wp * lanes)
                if r < 0 or r >= height:
                    for j in range(wp * lanes):
                        xt[d + u(j)] = 0
                    continue
                for j in range(c0 * lanes):
                    xt[d + u(j)] = 0
                for j in range(c1 * lanes, wp * lanes):
                    xt[d + u(j)] = 0
            d0 = -(y0 * sh) * wp * lanes
            ra, rb = max(r0, 0), min(r0 + rows, height)
            pa, pb = ra * width, rb * width
            if c1 - left < width:  # input columns past the last one read: those rows one by one
                for r in range(ra, rb):
                    for j in range(c1 - left):
                        for k in range(nb):
                            xt[u(d0 + pos[r * width + j] + k)] = xf[(nc + k) * hw + r * width + j]
                pb = pa
            p = pa
            while full and p + lanes <= pb:
                _tile_in(xf, nc * hw + p, hw, xt, pos, p, d0)  # noqa: F821 - defined before compiling
                p += lanes
            if full and pa + lanes <= p < pb:  # the rest as a tile overlapping the last: same values again
                _tile_in(xf, nc * hw + pb - lanes, hw, xt, pos, pb - lanes, d0)  # noqa: F821
                p = pb
            while p < pb:
                for k in range(nb):
                    xt[u(d0 + pos[p] + k)] = xf[(nc + k) * hw + p]
                p += 1
            for y in range(y0, y1):
                row_in, row_out = (y - y0) * sh * wp * lanes, (y - y0) * ow * lanes
                j = 0
                while j + step <= ow:
                    _tap_sums(xt, wt, bt, offs, row_in + j * sw * lanes, sw * lanes, lo, hi, ot, row_out + j * lanes)  # noqa: F821
                    j += step
                if step <= j < ow:  # overlapping the last step: 7 outputs take 2 steps instead of 1 + 3 single ones
                    j = ow - step
                    _tap_sums(xt, wt, bt, offs, row_in + j * sw * lanes, sw * lanes, lo, hi, ot, row_out + j * lanes)  # noqa: F821
                    j = ow
                while j < ow:
                    _tap_sum1(xt, wt, bt, offs, row_in + j * sw * lanes, sw * lanes, lo, hi, ot, row_out + j * lanes)  # noqa: F821
                    j += 1
            m = (y1 - y0) * ow
            o0 = nc * ohw + y0 * ow
            j = 0
            while full and j + lanes <= m:
                _tile_out(ot, j * lanes, of, o0 + j, ohw)  # noqa: F821
                j += lanes
            if full and lanes <= j < m:
                _tile_out(ot, (m - lanes) * lanes, of, o0 + m - lanes, ohw)  # noqa: F821
                j = m
            while j < m:
                for k in range(nb):
                    of[u(o0 + k * ohw + j)] = ot[u(j * lanes + k)]
                j += 1
        nc += nb


@kernel(nogil=True, fastmath=True)
def _depthwise2d_wide(x, w, bias, lo, hi, out, sh, sw, dh, dw, top, left, hq, wq, start, stop):
    # NCHW, one channel at a time, for fewer channels than DEPTHWISE_LANES on wide planes (DEPTHWISE_WIDE),
    # where _depthwise2d's lanes would mostly idle (4 channels at 112x112: 43 us here, 227 us there).
    # Per channel, the (implicitly zero-padded) input is copied into stride phases, phase (a, b) holding
    # padded rows a::sh and columns b::sw as one flat plane of row width wq; every tap is then one long
    # contiguous multiply-add over a "wide" output plane (oh rows of wq columns; the columns past ow are
    # dropped at the end). Hot loops index with uint64 (u): numba wraps negative signed indices, a select
    # per element that kept LLVM from vectorising the copy and the clamp; and they take no slices, whose
    # reference counting costs. On planes narrower than DEPTHWISE_WIDE its short loops lose to _depthwise2d.
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


def depthwise_band(out_shape, kernel_shape, strides, dilations) -> int:
    """Output rows per band of _depthwise2d: as many as keep its padded input buffer within DEPTHWISE_BUFFER."""
    wp = (out_shape[1] - 1) * strides[1] + (kernel_shape[1] - 1) * dilations[1] + 1
    return max(1, min(out_shape[0], DEPTHWISE_BUFFER // (4 * DEPTHWISE_LANES * wp * strides[0])))


def depthwise_phases(out_shape, kernel_shape, strides, dilations) -> tuple[int, int]:
    """Rows and columns of each stride phase of _depthwise2d_wide: up to the last tap of the last output
    (+1 spare row for the wide plane)."""
    hq = out_shape[0] + ((kernel_shape[0] - 1) * dilations[0]) // strides[0] + 1
    wq = out_shape[1] + ((kernel_shape[1] - 1) * dilations[1]) // strides[1]
    return hq, wq


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
        _depthwise2d_wide(x, w, bias, lo, hi, out, a[12], a[13], a[14], a[15], a[16], a[17], a[19], a[20], start, stop)
    else:
        _depthwise2d(x, w, bias, lo, hi, out, a[12], a[13], a[14], a[15], a[16], a[17], a[18], start, stop)


def _depthwise_args(x, w, b, out, strides, dilations, pads_begin, band, hq, wq, wide, lo, hi) -> np.ndarray:
    args = np.zeros(24, np.int64)
    args[:22] = (x.ctypes.data, w.ctypes.data, b.ctypes.data, out.ctypes.data, *x.shape, *w.shape[1:], *out.shape[2:],
                 *strides, *dilations, *pads_begin, band, hq, wq, wide)
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
    band = depthwise_band(out_shape, (kh, kw), strides, dilations)
    out = np.empty((n, c, oh, ow), dtype=np.float32)
    b = np.zeros(c, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32)
    x = np.ascontiguousarray(x, np.float32)
    w = np.ascontiguousarray(w, np.float32)
    lo, hi = np.float32(clip[0]), np.float32(clip[1])
    hq, wq = depthwise_phases(out_shape, (kh, kw), strides, dilations)
    wide = c < DEPTHWISE_LANES and wd >= DEPTHWISE_WIDE
    work = n * c * (DEPTHWISE_COST * oh * ow * kh * kw + DEPTHWISE_COPY_COST * h * wd)
    # Chunks of whole channel blocks where blocks tile the channels: a short block transposes element by element.
    align = DEPTHWISE_LANES if c % DEPTHWISE_LANES == 0 else 1
    edges = parallel.native_bounds(n * c, threads, work, align, align)
    if edges.size == 2 and wide:
        _depthwise2d_wide(x, w, b, lo, hi, out, sh, sw, dilations[0], dilations[1], top, left, hq, wq, 0, n * c)
    elif edges.size == 2:
        _depthwise2d(x, w, b, lo, hi, out, sh, sw, dilations[0], dilations[1], top, left, band, 0, n * c)
    else:
        task = parallel.compile_task(_depthwise_task, _depthwise2d=_depthwise2d.compiled(),
                                     _depthwise2d_wide=_depthwise2d_wide.compiled())
        parallel.run_native(task, _depthwise_args(x, w, b, out, strides, dilations, pads_begin, band, hq, wq, wide, lo, hi),
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
