"""Gemm: alpha * A' @ B' + beta * C; a sparse constant B runs as CSR."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op
from edgert.host.sparse import csr_matmul, maybe_csr, worth_it


def _prepare(ctx) -> None:
    b = ctx.const(1)
    if b is not None and b.ndim == 2:
        # Rows = output features, as the CSR kernel wants them.
        w = b if ctx.attr("transB", 0) else b.T
        ctx.cache["csr"] = maybe_csr(np.ascontiguousarray(w), ctx.options.sparse_threshold)


@op("Gemm", since=1, prepare=_prepare)
def gemm(ctx, a, b, c=None):
    a = a.T if ctx.attr("transA", 0) else a
    csr = ctx.cache.get("csr")
    if csr is not None and worth_it(csr, a.shape[0], ctx.options.sparse_threshold):
        y = csr_matmul(csr, a.T, ctx.threads).T
    else:
        y = a @ (b.T if ctx.attr("transB", 0) else b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * np.asarray(beta, c.dtype))
    return y.astype(a.dtype, copy=False)
