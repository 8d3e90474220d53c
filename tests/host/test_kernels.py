"""Every Numba kernel against its NumPy twin (the specification), on small random shapes."""
from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("channels,size,stride,dilation,pad", [(5, 9, 1, 1, 1), (6, 11, 2, 1, 1), (3, 12, 1, 2, 2),
                                                                 (4, 10, 2, 2, 0), (7, 4, 1, 1, 1), (2, 7, 3, 1, 2),
                                                                 # from DEPTHWISE_WIDE, fewer than 16 channels: the per-plane kernel
                                                                 (3, 50, 1, 1, 1), (2, 53, 2, 1, 1), (2, 49, 2, 2, 2),
                                                                 (2, 48, 3, 1, 0)])
def test_depthwise_kernel_matches_numpy(channels, size, stride, dilation, pad):
    from edgert.host.ops.conv import DEPTHWISE_LANES, DEPTHWISE_WIDE, depthwise2d, depthwise_numpy

    assert channels < DEPTHWISE_LANES and (size >= DEPTHWISE_WIDE) == (size >= 48)  # the cases cover both kernels

    x = RNG.standard_normal((2, channels, size, size + 1)).astype(np.float32)
    w = RNG.standard_normal((channels, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(channels).astype(np.float32)
    eff = 2 * dilation + 1
    out_shape = ((size + 2 * pad - eff) // stride + 1, (size + 1 + 2 * pad - eff) // stride + 1)
    args = (w, (stride, stride), (dilation, dilation), (pad, pad), out_shape)
    want = depthwise_numpy(x, *args)
    np.testing.assert_allclose(depthwise2d(x, *args), want, rtol=1e-5, atol=1e-5)
    # Bias and clamp fused in the kernel = applied after; split over threads = the same.
    got = depthwise2d(x, *args, bias=b, clip=(0.0, 1.5), threads=3)
    np.testing.assert_allclose(got, np.clip(want + b[None, :, None, None], 0, 1.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("columns", [1, 3, 19])  # matvec kernel up to MATVEC_COLUMNS, row-axpy kernel above
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
def test_csr_kernel_matches_numpy(sparsity, columns):
    from edgert.host.sparse import csr_matmul, csr_matmul_numpy, to_csr

    w = RNG.standard_normal((33, 70)).astype(np.float32)
    w[RNG.random(w.shape) < sparsity] = 0
    x = RNG.standard_normal((70, columns)).astype(np.float32)
    csr = to_csr(w)
    assert len(csr.data) == np.count_nonzero(w)
    np.testing.assert_allclose(csr_matmul(csr, x), csr_matmul_numpy(csr, x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(csr_matmul_numpy(csr, x), w @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(40, 300), (9, 17), (6, 1024)])  # column counts around and past the 16 lanes
@pytest.mark.parametrize("sparsity", [0.0, 0.8, 0.95, 1.0])
def test_vectorised_matvec_matches_numpy(shape, sparsity):
    """The batch-1 kernel (_gathered_dot: 16 nonzeros a step, the remainder scalar) against the NumPy twin,
    with empty rows, rows shorter and longer than 16 nonzeros; error bound 1e-5 * (|W| @ |x|) per output
    (float32 sums of up to 1024 products in another order than BLAS)."""
    from edgert.host.sparse import _csr_matvec, csr_matmul, csr_matmul_numpy, to_csr

    w = RNG.standard_normal(shape).astype(np.float32)
    w[RNG.random(shape) < sparsity] = 0
    w[shape[0] // 2] = 0  # an empty row
    w[0, : min(shape[1], 21)] = 1.5  # a row with a remainder after one 16-lane step
    x = RNG.standard_normal((shape[1], 1)).astype(np.float32)
    csr = to_csr(w)
    assert csr.indices.dtype == np.uint16
    bound = 1e-5 * (np.abs(w) @ np.abs(x)) + 1e-30
    assert (np.abs(csr_matmul(csr, x) - csr_matmul_numpy(csr, x)) <= bound).all()
    # A row range (the threads' split) writes only its rows.
    out = np.full(shape[0], np.nan, np.float32)
    _csr_matvec(csr.indptr, csr.indices, csr.data, x[:, 0].copy(), out, 1, shape[0] - 1)
    assert np.isnan(out[[0, -1]]).all()
    assert (np.abs(out[1:-1] - (w @ x)[1:-1, 0]) <= bound[1:-1, 0]).all()


@pytest.mark.parametrize("columns", [1, 6])
def test_csr_kernels_take_32_bit_indices_past_65536_columns(columns):
    from edgert.host.sparse import csr_matmul, to_csr

    w = np.zeros((3, 70_001), np.float32)
    hot = RNG.choice(w.size, 600, replace=False)
    w.reshape(-1)[hot] = RNG.standard_normal(600).astype(np.float32)
    w[1, -1] = 2.0  # a column index above 65535
    csr = to_csr(w)
    assert csr.indices.dtype == np.uint32 and to_csr(w[:, :65_536]).indices.dtype == np.uint16
    x = RNG.standard_normal((w.shape[1], columns)).astype(np.float32)
    np.testing.assert_allclose(csr_matmul(csr, x), w @ x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 3)])
def test_im2col_matmul_split_over_threads_matches_one_product(stride, pad, monkeypatch):
    from edgert.host import parallel
    from edgert.host.im2col import im2col, pad_spatial
    from edgert.host.ops.conv import im2col_matmul

    monkeypatch.setattr(parallel, "MIN_PARALLEL_WORK", 0)  # split even these small shapes
    splits = []
    real = parallel.run_bounds
    monkeypatch.setattr(parallel, "run_bounds", lambda fn, edges, threads: (splits.append(len(edges) - 1), real(fn, edges, threads)))
    xp = pad_spatial(RNG.standard_normal((2, 5, 41, 19)).astype(np.float32), (pad, pad), (pad, pad))
    w2 = RNG.standard_normal((7, 5 * 3 * 2)).astype(np.float32)
    out_shape = tuple((n - k) // stride + 1 for n, k in zip(xp.shape[2:], (3, 2), strict=True))
    want = w2 @ im2col(xp, (3, 2), (stride, stride), (1, 1), out_shape)
    for threads in (1, 2, 3):
        got = im2col_matmul(w2, xp, (3, 2), (stride, stride), (1, 1), out_shape, threads)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert max(splits) >= 3  # the fused per-row-block path ran, not only the whole product


@pytest.mark.parametrize("lo,hi", [(0.0, np.inf), (0.0, 6.0), (-np.inf, np.inf)])
def test_bias_clip_kernel_matches_numpy(lo, hi):
    from edgert.host.ops.conv import _bias_clip, bias_clip_numpy

    y = (3 * RNG.standard_normal((2, 5, 37))).astype(np.float32)
    y[0, 1, 3] = np.nan  # propagates, as np.clip does
    bias = RNG.standard_normal(5).astype(np.float32)
    want = bias_clip_numpy(y, bias, lo, hi)
    _bias_clip(y, bias, np.float32(lo), np.float32(hi))
    np.testing.assert_array_equal(y, want)


def test_int_matmul_kernel_matches_numpy_exactly():
    from edgert.host.int8 import int_matmul, int_matmul_numpy

    a = RNG.integers(-255, 256, (17, 300)).astype(np.int16)  # uint8 - zero point spans -255..255
    b = RNG.integers(-128, 128, (300, 23)).astype(np.int16)
    got = int_matmul(a, b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, int_matmul_numpy(a, b))


@pytest.mark.parametrize("kernel,stride,dilation", [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (2, 1))])
def test_max_pool_kernel_matches_numpy(kernel, stride, dilation):
    from edgert.host.ops.max_pool import max_pool2d, max_pool_numpy

    xp = RNG.standard_normal((2, 3, 13, 12)).astype(np.float32)
    out_shape = tuple((n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(xp.shape[2:], kernel, stride, dilation, strict=True))
    np.testing.assert_array_equal(max_pool2d(xp, kernel, stride, dilation, out_shape),
                                  max_pool_numpy(xp, kernel, stride, dilation, out_shape))


def test_erf_kernel_matches_numpy():
    from edgert.host.ops.erf import erf_kernel, erf_numpy

    x = (RNG.standard_normal((4, 50)) * 3).astype(np.float32)
    np.testing.assert_allclose(erf_kernel(x), erf_numpy(x), rtol=1e-6, atol=1e-7)


def test_kernels_are_cached_on_disk(tmp_path):
    """cache=True: the first process compiles and writes the kernel to disk, the next one loads it."""
    import os
    import subprocess
    import sys

    script = ("import numpy as np; from edgert.host.ops import conv; "
              "conv.depthwise2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 3, 3), np.float32), (1, 1), (1, 1), (0, 0), (1, 1)); "
              "print(len(conv._depthwise2d.compiled().stats.cache_hits))")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split()[-1] == "0"
    assert list(tmp_path.rglob("*.nbi")) and list(tmp_path.rglob("*.nbc"))
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert int(second.stdout.split()[-1]) >= 1


@pytest.mark.parametrize("size,stride", [(9, 1), (11, 2), (50, 1), (53, 2)])  # both kernels (DEPTHWISE_WIDE = 48)
def test_depthwise_split_over_native_threads_matches_numpy(size, stride, monkeypatch):
    """The depthwise kernel as a native task (edgert.host.parallel.run_native): channel chunks on the
    caller and helper threads, arguments passed through the int64 block, clamp bounds included."""
    from edgert.host import parallel
    from edgert.host.ops.conv import depthwise2d, depthwise_numpy

    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    calls = []
    real = parallel.run_native
    monkeypatch.setattr(parallel, "run_native", lambda *a: (calls.append(a[2].size - 1), real(*a)))
    x = RNG.standard_normal((2, 5, size, size + 1)).astype(np.float32)
    w = RNG.standard_normal((5, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    out_shape = ((size - 1) // stride + 1, size // stride + 1)
    args = (w, (stride, stride), (1, 1), (1, 1), out_shape)
    want = np.clip(depthwise_numpy(x, *args) + b[None, :, None, None], -0.5, 1.5)
    for threads in (2, 3):
        np.testing.assert_allclose(depthwise2d(x, *args, bias=b, clip=(-0.5, 1.5), threads=threads), want, rtol=1e-5, atol=1e-5)
    assert calls and min(calls) > 2  # it ran as a split native task


@pytest.mark.parametrize("channels,size,stride,dilation,pads,kernel", [
    (32, 7, 1, 1, (1, 1), (3, 3)),    # full channel blocks, 7x7 (MobileNetV2's last layers)
    (48, 14, 2, 1, (1, 1), (3, 3)),   # stride 2, 14 -> 7
    (20, 13, 1, 1, (1, 1), (3, 3)),   # a block of 16 and a short one of 4
    (17, 15, 2, 2, (2, 1), (3, 3)),   # dilation, unequal pads, odd sizes
    (16, 9, 1, 1, (2, 2), (5, 5)),    # 5x5 taps
    (16, 12, 3, 1, (0, 0), (3, 2)),   # stride 3, a non-square kernel, no padding (input columns left unread)
    (16, 40, 1, 1, (1, 1), (3, 3)),   # several bands of output rows
    (16, 5, 2, 1, (0, 0), (3, 3)),    # rows of 2-3 outputs: the 1-pixel tap sums
])
def test_depthwise_channel_blocks_match_numpy(channels, size, stride, dilation, pads, kernel):
    """The channel-last kernel's vector paths (16x16 transposes, 4-pixel and 1-pixel tap sums) and its
    element-by-element paths (short blocks, remainders of 16 pixels) against the NumPy specification."""
    from edgert.host.ops.conv import depthwise2d, depthwise_band, depthwise_numpy

    x = RNG.standard_normal((2, channels, size, size + 3)).astype(np.float32)
    w = RNG.standard_normal((channels, *kernel)).astype(np.float32)
    b = RNG.standard_normal(channels).astype(np.float32)
    out_shape = tuple((n + 2 * p - (k - 1) * dilation - 1) // stride + 1 for n, p, k in zip(x.shape[2:], pads, kernel, strict=True))
    args = (w, (stride, stride), (dilation, dilation), pads, out_shape)
    if size == 40:  # the case is meant to take several bands
        assert depthwise_band(out_shape, kernel, (stride, stride), (dilation, dilation)) < out_shape[0]
    want = np.clip(depthwise_numpy(x, *args) + b[None, :, None, None], -1.0, 2.0)
    np.testing.assert_allclose(depthwise2d(x, *args, bias=b, clip=(-1.0, 2.0)), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels", [64, 40])  # whole 16-channel chunks; chunks across a short block
def test_depthwise_channel_blocks_split_over_native_threads(channels, monkeypatch):
    """Split into native-task chunks at 2 and 3 threads, the channel-last kernel gives the NumPy result."""
    from edgert.host import parallel
    from edgert.host.ops.conv import depthwise2d, depthwise_numpy

    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    sizes = []
    real = parallel.run_native
    monkeypatch.setattr(parallel, "run_native", lambda *a: (sizes.append(np.diff(a[2]).tolist()), real(*a)))
    x = RNG.standard_normal((1, channels, 14, 14)).astype(np.float32)
    w = RNG.standard_normal((channels, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(channels).astype(np.float32)
    args = (w, (1, 1), (1, 1), (1, 1), (14, 14))
    want = np.clip(depthwise_numpy(x, *args) + b[None, :, None, None], 0.0, 6.0)
    for threads in (2, 3):
        np.testing.assert_allclose(depthwise2d(x, *args, bias=b, clip=(0.0, 6.0), threads=threads), want, rtol=1e-5, atol=1e-5)
    assert sizes and all(len(s) > 1 for s in sizes)
    if channels % 16 == 0:  # chunks of whole blocks
        assert all(v % 16 == 0 for s in sizes for v in s)
