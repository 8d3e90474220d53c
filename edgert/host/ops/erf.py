"""Erf: a Numba kernel over math.erf (NumPy has no erf); the NumPy twin vectorises math.erf."""
from __future__ import annotations

import math

import numpy as np

from edgert.host import parallel
from edgert.host.jit import kernel
from edgert.host.registry import op


def erf_numpy(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


@kernel(nogil=True)
def _erf(x, out, start, stop):
    for i in range(start, stop):
        out[i] = math.erf(x[i])


def erf_kernel(x: np.ndarray, threads: int = 1) -> np.ndarray:
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    parallel.run_chunks(lambda a, b: _erf(flat, out, a, b), flat.size, threads, 20 * flat.size)
    return out.reshape(x.shape)


@op("Erf", since=9)
def erf(ctx, x):
    if x.dtype.kind != "f":
        return erf_numpy(x)
    return erf_kernel(x, ctx.threads)
