"""CSR weights and the Numba kernels that multiply them with dense activations.

A constant weight matrix W (rows = output channels) with enough zeros is
packed once at load; ``csr_matmul`` computes W @ X row by row, each nonzero
adding a scaled row of X (contiguous, vectorised), rows in parallel. With one
to MATVEC_COLUMNS columns (batch-1 Gemm/MatMul) each row is a gathered dot
product instead, vectorised by hand in LLVM IR (``_gathered_dot``).
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


# Nonzeros per step of the vectorised mat-vec: four 64-bit loads of four uint16 column indices each,
# the 16 x values they name loaded one by one into a vector, one vector FMA with 16 contiguous values.
GATHER_LANES = 16
_gathered_dot = None  # set by _define_gathered_dot() before _csr_matvec compiles (it needs numba)


def _define_gathered_dot() -> None:
    """Define ``_gathered_dot(indices, data, x, p, q) -> float32``, the sum of data[i] * x[indices[i]]
    over [p, q), (q - p) a multiple of GATHER_LANES, written as LLVM IR because numba has no vector types.

    Why not numba's loop: the scalar loop does three loads a nonzero (index, value, x), so Zen 4's three
    load ports allow one nonzero a cycle; with fastmath LLVM vectorises it into AVX-512 gathers, 3.7x
    slower there (explicit 8- or 16-lane gathers: 1.4-2x slower than the scalar loop). Here four indices come in
    one load (split with shifts) and the values in one vector load, 21 loads per 16 nonzeros; the x
    values go into lanes with vinsertps from memory. 1024x1024 at 80% zeros, 1 thread: 47.6 us against
    65.8 us for the scalar loop and 55.8 us for BLAS GEMV (medians of 8 alternated repeats in one
    process). Also measured and rejected: a bitmap format (per 16 columns a uint16 mask, the nonzeros
    packed, ``vexpandps`` into the contiguous x slice): on Zen 4 vexpandps runs at one per ~2.8 cycles
    (memory or register form), so 1024x1024 takes >= 50 us at any sparsity (62-70 us measured at 80%).
    Portable: LLVM lowers the <16 x float> operations to whatever vector width the host has."""
    global _gathered_dot
    if _gathered_dot is not None:
        return
    from llvmlite import ir
    from numba import types
    from numba.core.errors import TypingError
    from numba.extending import intrinsic

    lanes = GATHER_LANES
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(f32, lanes)

    @intrinsic
    def gathered_dot(typingctx, indices, data, x, p, q):
        ok = (isinstance(indices, types.Array) and indices.dtype == types.uint16 and isinstance(data, types.Array)
              and data.dtype == types.float32 and isinstance(x, types.Array) and x.dtype == types.float32
              and all(a.ndim == 1 and a.layout == "C" for a in (indices, data, x)))
        if not ok:
            raise TypingError("_gathered_dot takes contiguous 1-D uint16 indices, float32 data and float32 x")
        sig = types.float32(indices, data, x, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            ip, dp, xp = (context.make_array(t)(context, builder, a).data for t, a in zip(signature.args[:3], args[:3], strict=True))
            p0, q = args[3], args[4]
            mod = builder.module
            fma_ty = ir.FunctionType(vec, [vec, vec, vec])
            fma = mod.globals.get(f"llvm.fma.v{lanes}f32") or ir.Function(mod, fma_ty, f"llvm.fma.v{lanes}f32")
            zero = ir.Constant(vec, None)
            fn, pre = builder.function, builder.block
            head, body, done = (fn.append_basic_block(f"gdot.{n}") for n in ("head", "body", "done"))
            builder.branch(head)
            builder.position_at_end(head)
            p = builder.phi(i64)
            acc = builder.phi(vec)
            p.add_incoming(p0, pre)
            acc.add_incoming(zero, pre)
            builder.cbranch(builder.icmp_signed("<", p, q), body, done)
            builder.position_at_end(body)
            xv = ir.Constant(vec, None)
            for g in range(lanes // 4):
                word_ptr = builder.bitcast(builder.gep(ip, [builder.add(p, ir.Constant(i64, 4 * g))]), ir.PointerType(i64))
                word = builder.load(word_ptr, align=2)
                for e in range(4):
                    j = builder.and_(builder.lshr(word, ir.Constant(i64, 16 * e)), ir.Constant(i64, 0xFFFF))
                    xv = builder.insert_element(xv, builder.load(builder.gep(xp, [j]), align=4), ir.Constant(i32, 4 * g + e))
            vals = builder.load(builder.bitcast(builder.gep(dp, [p]), ir.PointerType(vec)), align=4)
            new_acc = builder.call(fma, [vals, xv, acc])
            p.add_incoming(builder.add(p, ir.Constant(i64, lanes)), builder.block)
            acc.add_incoming(new_acc, builder.block)
            builder.branch(head)
            builder.position_at_end(done)
            total, n = acc, lanes
            while n > 1:  # pairwise horizontal sum
                half = n // 2
                lo = builder.shuffle_vector(total, total, ir.Constant(ir.VectorType(i32, half), list(range(half))))
                hi = builder.shuffle_vector(total, total, ir.Constant(ir.VectorType(i32, half), list(range(half, n))))
                total, n = builder.fadd(lo, hi), half
            return builder.extract_element(total, ir.Constant(i32, 0))

        return sig, codegen

    _gathered_dot = gathered_dot


@kernel(nogil=True, setup=_define_gathered_dot)
def _csr_matvec(indptr, indices, data, x, out, start, stop):
    # One column, uint16 indices: GATHER_LANES nonzeros a step in _gathered_dot, the rest here.
    for r in range(start, stop):
        p = max(indptr[r], 0)
        end = indptr[r + 1]
        q = end - (end - p) % GATHER_LANES
        acc = _gathered_dot(indices, data, x, p, q)
        while q < end:
            acc += data[q] * x[indices[q]]
            q += 1
        out[r] = acc


@kernel(nogil=True)
def _csr_matvec_scalar(indptr, indices, data, x, out, start, stop):
    # One column, any index type (uint32 past 65536 columns): a gathered dot product per row, four partial
    # sums to hide the add latency. With unsigned indices and a start known not to be negative no load
    # needs numba's negative-index wraparound (1024x1024 at 80% zeros: int32 indices 188 us, uint16 115
    # us, and the bound 65 us, ~1 nonzero a cycle).
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


def _matvec_task(args, start, stop):
    # A native task (edgert.host.parallel.compile_task): rows [start, stop) of _csr_matvec, its arrays and
    # sizes read from the int64 block at ``args``.
    a = carray(_i64_ptr(args), 8)  # noqa: F821 - injected by compile_task
    rows, nnz, cols = a[5], a[6], a[7]
    indptr = carray(_i32_ptr(a[0]), rows + 1)  # noqa: F821
    indices = carray(_u16_ptr(a[1]), max(nnz, 1))  # noqa: F821
    data = carray(_f32_ptr(a[2]), max(nnz, 1))  # noqa: F821
    x = carray(_f32_ptr(a[3]), cols)  # noqa: F821
    out = carray(_f32_ptr(a[4]), rows)  # noqa: F821
    _csr_matvec(indptr, indices, data, x, out, start, stop)


# Work (as MIN_PARALLEL_WORK) from which a mat-vec splits its rows over a native task: ~20 us of
# nonzeros. 1024x1024 at 80% zeros (2 threads, 1 thread's 50 us): ~33 us; BLAS GEMV, memory-bound, gained
# nothing from a second thread (55 -> 51-57 us).
MATVEC_NATIVE_WORK = 800_000
# Up to this many columns, one gathered dot product per column beats the row-axpy kernel.
MATVEC_COLUMNS = 4
# Time per nonzero (and column) in BLAS multiply-adds (20-30 ps), the unit of edgert.host.parallel's
# work: the vectorised mat-vec takes ~0.22 ns a nonzero (the scalar one ~0.32 ns), the row-axpy kernel
# ~45 ps a nonzero and column (256x256 @ 784 columns at 80% zeros: 0.42-0.51 ms, dense BLAS 0.99 ms).
MATVEC_COST = 8
AXPY_COST = 2


def csr_matmul(w: CSR, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """W @ X for X of shape (K, L) with the Numba kernels, rows split over ``threads``."""
    work = len(w.data) * x.shape[1]
    if x.shape[1] <= MATVEC_COLUMNS:
        xt = np.ascontiguousarray(x.T, dtype=w.data.dtype)
        out_t = np.empty((x.shape[1], w.shape[0]), dtype=w.data.dtype)
        matvec = _csr_matvec if w.indices.dtype == np.uint16 else _csr_matvec_scalar
        edges = parallel.native_bounds(w.shape[0], threads, MATVEC_COST * len(w.data), 16, 16, MATVEC_NATIVE_WORK)
        # Rows over the threads without the GIL (a hand-off costs ~8 us, the Python pool's 50-150 us).
        native = edges.size > 2 and matvec is _csr_matvec
        task = parallel.compile_task(_matvec_task, _csr_matvec=_csr_matvec.compiled()) if native else 0
        for j in range(x.shape[1]):
            if native:
                args = np.array([w.indptr.ctypes.data, w.indices.ctypes.data, w.data.ctypes.data, xt[j].ctypes.data,
                                 out_t[j].ctypes.data, w.shape[0], len(w.data), w.shape[1]], np.int64)
                parallel.run_native(task, args, edges, threads)
                continue
            parallel.run_chunks(lambda a, b, j=j: matvec(w.indptr, w.indices, w.data, xt[j], out_t[j], a, b),
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
# ~70 GB/s: with _gathered_dot a 1024x1024 weight ran 0.65-0.88x of dense speed at 70%, 0.67-0.98x at
# 75%, 1.08-1.10x at 80%, 1.43-1.51x at 85%, 1.96-2.08x at 90% (1 thread, medians of 3 alternated
# repeats, 4 processes; Zen 4). The scalar kernel that uint32 indices (past 65536 columns) take ran
# 0.78x at 80%, 1.31x at 90%: its crossover sits near 83%.
MATVEC_SPARSE_THRESHOLD = 0.8
MATVEC_SCALAR_SPARSE_THRESHOLD = 0.85


def maybe_csr(w2d: np.ndarray, threshold: float | None) -> CSR | None:
    """CSR form of a constant float weight when its sparsity reaches ``threshold`` (None: SPARSE_THRESHOLD)."""
    threshold = SPARSE_THRESHOLD if threshold is None else threshold
    if w2d.dtype != np.float32 or threshold > 1 or sparsity(w2d) < threshold:
        return None
    return to_csr(w2d)


def worth_it(csr: CSR, columns: int, threshold: float | None) -> bool:
    """Whether this product should take the CSR kernel: a matrix-vector product needs more zeros by default."""
    if threshold is not None or columns > MATVEC_COLUMNS:
        return True
    return 1 - csr.density >= (MATVEC_SPARSE_THRESHOLD if csr.indices.dtype == np.uint16 else MATVEC_SCALAR_SPARSE_THRESHOLD)
