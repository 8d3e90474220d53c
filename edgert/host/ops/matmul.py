"""MatMul with NumPy semantics (BLAS); a sparse constant 2-D right operand runs as CSR."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op
from edgert.host.sparse import csr_matmul, maybe_csr, worth_it


def _prepare(ctx) -> None:
    b = ctx.const(1)
    if b is not None and b.ndim == 2:
        ctx.cache["csr"] = maybe_csr(np.ascontiguousarray(b.T), ctx.options.sparse_threshold)


@op("MatMul", since=1, prepare=_prepare)
def matmul(ctx, a, b):
    csr = ctx.cache.get("csr")
    if csr is not None and a.ndim >= 2 and worth_it(csr, a.size // a.shape[-1], ctx.options.sparse_threshold):
        a2 = a.reshape(-1, a.shape[-1])
        return csr_matmul(csr, a2.T, ctx.threads).T.reshape(*a.shape[:-1], csr.shape[0])
    return np.matmul(a, b)
