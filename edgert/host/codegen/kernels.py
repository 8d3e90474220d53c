"""Numba kernels the generated whole-graph functions call (float32, C-contiguous, single-threaded).

Each has a NumPy twin in ``edgert.host.ops`` (the specification) and is tested against it in
tests/host/codegen/test_kernels.py. They allocate their outputs: numba's allocator costs well under a
microsecond, and a value that is never shared needs no buffer bookkeeping in the generated code.
"""
from __future__ import annotations

import math

import numpy as np

from edgert.host.jit import kernel


@kernel(nogil=True, fastmath=True)
def conv2d(x, w2, bias, kh, kw, sh, sw, dh, dw, top, left, oh, ow, lo, hi):
    """Dense 2-D convolution, zero padding ``top``/``left`` (and whatever the output needs after):
    im2col straight from the unpadded input, one BLAS product, bias and clamp."""
    n, c, height, width = x.shape
    cout = w2.shape[0]
    out = np.empty((n, cout, oh, ow), dtype=np.float32)
    pointwise = kh == 1 and kw == 1 and sh == 1 and sw == 1 and top == 0 and left == 0 and oh == height and ow == width
    cols = np.empty((c * kh * kw, oh * ow), dtype=np.float32)
    for i in range(n):
        if pointwise:
            y = np.dot(w2, x[i].reshape((c, height * width)))
        else:
            for ch in range(c):
                for p in range(kh):
                    for q in range(kw):
                        row = cols[(ch * kh + p) * kw + q]
                        for yo in range(oh):
                            iy = yo * sh + p * dh - top
                            base = yo * ow
                            if iy < 0 or iy >= height:
                                for xo in range(ow):
                                    row[base + xo] = 0
                            else:
                                src = x[i, ch, iy]
                                for xo in range(ow):
                                    ix = xo * sw + q * dw - left
                                    row[base + xo] = src[ix] if ix >= 0 and ix < width else 0
            y = np.dot(w2, cols)
        o = out[i].reshape((cout, oh * ow))
        for co in range(cout):
            b = bias[co]
            for j in range(oh * ow):
                o[co, j] = min(max(y[co, j] + b, lo), hi)
    return out


@kernel(nogil=True, fastmath=True)
def dense(a, w, bias, lo, hi):
    """a (M, K) @ w (K, N) + bias (N,), clamped."""
    y = np.dot(a, w)
    m, n = y.shape
    for i in range(m):
        for j in range(n):
            y[i, j] = min(max(y[i, j] + bias[j], lo), hi)
    return y


@kernel(nogil=True)
def batched_matmul(a, b):
    """a (B, M, K) @ b (B, K, N), one BLAS product per batch entry."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.float32)
    for i in range(a.shape[0]):
        out[i] = np.dot(a[i], b[i])
    return out


@kernel(nogil=True, fastmath=True)
def max_pool2d(x, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
    """Max pooling; padding (-inf) is skipped rather than materialised."""
    n, c, height, width = x.shape
    out = np.empty((n, c, oh, ow), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            src = x[i, ch]
            for yo in range(oh):
                for xo in range(ow):
                    m = -np.inf
                    for p in range(kh):
                        iy = yo * sh + p * dh - top
                        if iy < 0 or iy >= height:
                            continue
                        for q in range(kw):
                            ix = xo * sw + q * dw - left
                            if ix >= 0 and ix < width and src[iy, ix] > m:
                                m = src[iy, ix]
                    out[i, ch, yo, xo] = m
    return out


@kernel(nogil=True, fastmath=True)
def mean_middle(x):
    """x (A, R, B) -> mean over R: (A, B), accumulated in float64."""
    a, r, b = x.shape
    out = np.empty((a, b), dtype=np.float32)
    acc = np.empty(b, dtype=np.float64)
    for i in range(a):
        acc[:] = 0
        for k in range(r):
            for j in range(b):
                acc[j] += x[i, k, j]
        for j in range(b):
            out[i, j] = acc[j] / r
    return out


@kernel(nogil=True, fastmath=True)
def layer_norm(x, scale, bias, eps):
    """Rows of x (M, D) normalised to zero mean and unit variance, then * scale + bias."""
    m, d = x.shape
    out = np.empty((m, d), dtype=np.float32)
    for i in range(m):
        s = 0.0
        for j in range(d):
            s += x[i, j]
        mean = s / d
        v = 0.0
        for j in range(d):
            t = x[i, j] - mean
            v += t * t
        inv = 1.0 / math.sqrt(v / d + eps)
        for j in range(d):
            out[i, j] = (x[i, j] - mean) * inv * scale[j] + bias[j]
    return out


@kernel(nogil=True)
def softmax_rows(x):
    """Softmax over the rows of x (M, D)."""
    m, d = x.shape
    out = np.empty((m, d), dtype=np.float32)
    for i in range(m):
        top = x[i, 0]
        for j in range(1, d):
            top = max(top, x[i, j])
        s = 0.0
        for j in range(d):
            e = math.exp(x[i, j] - top)
            out[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(d):
            out[i, j] *= inv
    return out


# Elementwise work stays in kernels too: numba fuses chained array expressions of the generated code
# into one expression tree, duplicating every value used twice (20 chained adds took 330 s to compile).

ADD, SUB, MUL, DIV = 0, 1, 2, 3


@kernel(nogil=True, fastmath=True)
def binary4(a, b, op, out_shape):
    """a op b with broadcasting, both 4-D (size-1 axes broadcast) -> out_shape."""
    out = np.empty(out_shape, dtype=np.float32)
    n0, n1, n2, n3 = out_shape
    # Stride multipliers: 0 on a broadcast (size-1) axis.
    a0, a1, a2, a3 = min(a.shape[0] - 1, 1), min(a.shape[1] - 1, 1), min(a.shape[2] - 1, 1), min(a.shape[3] - 1, 1)
    b0, b1, b2, b3 = min(b.shape[0] - 1, 1), min(b.shape[1] - 1, 1), min(b.shape[2] - 1, 1), min(b.shape[3] - 1, 1)
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                ra = a[i * a0, j * a1, k * a2]
                rb = b[i * b0, j * b1, k * b2]
                ro = out[i, j, k]
                if op == ADD:
                    for m in range(n3):
                        ro[m] = ra[m * a3] + rb[m * b3]
                elif op == SUB:
                    for m in range(n3):
                        ro[m] = ra[m * a3] - rb[m * b3]
                elif op == MUL:
                    for m in range(n3):
                        ro[m] = ra[m * a3] * rb[m * b3]
                else:
                    for m in range(n3):
                        ro[m] = ra[m * a3] / rb[m * b3]
    return out


RELU, CLIP, SIGMOID, TANH, EXP, SQRT, ABS, NEG, HARD_SIGMOID, HARD_SWISH, ERF = range(11)


@kernel(nogil=True, fastmath=True)
def unary(x, op, p, q):
    """Elementwise op of x with parameters p, q (CLIP: bounds; HARD_SIGMOID/HARD_SWISH: alpha, beta)."""
    flat = x.reshape(x.size)
    out = np.empty(x.size, dtype=np.float32)
    if op == RELU:
        for i in range(x.size):
            out[i] = max(flat[i], 0)
    elif op == CLIP:
        for i in range(x.size):
            out[i] = min(max(flat[i], p), q)
    elif op == SIGMOID:
        for i in range(x.size):
            out[i] = 1 / (1 + math.exp(-flat[i]))
    elif op == TANH:
        for i in range(x.size):
            out[i] = math.tanh(flat[i])
    elif op == EXP:
        for i in range(x.size):
            out[i] = math.exp(flat[i])
    elif op == SQRT:
        for i in range(x.size):
            out[i] = math.sqrt(flat[i]) if flat[i] >= 0 else np.nan
    elif op == ABS:
        for i in range(x.size):
            out[i] = abs(flat[i])
    elif op == NEG:
        for i in range(x.size):
            out[i] = -flat[i]
    elif op == HARD_SIGMOID:
        for i in range(x.size):
            out[i] = min(max(flat[i] * p + q, 0), 1)
    elif op == HARD_SWISH:
        for i in range(x.size):
            out[i] = flat[i] * min(max(flat[i] * p + q, 0), 1)
    else:
        for i in range(x.size):
            out[i] = math.erf(flat[i])
    return out.reshape(x.shape)


@kernel(nogil=True)
def transpose6(x, out_shape, strides):
    """out[i0..i5] = flat x[sum(i * stride)]: a transpose given the input's strides permuted (elements)."""
    flat = x.reshape(x.size)
    out = np.empty(out_shape, dtype=np.float32)
    o = out.reshape(out.size)
    n0, n1, n2, n3, n4, n5 = out_shape
    s0, s1, s2, s3, s4, s5 = strides
    j = 0
    for i0 in range(n0):
        for i1 in range(n1):
            for i2 in range(n2):
                for i3 in range(n3):
                    for i4 in range(n4):
                        base = i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3 + i4 * s4
                        for i5 in range(n5):
                            o[j] = flat[base + i5 * s5]
                            j += 1
    return out


@kernel(nogil=True)
def place3(out, x, offset):
    """out (A, T, B)[:, offset:offset + x.shape[1], :] = x (A, R, B): one Concat input or a Pad's interior."""
    a, r, b = x.shape
    for i in range(a):
        for k in range(r):
            for j in range(b):
                out[i, offset + k, j] = x[i, k, j]


@kernel(nogil=True)
def pad4(x, out_shape, begin, value):
    """Constant padding of a 4-D x: out_shape filled with value, x placed at begin."""
    out = np.full(out_shape, value, dtype=np.float32)
    n0, n1, n2, n3 = x.shape
    b0, b1, b2, b3 = begin
    for i in range(n0):
        for j in range(n1):
            for k in range(n2):
                for m in range(n3):
                    out[b0 + i, b1 + j, b2 + k, b3 + m] = x[i, j, k, m]
    return out


@kernel(nogil=True, fastmath=True)
def channel_affine(x, mul, add):
    """x (N, C, S) * mul (C,) + add (C,): an inference BatchNormalization."""
    n, c, s = x.shape
    out = np.empty((n, c, s), dtype=np.float32)
    for i in range(n):
        for ch in range(c):
            for j in range(s):
                out[i, ch, j] = x[i, ch, j] * mul[ch] + add[ch]
    return out
