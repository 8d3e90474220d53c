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


class _Pool:
    """The numba side of the helper threads: _serve, _run, _all_set compiled (and cached on disk), the shared
    control block of native tasks and each helper's Python task counter."""

    def __init__(self) -> None:
        from edgert.model import require

        numba = require("numba", "host")
        jit = numba.njit(nogil=True, cache=True)
        work = jit(_with_globals(_work, {}))
        self.serve = jit(_with_globals(_serve, {"_work": work}))
        self.run = jit(_with_globals(_run, {"_work": work}))
        self.all_set = jit(_with_globals(_all_set, {}))
        self.ctrl = np.zeros(_CTRL_WORDS, np.int64)
        self.posted = np.zeros(64, np.int64)  # per helper slot: sequence number of its latest Python task
        self.lock = threading.Lock()  # one native task at a time uses ctrl (another caller runs its task alone)


class _Helper:
    """One pool thread: runs native tasks and the latest posted Python task, spins briefly for the next
    before sleeping."""

    def __init__(self, pool: _Pool, slot: int) -> None:
        self.pool, self.slot = pool, slot
        self.task: Callable[[], None] | None = None
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="edgert-host", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        pool, seen = self.pool, 0
        while True:
            if not pool.serve(pool.ctrl, pool.posted, self.slot, seen, SPIN_YIELDS):
                self.wake.wait()
                self.wake.clear()  # a post between wait() and here is still seen: posted has changed
                continue
            seen = int(pool.posted[self.slot])
            task = self.task
            if task is not None:
                task()

    def post(self, task: Callable[[], None]) -> None:
        self.task = task
        self.pool.posted[self.slot] += 1
        self.wake.set()


_POOL: _Pool | None = None
_NO_POOL = False  # no libc sched_yield or numba here: every call runs on the calling thread
_HELPERS: list[_Helper] = []
_LOCK = threading.Lock()


def _pool() -> _Pool | None:
    global _POOL, _NO_POOL
    with _LOCK:
        if _POOL is None and not _NO_POOL:
            try:
                _POOL = _Pool()
            except Exception:  # noqa: BLE001 - e.g. numba cannot link sched_yield (not POSIX): no pool
                _NO_POOL = True
        return _POOL


def _helpers(count: int) -> list[_Helper]:
    pool = _pool()
    if pool is None:
        return []
    with _LOCK:
        # Threads do not survive a fork: replace dead ones (their slots are reused).
        if not all(h.thread.is_alive() for h in _HELPERS):
            _HELPERS[:] = []
        while len(_HELPERS) < min(count, pool.posted.size):
            _HELPERS.append(_Helper(pool, len(_HELPERS)))
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
        helpers[0].pool.all_set(done)
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


# ---- Native tasks: the hand-off without the GIL ----------------------------------------------------------
# A Python-level split still costs 50-150 us on the 2-core VM even with a spinning helper: the helper needs
# the GIL to run its Python worker, and waiting for the GIL is a sleep (a futex wake later). MobileNetV2's
# layers take 0.1-0.3 ms, so most of them ran whole on one thread. A native task never touches the GIL:
# the helper spins in numba (_serve), claims chunks with a compare-and-swap on a shared word and calls the
# chunk through a C function pointer (a numba cfunc taking an int64 argument block); the caller does the
# same (_run) and then waits only for chunks a helper has claimed. Same rule as above: a stalled helper
# leaves its unclaimed chunks to whoever is running.

# Work (BLAS multiply-adds, as MIN_PARALLEL_WORK) from which a native task is split. MobileNetV2-224, 2 threads,
# configurations alternated in one process on the 2-core VM while other jobs came and went (medians of 6
# rounds; rounds where the second core was free in brackets): 1 thread 14.2 ms (13.9-14.7); no native split
# 14.3; depthwise only at 1M 15.7 (11.7), at 2M 16.1 (14.7); depthwise and 1x1 convs at 1M 15.3 (11.5-12.7),
# at 2M 13.4 (11.3-11.6). When another process holds the second core, 2 threads stay ~1-2 ms above 1 thread.
MIN_NATIVE_WORK = 2_000_000
# Chunks per thread of a native task: a chunk costs a compare-and-swap, not a GIL round trip, so more of
# them bound what a descheduled helper can hold up (the caller waits only for claimed chunks).
NATIVE_CHUNKS_PER_THREAD = 4

# Words of the shared control block (int64; the contended ones on separate cache lines).
_SEQ, _NEXT, _DONE, _FN, _ARGS, _EDGES, _HELPERS_IN, _CLOCK = 0, 8, 16, 24, 25, 26, 27, 28
_CTRL_WORDS = 32
# _NEXT packs (task tag, chunk count, next chunk): a claim is one compare-and-swap that fails if another
# task was posted meanwhile (the tag), so the fields it then reads belong to the chunk it claimed.
_TAG_SHIFT, _COUNT_SHIFT, _FIELD = 40, 20, (1 << 20) - 1

# Numba intrinsics and external functions, made on first use (numba is imported lazily) and given to the
# native functions as globals when compiled (compile_task); None until then.
_i64_ptr = _f32_ptr = _atomic_load = _atomic_store = _cas = _fetch_add = _call_task = _sched_yield = _clock_gettime = _xxgemm = None
_call_sgemm = None


def _native_globals() -> dict:
    """The intrinsics named above (llvmlite IR: atomics, int -> pointer, a call through a function address)."""
    global _NATIVE_GLOBALS
    if _NATIVE_GLOBALS is not None:
        return _NATIVE_GLOBALS
    from llvmlite import ir
    from numba import carray, types
    from numba.core import cgutils
    from numba.core.extending import intrinsic

    i64 = ir.IntType(64)

    def item_ptr(context, builder, aryty, ary, idx):
        return cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, ary), [idx],
                                        wraparound=False)

    def pointer_to(dtype):
        @intrinsic
        def to_ptr(typingctx, addr):
            def codegen(context, builder, sig, args):
                return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
            return types.CPointer(dtype)(types.int64), codegen
        return to_ptr

    @intrinsic
    def atomic_load(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            return builder.load_atomic(item_ptr(context, builder, sig.args[0], args[0], args[1]), "seq_cst", 8)
        return types.int64(arr, types.intp), codegen

    @intrinsic
    def atomic_store(typingctx, arr, idx, val):
        def codegen(context, builder, sig, args):
            builder.store_atomic(args[2], item_ptr(context, builder, sig.args[0], args[0], args[1]), "seq_cst", 8)
            return context.get_dummy_value()
        return types.void(arr, types.intp, types.int64), codegen

    @intrinsic
    def cas(typingctx, arr, idx, old, new):
        def codegen(context, builder, sig, args):
            ptr = item_ptr(context, builder, sig.args[0], args[0], args[1])
            res = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
            return builder.extract_value(res, 1)
        return types.boolean(arr, types.intp, types.int64, types.int64), codegen

    @intrinsic
    def fetch_add(typingctx, arr, idx, val):
        def codegen(context, builder, sig, args):
            return builder.atomic_rmw("add", item_ptr(context, builder, sig.args[0], args[0], args[1]), args[2], "seq_cst")
        return types.int64(arr, types.intp, types.int64), codegen

    @intrinsic
    def call_task(typingctx, fn, args, start, stop):
        def codegen(context, builder, sig, args_):
            fnty = ir.FunctionType(ir.VoidType(), [i64, i64, i64])
            builder.call(builder.inttoptr(args_[0], fnty.as_pointer()), args_[1:])
            return context.get_dummy_value()
        return types.void(types.int64, types.int64, types.int64, types.int64), codegen

    @intrinsic
    def call_sgemm(typingctx, fn, m, n, k, a, lda, b, ldb, c, ldc):
        # cblas_sgemm of an ILP64 OpenBLAS at address ``fn``: row-major C (m x n) = A (m x k) @ B (k x n),
        # alpha 1, beta 0; pointers and sizes as int64 (the address comes in the task's argument block, so
        # the compiled code holds none and stays valid in the disk cache).
        def codegen(context, builder, sig, args_):
            f32, i32, ptr = ir.FloatType(), ir.IntType(32), ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr, i64])
            fn_, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args_
            builder.call(builder.inttoptr(fn_, fnty.as_pointer()), [
                ir.Constant(i32, 101), ir.Constant(i32, 111), ir.Constant(i32, 111), m_, n_, k_, ir.Constant(f32, 1.0),
                builder.inttoptr(a_, ptr), lda_, builder.inttoptr(b_, ptr), ldb_, ir.Constant(f32, 0.0),
                builder.inttoptr(c_, ptr), ldc_])
            return context.get_dummy_value()
        return types.void(*([types.int64] * 10)), codegen

    # numba's own BLAS entry (scipy's sgemm, column-major; resolved by name, so cached code stays valid).
    # Pointers are passed as int64: the same registers in the x86-64 and AArch64 calling conventions.
    xxgemm = types.ExternalFunction("numba_xxgemm", types.int32(
        types.int8, types.int8, types.int8, types.intp, types.intp, types.intp, types.int64, types.int64, types.intp,
        types.int64, types.intp, types.int64, types.int64, types.intp))
    _NATIVE_GLOBALS = {
        "_i64_ptr": pointer_to(types.int64), "_f32_ptr": pointer_to(types.float32), "_i32_ptr": pointer_to(types.int32),
        "_u16_ptr": pointer_to(types.uint16), "_atomic_load": atomic_load,
        "_atomic_store": atomic_store, "_cas": cas, "_fetch_add": fetch_add, "_call_task": call_task,
        "_sched_yield": types.ExternalFunction("sched_yield", types.int32()),
        "_clock_gettime": types.ExternalFunction("clock_gettime", types.int32(types.int32, types.int64)),
        "_xxgemm": xxgemm, "_call_sgemm": call_sgemm, "carray": carray,
    }
    return _NATIVE_GLOBALS


_NATIVE_GLOBALS: dict | None = None


def _with_globals(py_func: Callable, injected: dict) -> Callable:
    """``py_func`` seeing ``injected`` as globals: numba compiles the dispatchers and intrinsics it calls into it,
    and still caches it on disk (keyed by its source file, which holds the kernels it calls)."""
    import types

    f = types.FunctionType(py_func.__code__, {**py_func.__globals__, **_native_globals(), **injected}, py_func.__name__,
                           py_func.__defaults__)
    f.__qualname__, f.__module__ = py_func.__qualname__, py_func.__module__
    return f


_TASKS: dict[Callable, int] = {}


def compile_task(py_func: Callable, **injected) -> int:
    """Address of ``py_func(args_address, start, stop)`` compiled as a C function (numba cfunc, cached on disk):
    a chunk of a native task, reading its arrays and sizes from the int64 block at ``args_address``. Globals
    in ``injected`` (e.g. compiled kernels) replace the module's when it compiles."""
    if py_func not in _TASKS:
        from edgert.model import require

        numba = require("numba", "host")
        sig = numba.types.void(numba.types.int64, numba.types.int64, numba.types.int64)
        _TASKS[py_func] = numba.cfunc(sig, cache=True, nogil=True)(_with_globals(py_func, injected)).address
    return _TASKS[py_func]


def _work(ctrl):
    # Claim chunks of the current task and run them until none is left; returns how many this thread ran.
    ran = 0
    while True:
        v = _atomic_load(ctrl, _NEXT)
        i = v & _FIELD
        if i >= (v >> _COUNT_SHIFT) & _FIELD:
            return ran
        if _cas(ctrl, _NEXT, v, v + 1):
            edges = carray(_i64_ptr(ctrl[_EDGES]), i + 2)  # noqa: F821 - numba.carray, injected
            _call_task(ctrl[_FN], ctrl[_ARGS], edges[i], edges[i + 1])
            _fetch_add(ctrl, _DONE, 1)
            ran += 1


def _serve(ctrl, posted, slot, seen_posted, spins):
    # A helper between Python tasks: runs native tasks as they come; returns True when a Python task is posted
    # to it (posted[slot] changed), False after ``spins`` sched_yield() calls with nothing new.
    seen = -1
    idle = 0
    while idle < spins:
        if _atomic_load(posted, slot) != seen_posted:
            return True
        seq = _atomic_load(ctrl, _SEQ)
        if seq != seen:
            seen = seq
            if slot < ctrl[_HELPERS_IN]:  # the task's thread count leaves this helper out
                _work(ctrl)
            idle = 0
        else:
            _sched_yield()
            idle += 1
    return False


def _run(ctrl, fn, args, edges, count, helpers):
    # The caller: post the task to helper slots [0, helpers), run chunks, then wait for the chunks helpers claimed.
    seq = ctrl[_SEQ] + 1
    ctrl[_HELPERS_IN] = helpers
    ctrl[_FN] = fn
    ctrl[_ARGS] = args
    ctrl[_EDGES] = edges
    _atomic_store(ctrl, _DONE, 0)
    _atomic_store(ctrl, _NEXT, ((seq & ((1 << 23) - 1)) << _TAG_SHIFT) | (count << _COUNT_SHIFT))
    _atomic_store(ctrl, _SEQ, seq)
    clock = ctrl.ctypes.data + 8 * _CLOCK
    _clock_gettime(1, clock)  # CLOCK_MONOTONIC
    began = ctrl[_CLOCK] * 1_000_000_000 + ctrl[_CLOCK + 1]
    ran = _work(ctrl)
    if _atomic_load(ctrl, _DONE) == count:
        return 0
    # Wait for chunks helpers claimed: polling first (a yield would hand this core to another process for its
    # whole time slice), then yielding.
    _clock_gettime(1, clock)
    start = ctrl[_CLOCK] * 1_000_000_000 + ctrl[_CLOCK + 1]
    polls = 0
    while _atomic_load(ctrl, _DONE) < count:
        polls += 1
        if polls > POLLS:
            _sched_yield()
    _clock_gettime(1, clock)
    # Returns the nanoseconds waited beyond two of this thread's own chunks: a helper's chunk that started
    # late may legitimately take that long; a descheduled helper holds it up far longer.
    own = (start - began) // ran if ran > 0 else 0
    return ctrl[_CLOCK] * 1_000_000_000 + ctrl[_CLOCK + 1] - start - 2 * own


def _all_set(flags):
    # Returns when every flag is nonzero (the Python tasks' chunks a helper started).
    i = 0
    while i < flags.size:
        if flags[i] == 0:
            _sched_yield()
        else:
            i += 1


class _Backoff:
    """When the caller had to wait long for a helper's chunk (its thread descheduled mid-chunk: another
    process holds that core), the next ``skip`` native tasks run on the calling thread alone; ``skip``
    doubles with every stalled try (up to MAX_SKIP) and resets after a clean one. On a busy host this
    keeps 2 threads near 1 thread's time instead of paying a descheduling (milliseconds) on every layer."""

    def __init__(self) -> None:
        self.skip = 0  # tasks left to run alone
        self.next_skip = MIN_SKIP

    def take(self) -> bool:
        """True when this task may use helpers."""
        if self.skip > 0:
            self.skip -= 1
            return False
        return True

    def record(self, stalled: bool) -> None:
        if stalled:
            self.skip, self.next_skip = self.next_skip, min(2 * self.next_skip, MAX_SKIP)
        else:
            self.next_skip = MIN_SKIP


# A wait this long (ns) for helpers' chunks, beyond two of the caller's own chunk times (_run), counts as a
# stall: a chunk of a split task takes well under 100 us on MobileNetV2; a descheduled thread, milliseconds.
STALL_NS = 1_000_000
# The caller polls this many times (~20-50 ns each) for helpers' chunks before it yields its core.
POLLS = 20_000
MIN_SKIP, MAX_SKIP = 64, 4096  # native tasks run alone after a stall (doubling while stalls go on)
_BACKOFF = _Backoff()


def native_bounds(n: int, threads: int, work: float, min_size: int = 1, align: int = 1,
                  min_work: float | None = None) -> np.ndarray:
    """Chunk boundaries of a native task: one chunk below ``min_work`` (default MIN_NATIVE_WORK), else up to
    NATIVE_CHUNKS_PER_THREAD per thread (each at least ``min_size`` items, inner boundaries multiples of ``align``)."""
    least = MIN_NATIVE_WORK if min_work is None else min_work
    chunks = 1 if threads <= 1 or work < least else min(n // max(1, min_size), NATIVE_CHUNKS_PER_THREAD * threads)
    if chunks <= 1:
        return np.array([0, n], np.int64)
    inner = {min(n, align * round(i * n / (chunks * align))) for i in range(1, chunks)}
    return np.array(sorted(inner - {0, n} | {0, n}), np.int64)


def run_native(task: int, args: np.ndarray, edges: np.ndarray, threads: int) -> None:
    """Run the native task ``task`` (compile_task) on the int64 argument block ``args`` over the chunks
    ``edges`` (int64), shared by the calling thread and up to ``threads - 1`` helpers."""
    pool = _pool() if threads > 1 and edges.size > 2 else None
    if pool is None or not pool.lock.acquire(blocking=False):
        # One thread, or another caller's task holds the pool: run every chunk here (a private block).
        pool = pool or _pool()
        if pool is None:
            from edgert.errors import MissingDependencyError

            raise MissingDependencyError("edgert's host executor could not build its numba thread pool: "
                                         "install the host extra (pip install 'edgert[host]') and check that numba imports")
        pool.run(np.zeros(_CTRL_WORDS, np.int64), task, args.ctypes.data, edges.ctypes.data, edges.size - 1, 0)
        return
    try:
        helpers = _helpers(min(threads, edges.size - 1) - 1) if _BACKOFF.take() else []
        for h in helpers:
            h.wake.set()
        waited = pool.run(pool.ctrl, task, args.ctypes.data, edges.ctypes.data, edges.size - 1, len(helpers))
        if helpers:
            _BACKOFF.record(waited >= STALL_NS)
    finally:
        pool.lock.release()


def _gemm_task(args, start, stop):
    # Columns [start, stop) of out (batch, M, L) = w (M, K) @ x (batch, K, L), all row-major float32. BLAS is
    # column-major: out^T = x^T w^T, each a row-major array read with its row length as leading dimension.
    a = carray(_i64_ptr(args), 10)  # noqa: F821 - numba.carray, injected
    w, x, out, m, k, cols, batch = a[0], a[1], a[2], a[3], a[4], a[5], a[6]
    alpha = args + 8 * 7  # a[7]: float32 1.0, a[8]: float32 0.0
    beta = args + 8 * 8
    for i in range(batch):
        xb = x + 4 * (i * k * cols + start)
        ob = out + 4 * (i * m * cols + start)
        if a[9]:  # numpy's OpenBLAS (numpy_sgemm)
            _call_sgemm(a[9], m, stop - start, k, w, k, xb, cols, ob, cols)
        else:
            _xxgemm(115, 110, 110, stop - start, m, k, alpha, xb, cols, w, k, beta, ob, cols)  # 's', 'n', 'n'


def _gemm_args(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    m, k = w.shape
    args = np.zeros(10, np.int64)
    args[:7] = (w.ctypes.data, x.ctypes.data, out.ctypes.data, m, k, x.shape[-1], math.prod(x.shape[:-2]))
    args[7:9].view(np.float32)[::2] = (1.0, 0.0)  # little-endian: the low half of each word
    args[9] = numpy_sgemm()
    return args


_NUMPY_SGEMM: int | None = None


def numpy_sgemm() -> int:
    """Address of numpy's own OpenBLAS ``cblas_sgemm`` (ILP64, as numpy's wheels bundle it), or 0.

    Why not scipy's (numba's BLAS entry): it is the slower one on these shapes (column blocks of
    MobileNetV2's 1x1 convs, ms at 1/2 threads: 24x144 @ 3136 0.34/0.22 against 0.27/0.16 with numpy's),
    and plain threads calling it at once scaled worse (2 threads doing twice the work of one took
    1.75-1.85x its time, numpy's 1.06-1.11x)."""
    global _NUMPY_SGEMM
    if _NUMPY_SGEMM is None:
        _NUMPY_SGEMM = 0
        import ctypes
        import glob
        import os

        libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*.so*"))):
            try:
                _NUMPY_SGEMM = ctypes.cast(ctypes.CDLL(path).scipy_cblas_sgemm64_, ctypes.c_void_p).value or 0
            except (OSError, AttributeError):  # another build of numpy: scipy's BLAS instead
                continue
            break
    return _NUMPY_SGEMM


def load_blas() -> None:
    """Load the BLAS native products call (numba's: scipy's OpenBLAS) now, so that the executor's one-BLAS-
    thread setting covers it: left at its default, each split product's blocks ran on OpenBLAS's own threads
    too, and MobileNetV2 at 2 threads took 350-800 ms instead of 16."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass  # numba's products then raise on first use, naming scipy


def native_matmul(w: np.ndarray, x: np.ndarray, threads: int) -> np.ndarray:
    """w (M, K) @ x (K, L) or (N, K, L), float32, split over a native task (BLAS on each block): by columns of
    x, or by rows of w when x has too few columns."""
    w = np.ascontiguousarray(w, np.float32)
    x = np.ascontiguousarray(x, np.float32)
    m, k = w.shape
    cols = x.shape[-1]
    work = m * k * math.prod(x.shape[:-2]) * cols
    out = np.empty((*x.shape[:-2], m, cols), np.float32)
    edges = native_bounds(cols, threads, work, COLUMN_ALIGN // 2, 16)
    if edges.size > 2:
        run_native(compile_task(_gemm_task), _gemm_args(w, x, out), edges, threads)
        return out
    if numpy_sgemm() and x.ndim == 2:
        # Too few columns to split (MobileNetV2's 7x7 planes: 49): by blocks of output rows instead. 2 threads
        # against 1 (ms, medians of 200 in one process): 1280x320 @ 49 0.444 -> 0.251, 960x160 @ 49 0.171 -> 0.106.
        edges = native_bounds(m, threads, work, 16, 16)
        if edges.size > 2:
            run_native(compile_task(_gemm_rows_task), _gemm_args(w, x, out), edges, threads)
            return out
    return np.matmul(w, x, out=out)


def _gemm_rows_task(args, start, stop):
    # Rows [start, stop) of out (M, L) = w (M, K) @ x (K, L), row-major float32, on numpy's cblas_sgemm.
    a = carray(_i64_ptr(args), 10)  # noqa: F821 - numba.carray, injected
    w, x, out, k, cols = a[0], a[1], a[2], a[4], a[5]
    _call_sgemm(a[9], stop - start, cols, k, w + 4 * start * k, k, x, cols, out + 4 * start * cols, cols)
