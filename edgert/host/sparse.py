"""CSR weights and the Numba kernel that multiplies them with dense activations.

A constant weight matrix W (rows = output channels) with enough zeros is
packed once at load; ``csr_matmul`` computes W @ X row by row, each nonzero
adding a scaled row of X (contiguous, vectorised), rows in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.host import parallel
from edgert.host.jit import kernel


@dataclass(frozen=True)
class CSR:
    indptr: np.ndarray  # int32 (rows + 1)
    indices: np.ndarray  # uint16 (uint32 above 65536 columns) (nnz): see index_dtype
    data: np.ndarray  # float32 (nnz)
    shape: tuple[int, int]

    @property
    def density(self) -> float:
        return len(self.data) / max(1, self.shape[0] * self.shape[1])


def sparsity(w: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(w) / max(1, w.size)


def index_dtype(columns: int) -> type:
    """Column indices are unsigned, so numba reads ``x[indices[p]]`` without its negative-index wraparound
    (a compare and select per nonzero), and 16-bit where they fit, halving their memory traffic."""
    return np.uint16 if columns <= 1 << 16 else np.uint32


def to_csr(w: np.ndarray) -> CSR:
    w = np.asarray(w)
    rows, cols = np.nonzero(w)
    indptr = np.zeros(w.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=indptr[1:])
    return CSR(indptr, cols.astype(index_dtype(w.shape[1])), np.ascontiguousarray(w[rows, cols]), (w.shape[0], w.shape[1]))


def csr_matmul_numpy(w: CSR, x: np.ndarray) -> np.ndarray:
    """Specification: the dense product W @ X."""
    dense = np.zeros(w.shape, dtype=w.data.dtype)
    for r in range(w.shape[0]):
        dense[r, w.indices[w.indptr[r]:w.indptr[r + 1]]] = w.data[w.indptr[r]:w.indptr[r + 1]]
    return dense @ x


@kernel(nogil=True, fastmath=True)
def _csr_matmul(indptr, indices, data, x, out, start, stop):
    # Four nonzeros per pass over the output row: one load and store of the accumulator per four
    # multiply-adds instead of per one (256x256 @ 784 columns at 80% zeros: 0.55-0.80 -> 0.42-0.51 ms).
    cols = out.shape[1]
    for r in range(start, stop):
        acc = out[r]
        for j in range(cols):
            acc[j] = 0
        # max(., 0): a start LLVM knows is not negative lets it drop the wraparound of every data[p].
        p = max(indptr[r], 0)
        end = indptr[r + 1]
        while p + 4 <= end:
            v0, v1, v2, v3 = data[p], data[p + 1], data[p + 2], data[p + 3]
            s0, s1, s2, s3 = x[indices[p]], x[indices[p + 1]], x[indices[p + 2]], x[indices[p + 3]]
            for j in range(cols):
                acc[j] += v0 * s0[j] + v1 * s1[j] + v2 * s2[j] + v3 * s3[j]
            p += 4
        while p < end:
            v = data[p]
            src = x[indices[p]]
            for j in range(cols):
                acc[j] += v * src[j]
            p += 1


@kernel(nogil=True)
def _csr_matvec(indptr, indices, data, x, out, start, stop):
    # One column: a gathered dot product per row, four partial sums to hide the add latency. Scalar
    # loads: AVX-512 gathers (what fastmath lets LLVM vectorise this into) ran 3.7x slower on Zen 4.
    # With unsigned indices and a start known not to be negative no load needs numba's negative-index
    # wraparound (1024x1024 at 80% zeros: int32 indices 188 us, uint16 115 us, and the bound 65 us,
    # ~1 nonzero a cycle).
    for r in range(start, stop):
        a0 = np.float32(0)
        a1 = np.float32(0)
        a2 = np.float32(0)
        a3 = np.float32(0)
        p = max(indptr[r], 0)
        end = indptr[r + 1]
        while p + 4 <= end:
            a0 += data[p] * x[indices[p]]
            a1 += data[p + 1] * x[indices[p + 1]]
            a2 += data[p + 2] * x[indices[p + 2]]
            a3 += data[p + 3] * x[indices[p + 3]]
            p += 4
        while p < end:
            a0 += data[p] * x[indices[p]]
            p += 1
        out[r] = (a0 + a1) + (a2 + a3)


# Up to this many columns, one gathered dot product per column beats the row-axpy kernel.
MATVEC_COLUMNS = 4
# Time per nonzero (and column) in BLAS multiply-adds (20-30 ps), the unit of edgert.host.parallel's
# work: the gathered dot product takes ~0.32 ns a nonzero, the row-axpy kernel ~45 ps a nonzero and
# column (256x256 @ 784 columns at 80% zeros: 0.42-0.51 ms, dense BLAS 0.99 ms).
MATVEC_COST = 10
AXPY_COST = 2


def csr_matmul(w: CSR, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """W @ X for X of shape (K, L) with the Numba kernels, rows split over ``threads``."""
    work = len(w.data) * x.shape[1]
    if x.shape[1] <= MATVEC_COLUMNS:
        xt = np.ascontiguousarray(x.T, dtype=w.data.dtype)
        out_t = np.empty((x.shape[1], w.shape[0]), dtype=w.data.dtype)
        for j in range(x.shape[1]):
            parallel.run_chunks(lambda a, b, j=j: _csr_matvec(w.indptr, w.indices, w.data, xt[j], out_t[j], a, b),
                                w.shape[0], threads, MATVEC_COST * work)
        return out_t.T
    x = np.ascontiguousarray(x, dtype=w.data.dtype)
    out = np.empty((w.shape[0], x.shape[1]), dtype=w.data.dtype)
    parallel.run_chunks(lambda a, b: _csr_matmul(w.indptr, w.indices, w.data, x, out, a, b), w.shape[0], threads,
                        AXPY_COST * work)
    return out


# Default sparsity from which a constant Conv/Gemm/MatMul weight runs as CSR, from the crossover
# measured with tools/bench_host.py on a 2-core AVX-512 (Zen 4) host: a 256x256 1x1 conv on 28x28 ran
# 0.70x of dense speed at 50% zeros, 1.35x at 70%, 1.84x at 80% (1 thread).
SPARSE_THRESHOLD = 0.7
# Matrix-vector products (batch-1 Gemm/MatMul) against BLAS GEMV, which streams the dense weight at
# ~70 GB/s: a 1024x1024 weight ran 0.59x of dense speed at 70%, 0.78x at 80%, 1.31x at 90%, 2.1x at 95%
# (1 thread); the gathered dot product does ~1 nonzero a cycle, so the crossover sits near 83%.
MATVEC_SPARSE_THRESHOLD = 0.85


def maybe_csr(w2d: np.ndarray, threshold: float | None) -> CSR | None:
    """CSR form of a constant float weight when its sparsity reaches ``threshold`` (None: SPARSE_THRESHOLD)."""
    threshold = SPARSE_THRESHOLD if threshold is None else threshold
    if w2d.dtype != np.float32 or threshold > 1 or sparsity(w2d) < threshold:
        return None
    return to_csr(w2d)


def worth_it(csr: CSR, columns: int, threshold: float | None) -> bool:
    """Whether this product should take the CSR kernel: a matrix-vector product needs more zeros by default."""
    return threshold is not None or columns > MATVEC_COLUMNS or 1 - csr.density >= MATVEC_SPARSE_THRESHOLD
