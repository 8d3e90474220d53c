"""Multi-threading for the host executor: chunks of work shared by the calling thread and helper threads.

Why not numba's ``prange`` (OpenMP) and BLAS's own threads: both split work into one fixed part per
thread and wait for every part. On a machine where another process holds a core (an edge box doing
other work, a shared CI host), the part given to the descheduled thread stalls the whole layer:
MobileNetV2 at 2 threads took 186 ms with prange kernels against 58 ms at 1 thread on a busy 2-core
host (46 ms with this module). With one core held by a busy loop, ResNet-18 at 2 threads took 277 ms
with OpenBLAS's 2 threads for its products, 64 ms with this module, 63 ms at 1 thread (MobileNetV2:
35, 15.6, 14.4 ms). Here the calling
thread takes chunks too, from a shared counter, and waits only for chunks a helper has started, so work
a stalled helper never started is done by whoever is running. The kernels are compiled with
``nogil=True`` and BLAS runs on one thread per product; both release the GIL, so the threads overlap.

What a split costs: OpenBLAS's spinning threads take work over in microseconds. A sleeping Python
thread took ~100-150 us on a 2-core VM (a futex wake of an idle vCPU, then the GIL), so a helper that
finished a chunk polls for the next task for a while (SPIN_YIELDS, without the GIL, yielding the core
between polls) before it sleeps, and the caller waits for helpers the same way; that saved 30-60 us a
split. Even so only work of MIN_PARALLEL_WORK or more is split, in few chunks: products by columns
(each thread packs only its own block; splitting by rows of a small weight made every thread re-pack
the whole input, and row blocks narrower than BLAS's kernel ran its edge code), convolutions by blocks
of output rows that gather their own im2col columns (edgert.host.ops.conv.im2col_matmul). On a quiet
host (runs alternated in one process) ResNet-18 at 2 threads took 34 ms, against 48 ms with the
previous sleeping pool, 8 row chunks per product and 1M threshold, and 54 ms at 1 thread; MobileNetV2,
whose layers are mostly small, 14.4 ms against 16.5 and 14.8.
"""
from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable

import numpy as np

# Work is counted in BLAS multiply-adds (~30 ps each on one core of the 2-core AVX-512 host this was tuned
# on); a Numba kernel scales its count by what one of its steps costs relative to that (e.g. DEPTHWISE_COST).
# Below MIN_PARALLEL_WORK a call runs whole on the calling thread. With a sleeping pool thread a 1x1 conv
# of 5M multiply-adds took 0.30 ms on 2 threads against 0.17 ms on one (10M broke even); with spinning
# helpers, MobileNetV2 at 2 threads took (medians, runs alternated in one process) on a quiet host:
# 1 thread 15.1 / 15.5 ms, threshold 16M 14.8 / 15.0, 8M 14.3, 4M 14.2 / 14.2, 2M 13.5; while another
# process held a core: 1 thread 16.1, 16M 16.7, 8M 17.4, 4M 18.1, 2M 18.9. 8M is the compromise.
MIN_PARALLEL_WORK = 8_000_000
# Chunks per thread: more rebalance a slow thread's share, but each costs a GIL round trip and a BLAS
# call on a smaller block.
CHUNKS_PER_THREAD = 2
# Column blocks of a split product are multiples of this: BLAS packs its right operand in panels of
# columns, and ragged narrow blocks run its slow edge kernels.
COLUMN_ALIGN = 64
# A helper thread that finished a chunk keeps checking for the next task this many sched_yield() calls
# (~1 us each) before it sleeps on an Event: within a run the next split comes sooner, and finds it
# running instead of asleep (waking a sleeping thread on an idle vCPU took ~100 us on the 2-core VM).
SPIN_YIELDS = 2000


class _Spin:
    """Two numba loops that wait without the GIL, polling a flag array between sched_yield() calls (an
    opaque call, so every check reloads the flag). Not cached on disk: they embed the libc address."""

    def __init__(self) -> None:
        import ctypes

        from edgert.model import require

        numba = require("numba", "host")
        sched_yield = ctypes.CDLL(None).sched_yield  # POSIX libc; _helpers() runs single-threaded without it
        sched_yield.restype = ctypes.c_int
        sched_yield.argtypes = []

        @numba.njit(nogil=True)
        def changed(flag, seen, spins):  # True once flag[0] != seen; False after ``spins`` yields
            for _ in range(spins):
                if flag[0] != seen:
                    return True
                sched_yield()
            return flag[0] != seen

        @numba.njit(nogil=True)
        def all_set(flags):  # returns when every flag is nonzero
            i = 0
            while i < flags.size:
                if flags[i] == 0:
                    sched_yield()
                else:
                    i += 1

        self.changed, self.all_set = changed, all_set


class _Helper:
    """One pool thread: runs the latest posted task, then spins briefly for the next before sleeping."""

    def __init__(self, spin: _Spin) -> None:
        self.spin = spin
        self.posted = np.zeros(1, np.int64)  # sequence number of the latest task
        self.task: Callable[[], None] | None = None
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="edgert-host", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        seen = 0
        while True:
            if not self.spin.changed(self.posted, seen, SPIN_YIELDS):
                self.wake.wait()
                self.wake.clear()  # a post between wait() and here is still seen: posted has changed
                continue
            seen = int(self.posted[0])
            task = self.task
            if task is not None:
                task()

    def post(self, task: Callable[[], None]) -> None:
        self.task = task
        self.posted[0] += 1
        self.wake.set()


_SPIN: _Spin | None = None
_NO_SPIN = False  # no libc sched_yield here (Windows): every call runs on the calling thread
_HELPERS: list[_Helper] = []
_LOCK = threading.Lock()


def _helpers(count: int) -> list[_Helper]:
    global _SPIN, _NO_SPIN
    with _LOCK:
        if _SPIN is None and not _NO_SPIN:
            try:
                _SPIN = _Spin()
            except (OSError, TypeError, AttributeError):
                _NO_SPIN = True
        if _SPIN is None:
            return []
        # Threads do not survive a fork: replace dead ones.
        _HELPERS[:] = [h for h in _HELPERS if h.thread.is_alive()]
        while len(_HELPERS) < count:
            _HELPERS.append(_Helper(_SPIN))
        return _HELPERS[:count]


def bounds(n: int, threads: int, work: float, min_size: int = 1, align: int = 1) -> list[int]:
    """Chunk boundaries over [0, n): one chunk when the work is too small to share, else up to
    CHUNKS_PER_THREAD per thread, each at least ``min_size`` items, inner boundaries multiples of ``align``."""
    chunks = 1 if threads <= 1 or work < MIN_PARALLEL_WORK else min(n // max(1, min_size), CHUNKS_PER_THREAD * threads)
    if chunks <= 1:
        return [0, n]
    inner = {min(n, align * round(i * n / (chunks * align))) for i in range(1, chunks)}
    return sorted(inner - {0, n} | {0, n})


def run_chunks(fn: Callable[[int, int], None], n: int, threads: int, work: float, min_size: int = 1) -> None:
    """Call ``fn(start, stop)`` over [0, n) in chunks, on up to ``threads`` threads (the caller included)."""
    run_bounds(fn, bounds(n, threads, work, min_size), threads)


def run_bounds(fn: Callable[[int, int], None], edges: list[int], threads: int) -> None:
    """Call ``fn(edges[i], edges[i + 1])`` for every chunk, shared by the caller and ``threads - 1`` pool
    threads. The caller waits only for chunks a helper has started: one that never ran leaves its share."""
    chunks = len(edges) - 1
    if chunks == 1:
        fn(edges[0], edges[1])
        return
    counter = itertools.count()
    done = np.zeros(chunks, np.int8)
    errors: list[BaseException] = []

    def worker() -> None:
        while (i := next(counter)) < chunks:  # itertools.count is atomic under the GIL
            try:
                fn(edges[i], edges[i + 1])
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread below
                errors.append(exc)
            finally:
                done[i] = 1

    helpers = _helpers(min(threads, chunks) - 1) if threads > 1 else []
    for h in helpers:
        h.post(worker)
    worker()
    if helpers:
        helpers[0].spin.all_set(done)
    if errors:
        raise errors[0]


def matmul(w: np.ndarray, x: np.ndarray, threads: int) -> np.ndarray:
    """w (M, K) @ x (K, L) (or x (N, K, L), batched), split by columns of x when it has enough of them
    (each thread packs only its own columns), else by rows of w."""
    m, k = w.shape
    cols = x.shape[-1]
    out = np.empty((*x.shape[:-2], m, cols), dtype=np.result_type(w, x))
    work = m * k * math.prod(x.shape[:-2]) * cols
    edges = bounds(cols, threads, work, COLUMN_ALIGN, COLUMN_ALIGN)
    if len(edges) > 2 or cols >= m:
        run_bounds(lambda a, b: np.matmul(w, x[..., a:b], out=out[..., a:b]), edges, threads)
    else:
        run_chunks(lambda a, b: np.matmul(w[a:b], x, out=out[..., a:b, :]), m, threads, work, 16)
    return out
