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

    class Spin:
        @staticmethod
        def all_set(flags):
            assert flags.all()  # waiting here would mean waiting on the stalled helper

    class Stalled:
        spin = Spin()

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
