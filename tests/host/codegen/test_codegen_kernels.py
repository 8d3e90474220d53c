"""The kernels of generated whole-graph functions against their NumPy twins (the interpreter's specification)."""
from __future__ import annotations

import math

import numpy as np
import pytest

RNG = np.random.default_rng(0)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("cin,cout,size,kernel,stride,dilation,pad", [
    (3, 5, (7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    (4, 6, (9, 8), (3, 2), (2, 1), (1, 2), (2, 0)),
    (5, 7, (6, 6), (1, 1), (1, 1), (1, 1), (0, 0)),  # pointwise: one product, no im2col
    (2, 3, (1, 17), (1, 3), (1, 1), (1, 4), (0, 4)),  # a 1-D convolution as lowered
])
def test_conv2d_matches_im2col_and_matmul(cin, cout, size, kernel, stride, dilation, pad):
    from edgert.host.codegen.kernels import conv2d
    from edgert.host.im2col import im2col, pad_spatial

    x, w, b = _f32(2, cin, *size), _f32(cout, cin, *kernel), _f32(cout)
    out = tuple((n + 2 * p - (k - 1) * d - 1) // s + 1 for n, p, k, d, s in zip(size, pad, kernel, dilation, stride, strict=True))
    cols = im2col(pad_spatial(x, pad, pad), kernel, stride, dilation, out)
    want = (w.reshape(cout, -1) @ cols).reshape(2, cout, *out) + b[:, None, None]
    got = conv2d(x, w.reshape(cout, -1), b, *kernel, *stride, *dilation, *pad, *out, np.float32(-np.inf), np.float32(np.inf))
    np.testing.assert_allclose(got, want, **TOL)
    clipped = conv2d(x, w.reshape(cout, -1), b, *kernel, *stride, *dilation, *pad, *out, np.float32(0), np.float32(1.5))
    np.testing.assert_allclose(clipped, np.clip(want, 0, 1.5), **TOL)


def test_dense_and_batched_matmul_match_numpy():
    from edgert.host.codegen.kernels import batched_matmul, dense

    a, w, b = _f32(5, 7), _f32(7, 3), _f32(3)
    np.testing.assert_allclose(dense(a, w, b, np.float32(-np.inf), np.float32(np.inf)), a @ w + b, **TOL)
    np.testing.assert_allclose(dense(a, w, b, np.float32(0), np.float32(np.inf)), np.maximum(a @ w + b, 0), **TOL)
    x, y = _f32(4, 5, 6), _f32(4, 6, 3)
    np.testing.assert_allclose(batched_matmul(x, y), np.matmul(x, y), **TOL)


@pytest.mark.parametrize("kernel,stride,pad,ceil", [((2, 2), (2, 2), (0, 0), False), ((3, 3), (2, 2), (1, 1), True),
                                                     ((3, 2), (1, 2), (1, 0), False)])
def test_max_pool2d_matches_numpy(kernel, stride, pad, ceil):
    from edgert.host.codegen.kernels import max_pool2d
    from edgert.host.im2col import window_geometry
    from edgert.host.ops.max_pool import max_pool_numpy, padded_for_pool

    class Ctx:  # the attributes a MaxPool node would carry
        attrs = {"kernel_shape": kernel, "strides": stride, "pads": (*pad, *pad), "ceil_mode": int(ceil)}

        def attr(self, name, default=None):
            return self.attrs.get(name, default)

    x = _f32(2, 3, 9, 10)
    xp, strides, dilations, begin, out = padded_for_pool(Ctx(), x, -np.inf, kernel)
    want = max_pool_numpy(xp, kernel, strides, dilations, out)
    assert out == window_geometry(Ctx(), x.shape[2:], kernel, ceil)[4]
    np.testing.assert_array_equal(max_pool2d(x, *kernel, *stride, 1, 1, *pad, *out), want)


def test_reductions_and_normalisations_match_numpy():
    from edgert.host.codegen.kernels import layer_norm, mean_middle, softmax_rows
    from edgert.host.ops.softmax import _softmax

    x = _f32(3, 5, 4)
    np.testing.assert_allclose(mean_middle(x), x.mean(axis=1), **TOL)
    r, scale, bias = _f32(6, 10), _f32(10), _f32(10)
    mean, var = r.mean(axis=1, keepdims=True), r.var(axis=1, keepdims=True)
    np.testing.assert_allclose(layer_norm(r, scale, bias, np.float32(1e-5)), (r - mean) / np.sqrt(var + 1e-5) * scale + bias, **TOL)
    np.testing.assert_allclose(softmax_rows(r * 10), _softmax(r * 10, 1), **TOL)


@pytest.mark.parametrize("op,fn", [("ADD", np.add), ("SUB", np.subtract), ("MUL", np.multiply), ("DIV", np.divide)])
@pytest.mark.parametrize("a_shape,b_shape", [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)),
                                             ((1, 1, 1, 5), (2, 3, 4, 1)), ((1, 1, 1, 1), (2, 1, 4, 5))])
def test_binary4_broadcasts_like_numpy(op, fn, a_shape, b_shape):
    from edgert.host.codegen import kernels

    a, b = _f32(*a_shape), _f32(*b_shape) + np.float32(3)
    out = np.broadcast_shapes(a_shape, b_shape)
    np.testing.assert_allclose(kernels.binary4(a, b, getattr(kernels, op), out), fn(a, b), **TOL)


def test_unary_ops_match_numpy():
    from edgert.host.codegen import kernels as k
    from edgert.host.ops.erf import erf_numpy

    x = _f32(3, 4, 5) * 3
    cases = {k.RELU: np.maximum(x, 0), k.CLIP: np.clip(x, -1, 2), k.SIGMOID: 1 / (1 + np.exp(-x)), k.TANH: np.tanh(x),
             k.EXP: np.exp(x), k.SQRT: np.sqrt(np.abs(x)), k.ABS: np.abs(x), k.NEG: -x, k.ERF: erf_numpy(x),
             k.HARD_SIGMOID: np.clip(x * 0.2 + 0.5, 0, 1), k.HARD_SWISH: x * np.clip(x / 6 + 0.5, 0, 1)}
    params = {k.CLIP: (-1, 2), k.HARD_SIGMOID: (0.2, 0.5), k.HARD_SWISH: (1 / 6, 0.5)}
    for code, want in cases.items():
        p, q = params.get(code, (0, 0))
        arg = np.abs(x) if code == k.SQRT else x
        np.testing.assert_allclose(k.unary(arg, code, np.float32(p), np.float32(q)), want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"op code {code}")


def test_transpose_pad_place_and_affine_match_numpy():
    from edgert.host.codegen import kernels as k

    x = _f32(2, 3, 4, 5)
    perm = (2, 0, 3, 1)
    strides = [math.prod(x.shape[i + 1:]) for i in range(4)]
    got = k.transpose6(x, (1, 1, *(x.shape[p] for p in perm)), (0, 0, *(strides[p] for p in perm)))
    np.testing.assert_array_equal(got.reshape(4, 2, 5, 3), x.transpose(perm))
    want = np.pad(x, [(0, 0), (1, 0), (0, 2), (3, 1)], constant_values=-2.5)
    np.testing.assert_array_equal(k.pad4(x, want.shape, (0, 1, 0, 3), np.float32(-2.5)), want)
    out = np.zeros((2, 7, 5), np.float32)
    k.place3(out, x[:, :, 0], 4)
    np.testing.assert_array_equal(out[:, 4:], x[:, :, 0])
    assert not out[:, :4].any()
    m, a = _f32(3), _f32(3)
    np.testing.assert_allclose(k.channel_affine(x.reshape(2, 3, 20), m, a), x.reshape(2, 3, 20) * m[:, None] + a[:, None], **TOL)


def test_every_kernel_a_generated_module_may_import_exists():
    import importlib

    from edgert.host.codegen.gen import KERNELS
    from edgert.host.jit import Kernel

    for name, where in KERNELS.items():
        module, attr = where.split(":")
        assert isinstance(getattr(importlib.import_module(module), attr), Kernel), name
