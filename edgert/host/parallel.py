"""Multi-threading for the host executor: chunks of work shared by the calling thread and a small pool.

Why not numba's ``prange`` (OpenMP) and BLAS's own threads: both split work into one fixed part per
thread and wait for every part. On a machine where another process holds a core (an edge box doing
other work, a shared CI host), the part given to the descheduled thread stalls the whole layer:
MobileNetV2 at 2 threads took 186 ms with prange kernels against 58 ms at 1 thread on a busy 2-core
host (46 ms with this module). Here the calling thread takes chunks too, from a shared counter, so
work a stalled helper never started is done by whoever is running. The kernels are compiled with
``nogil=True`` and BLAS runs on one thread per product; both release the GIL, so the threads overlap.
"""
from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Below this much work (multiply-adds or element visits) a call runs whole on the calling thread:
# handing a chunk to the pool costs ~20-30 us.
MIN_PARALLEL_WORK = 1_000_000
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgert-host")
        return _POOL


def run_chunks(fn: Callable[[int, int], None], n: int, threads: int, work: float) -> None:
    """Call ``fn(start, stop)`` over [0, n) in chunks, on up to ``threads`` threads (the caller included)."""
    if threads <= 1 or n < 2 or work < MIN_PARALLEL_WORK:
        fn(0, n)
        return
    chunks = min(n, 4 * threads)  # a few chunks per thread, so a slow thread's share is rebalanced
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    counter = itertools.count()

    def worker() -> None:
        while (i := next(counter)) < chunks:  # itertools.count is atomic under the GIL
            fn(bounds[i], bounds[i + 1])

    helpers = [_pool(threads - 1).submit(worker) for _ in range(threads - 1)]
    worker()
    for h in helpers:
        h.result()


def matmul(w: np.ndarray, x: np.ndarray, threads: int) -> np.ndarray:
    """w (M, K) @ x (K, L) (or x (N, K, L), batched), split by rows of w."""
    m, k = w.shape
    out = np.empty((*x.shape[:-2], m, x.shape[-1]), dtype=np.result_type(w, x))

    def rows(a: int, b: int) -> None:
        np.matmul(w[a:b], x, out=out[..., a:b, :])

    run_chunks(rows, m, threads, m * k * math.prod(x.shape[:-2]) * x.shape[-1])
    return out
