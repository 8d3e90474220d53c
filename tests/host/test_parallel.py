"""Chunking and the split products of edgert.host.parallel: same results on any thread count."""
from __future__ import annotations

import numpy as np
import pytest

RNG = np.random.default_rng(0)


def test_bounds_keep_small_work_whole_and_split_large_work_in_min_size_chunks():
    from edgert.host import parallel

    assert parallel.bounds(1000, 2, parallel.MIN_PARALLEL_WORK - 1) == [0, 1000]
    assert parallel.bounds(1000, 1, 1e12) == [0, 1000]
    edges = parallel.bounds(1000, 2, parallel.MIN_PARALLEL_WORK, min_size=300)
    assert edges[0] == 0 and edges[-1] == 1000 and len(edges) - 1 == min(1000 // 300, parallel.CHUNKS_PER_THREAD * 2)
    assert all(b - a >= 300 for a, b in zip(edges, edges[1:], strict=False))
    assert len(parallel.bounds(1000, 2, parallel.MIN_PARALLEL_WORK)) - 1 == parallel.CHUNKS_PER_THREAD * 2
    aligned = parallel.bounds(784, 2, parallel.MIN_PARALLEL_WORK, min_size=64, align=64)
    assert aligned[0] == 0 and aligned[-1] == 784 and all(e % 64 == 0 for e in aligned[1:-1])
    assert sorted(set(aligned)) == aligned and len(aligned) > 2


@pytest.mark.parametrize("m,k,cols,batch", [(7, 30, 1000, 0), (300, 20, 50, 0), (9, 11, 700, 3)])
def test_matmul_split_by_columns_or_rows_equals_one_product(m, k, cols, batch, monkeypatch):
    from edgert.host import parallel

    monkeypatch.setattr(parallel, "MIN_PARALLEL_WORK", 0)
    w = RNG.standard_normal((m, k)).astype(np.float32)
    x = RNG.standard_normal((batch, k, cols) if batch else (k, cols)).astype(np.float32)
    for threads in (1, 2, 4):
        np.testing.assert_allclose(parallel.matmul(w, x, threads), w @ x, rtol=1e-5, atol=1e-5)


def test_run_chunks_with_a_stalled_helper_still_covers_everything_on_the_caller(monkeypatch):
    """A pool thread that never starts (a descheduled core) leaves its chunks to the calling thread,
    which then has nothing to wait for."""
    import threading

    from edgert.host import parallel

    seen = np.zeros(100, np.int64)
    ran_on = set()

    def mark(a, b):
        ran_on.add(threading.get_ident())
        seen[a:b] += 1

    class Pool:
        @staticmethod
        def all_set(flags):
            assert flags.all()  # waiting here would mean waiting on the stalled helper

    class Stalled:
        pool = Pool()

        def post(self, task):
            pass  # never scheduled

    monkeypatch.setattr(parallel, "_helpers", lambda count: [Stalled() for _ in range(count)])
    parallel.run_chunks(mark, 100, threads=2, work=parallel.MIN_PARALLEL_WORK)
    assert (seen == 1).all() and ran_on == {threading.get_ident()}


def test_an_error_on_a_helper_thread_is_raised_on_the_caller():
    import threading

    from edgert.host import parallel

    caller = threading.get_ident()
    on_helper = []

    def chunk(a, b):
        if threading.get_ident() != caller:
            on_helper.append(a)
            raise ValueError("bad chunk")
        threading.Event().wait(0.05)  # leave the helper time to take a chunk

    with pytest.raises(ValueError, match="bad chunk"):
        parallel.run_bounds(chunk, [0, 1, 2, 3, 4], threads=2)
    assert on_helper


# ---- native tasks (no GIL in the hand-off) ----


@pytest.mark.parametrize("m,k,cols,batch", [(7, 30, 1000, 0), (33, 5, 130, 0), (9, 11, 700, 3)])
def test_native_matmul_split_by_columns_equals_one_product(m, k, cols, batch, monkeypatch):
    from edgert.host import parallel

    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)  # split even these small products
    w = RNG.standard_normal((m, k)).astype(np.float32)
    x = RNG.standard_normal((batch, k, cols) if batch else (k, cols)).astype(np.float32)
    assert parallel.native_bounds(cols, 2, 0, 32, 16).size > 2  # the cases do split
    for threads in (1, 2, 3):
        np.testing.assert_allclose(parallel.native_matmul(w, x, threads), w @ x, rtol=1e-5, atol=1e-5)


def test_native_bounds_keep_small_work_whole_and_split_large_work():
    from edgert.host import parallel

    assert parallel.native_bounds(1000, 2, parallel.MIN_NATIVE_WORK - 1).tolist() == [0, 1000]
    assert parallel.native_bounds(1000, 1, 1e12).tolist() == [0, 1000]
    edges = parallel.native_bounds(1000, 2, parallel.MIN_NATIVE_WORK, min_size=32, align=16)
    assert edges.dtype == np.int64 and edges[0] == 0 and edges[-1] == 1000
    assert len(edges) - 1 == 2 * parallel.NATIVE_CHUNKS_PER_THREAD and all(e % 16 == 0 for e in edges[1:-1])


def _posted_task(ctrl, w, x, out, edges, helpers_in):
    """Set up a gemm task in the control block ``ctrl`` as _run posts it, without running any chunk."""
    from edgert.host import parallel

    args = parallel._gemm_args(w, x, out)
    seq = int(ctrl[parallel._SEQ]) + 1
    ctrl[parallel._FN] = parallel.compile_task(parallel._gemm_task)
    ctrl[parallel._ARGS], ctrl[parallel._EDGES] = args.ctypes.data, edges.ctypes.data
    ctrl[parallel._HELPERS_IN] = helpers_in
    ctrl[parallel._DONE] = 0
    ctrl[parallel._NEXT] = (seq << parallel._TAG_SHIFT) | ((edges.size - 1) << parallel._COUNT_SHIFT)
    ctrl[parallel._SEQ] = seq
    return args  # keep alive while the task runs


def test_a_helper_joins_a_native_task_only_within_its_thread_count():
    """threads=N: helper slots 0..N-2 claim chunks, the others leave them (HostOptions(threads) is honoured
    whatever other executors made the pool grow to)."""
    from edgert.host import parallel

    pool = parallel._pool()
    assert pool is not None
    w = RNG.standard_normal((6, 8)).astype(np.float32)
    x = RNG.standard_normal((8, 64)).astype(np.float32)
    out = np.zeros((6, 64), np.float32)
    edges = np.array([0, 16, 32, 48, 64], np.int64)
    ctrl = np.zeros_like(pool.ctrl)  # a private block: the pool's live helpers do not see this task
    args = _posted_task(ctrl, w, x, out, edges, helpers_in=1)
    posted = np.zeros(4, np.int64)
    assert not pool.serve(ctrl, posted, 1, 0, 5)  # slot 1: outside the task's threads
    assert ctrl[parallel._DONE] == 0 and not out.any()
    assert not pool.serve(ctrl, posted, 0, 0, 5)  # slot 0 runs every chunk, then idles out
    assert ctrl[parallel._DONE] == 4
    posted[2] = 1
    assert pool.serve(ctrl, posted, 2, 0, 5)  # a Python task posted to its slot: back to Python
    del args
    np.testing.assert_allclose(out, w @ x, rtol=1e-5, atol=1e-5)


def test_native_task_with_helpers_that_never_come_runs_whole_on_the_caller(monkeypatch):
    """Helpers that never run (descheduled cores) claim nothing, so the caller does every chunk and has
    nothing to wait for."""
    import threading

    from edgert.host import parallel

    class Asleep:
        wake = threading.Event()

    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    monkeypatch.setattr(parallel, "_helpers", lambda count: [Asleep() for _ in range(count)])
    monkeypatch.setattr(parallel, "_BACKOFF", parallel._Backoff())
    w = RNG.standard_normal((5, 7)).astype(np.float32)
    x = RNG.standard_normal((7, 300)).astype(np.float32)
    result = []
    t = threading.Thread(target=lambda: result.append(parallel.native_matmul(w, x, 4)), daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the caller waited for chunks no helper claimed"
    np.testing.assert_allclose(result[0], w @ x, rtol=1e-5, atol=1e-5)
    assert parallel._BACKOFF.skip == 0  # no wait, no stall recorded


def test_backoff_runs_tasks_alone_after_a_stall_doubling_and_resets_after_a_clean_try():
    from edgert.host import parallel

    b = parallel._Backoff()
    assert b.take()
    b.record(stalled=True)
    alone = 0
    while not b.take():
        alone += 1
    assert alone == parallel.MIN_SKIP
    b.record(stalled=True)
    alone = 0
    while not b.take():
        alone += 1
    assert alone == 2 * parallel.MIN_SKIP
    b.record(stalled=False)
    b.record(stalled=True)
    alone = 0
    while not b.take():
        alone += 1
    assert alone == parallel.MIN_SKIP
    for _ in range(20):
        b.record(stalled=True)
    assert b.skip <= parallel.MAX_SKIP


def test_executor_threads_reach_the_native_tasks(monkeypatch):
    """HostExecutor(threads=N) hands N to the split kernels (the depthwise and 1x1 convolutions)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgert.host import HostExecutor, parallel

    seen = []
    real = parallel.run_native
    monkeypatch.setattr(parallel, "run_native", lambda task, args, edges, threads: (seen.append(threads),
                                                                                      real(task, args, edges, threads)))
    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    dw = numpy_helper.from_array(RNG.standard_normal((4, 1, 3, 3)).astype(np.float32), "dw")
    pw = numpy_helper.from_array(RNG.standard_normal((6, 4, 1, 1)).astype(np.float32), "pw")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "dw"], ["h"], group=4, pads=[1, 1, 1, 1]), helper.make_node("Conv", ["h", "pw"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 10, 140])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 10, 140])], [dw, pw])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    x = RNG.standard_normal((1, 4, 10, 140)).astype(np.float32)
    one = HostExecutor(model, threads=1).run({"x": x})["y"]
    assert seen == []
    two = HostExecutor(model, threads=2).run({"x": x})["y"]
    assert seen == [2, 2]
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,k,cols", [(1280, 32, 49), (96, 40, 7)])
def test_native_matmul_with_too_few_columns_splits_by_rows_on_numpy_blas(m, k, cols, monkeypatch):
    """7x7 planes (49 columns) cannot be split by columns: blocks of output rows instead, each on numpy's
    cblas_sgemm (numpy_sgemm), equal to one product."""
    from edgert.host import parallel

    if not parallel.numpy_sgemm():
        pytest.skip("this numpy's wheel bundles no ILP64 OpenBLAS (scipy_cblas_sgemm64_): the split stays whole")
    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    w = RNG.standard_normal((m, k)).astype(np.float32)
    x = RNG.standard_normal((k, cols)).astype(np.float32)
    assert parallel.native_bounds(cols, 2, 1, parallel.COLUMN_ALIGN // 2, 16).size == 2  # no column split
    assert parallel.native_bounds(m, 2, 1, 16, 16).size > 2  # a row split
    for threads in (1, 2, 3):
        np.testing.assert_allclose(parallel.native_matmul(w, x, threads), w @ x, rtol=1e-5, atol=1e-4)



@pytest.mark.parametrize("shape", [(300, 77), (97, 2000)])
def test_sparse_matvec_splits_its_rows_over_a_native_task(shape, monkeypatch):
    """At 2-3 threads a batch-1 CSR product runs its rows as a native task (no GIL in the hand-off), equal to
    the NumPy specification."""
    from edgert.host import parallel, sparse

    calls = []
    real = parallel.run_native
    monkeypatch.setattr(parallel, "run_native", lambda *a: (calls.append(a[3]), real(*a)))
    monkeypatch.setattr(sparse, "MATVEC_NATIVE_WORK", 0)
    w = RNG.standard_normal(shape).astype(np.float32)
    w[RNG.random(shape) < 0.8] = 0
    csr = sparse.to_csr(w)
    x = RNG.standard_normal((shape[1], 1)).astype(np.float32)
    want = sparse.csr_matmul_numpy(csr, x)
    for threads in (2, 3):
        got = sparse.csr_matmul(csr, x, threads)
        assert (np.abs(got - want) <= 1e-5 * (np.abs(w) @ np.abs(x)) + 1e-30).all()
    assert calls == [2, 3]
