"""Device measurement over TVM RPC: the aarch64 runner's RPC server under qemu-user, direct and
through a tracker, and MetaSchedule's builder/runner pointed at it."""
from __future__ import annotations

import math
import os
import subprocess
import time

import numpy as np
import pytest

pytest.importorskip("tvm")

import tvm  # noqa: E402
from tvm import rpc as tvm_rpc  # noqa: E402
from tvm import te  # noqa: E402

from edgert.compiler import rpc, toolchain  # noqa: E402
from edgert.compiler.targets import load_target  # noqa: E402
from edgert.errors import TargetError, TuningError  # noqa: E402

pytestmark = pytest.mark.qemu
TARGET = "generic-aarch64"


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def _matmul(n: int = 64):
    a = te.placeholder((n, n), "float32", name="A")
    b = te.placeholder((n, n), "float32", name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return te.create_prim_func([a, b, c]).with_attr("global_symbol", "main")


@pytest.fixture(scope="module")
def matmul_so(tmp_path_factory):
    """An aarch64 library with the 64x64 matmul, linked by the cross compiler."""
    path = tmp_path_factory.mktemp("rpc") / "matmul.so"
    lib = tvm.compile(tvm.IRModule({"main": _matmul()}), target=load_target(TARGET).tvm_target())
    lib.export_library(str(path), cc=toolchain.find_cxx(load_target(TARGET)))
    return path


def _run_matmul(session, so_path) -> None:
    session.upload(str(so_path), "matmul.so")
    mod = session.load_module("matmul.so")
    dev = session.cpu()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 64, 64)).astype("float32")
    c = tvm.runtime.empty((64, 64), "float32", dev)
    mod["main"](tvm.runtime.tensor(a, dev), tvm.runtime.tensor(b, dev), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)


def test_remote_run_matches_numpy(qemu, matmul_so):
    with rpc.rpc_server(TARGET, "qemu") as ep:
        assert ep.host == "127.0.0.1" and ep.port and ep.server_pid
        sess = tvm_rpc.connect("127.0.0.1", ep.port, session_timeout=60)
        _run_matmul(sess, matmul_so)
        work = sess.get_function("tvm.rpc.server.workpath")("")
        assert os.path.isdir(work) and "matmul.so" in sess.listdir("")
        assert bytes(sess.download("matmul.so")) == matmul_so.read_bytes()
        # MetaSchedule fills its measurement inputs on the device; the bundle has no runtime_extra.
        dev = sess.cpu()
        x = tvm.runtime.empty((1000,), "float32", dev)
        sess.get_function("tvm.contrib.random.random_fill_for_measure")(x)
        vals = x.numpy()
        assert 1.0 <= vals.min() and vals.max() < 10.0 and vals.std() > 0.5
        mod = sess.load_module("matmul.so")
        args = [tvm.runtime.empty((64, 64), "float32", dev) for _ in range(3)]
        secs = mod.time_evaluator("main", dev, number=2, repeat=2)(*args).results
        assert len(secs) == 2 and all(0 < s < 1 for s in secs)
        with pytest.raises(Exception, match="inside the RPC work folder"):
            sess.upload(bytearray(b"x"), "../escape.so")
        del mod, sess
        pid = ep.server_pid
    assert _gone(pid)
    assert not os.path.exists(os.path.dirname(work))  # the private work folder went with it


def _candidates(n: int):
    """n distinct schedules of the matmul (tile sizes), as MetaSchedule would propose."""
    out = []
    for tile in (4, 8, 16, 32)[:n]:
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": _matmul()}))
        i, j, _ = sch.get_loops(sch.get_sblock("C"))
        _, ji = sch.split(j, factors=[None, tile])
        if tile <= 8:
            sch.vectorize(ji)
        else:
            sch.parallel(i)
        out.append(sch)
    return out


def _measure(builder, runner, schedules):
    from tvm.s_tir import meta_schedule as ms

    target = rpc.tuning_target(TARGET, num_cores=2)
    built = builder.build([ms.builder.BuilderInput(s.mod, target) for s in schedules])
    args_info = ms.arg_info.ArgInfo.from_prim_func(_matmul())
    inputs = [ms.runner.RunnerInput(b.artifact_path, "cpu", args_info) for b in built if b.error_msg is None]
    return built, [f.result() for f in runner.run(inputs)], target


def test_metaschedule_measures_candidates_on_the_device(qemu):
    from tvm.s_tir import meta_schedule as ms

    fast = ms.runner.EvaluatorConfig(number=2, repeat=2, min_repeat_ms=0)
    schedules = _candidates(4)
    with rpc.rpc_server(TARGET, "qemu") as ep:
        builder, runner = rpc.ms_builder_runner(TARGET, ep, evaluator_config=fast, max_workers=2)
        built, results, target = _measure(builder, runner, schedules)
        assert [b.error_msg for b in built] == [None] * 4
        assert [r.error_msg for r in results] == [None] * 4
        db = ms.database.MemoryDatabase()
        workload = db.commit_workload(tvm.IRModule({"main": _matmul()}))
        for sch, r in zip(schedules, results, strict=True):
            args_info = ms.arg_info.ArgInfo.from_prim_func(_matmul())
            db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, r.run_secs, target, args_info))
        runner.check()
    records = db.get_all_tuning_records()
    assert len(records) == 4
    secs = [float(s) for rec in records for s in rec.run_secs]
    assert len(secs) == 8 and all(math.isfinite(s) and 0 < s < 1 for s in secs)
    assert runner.stats.measured == 4 and runner.stats.run_failed == 0
    mean = lambda rec: sum(float(s) for s in rec.run_secs) / len(rec.run_secs)  # noqa: E731
    assert mean(db.get_top_k(workload, 1)[0]) == pytest.approx(min(mean(rec) for rec in records))


def test_tracker_hands_out_the_device_by_key(qemu, matmul_so):
    from tvm.s_tir import meta_schedule as ms

    with rpc.local_tracker() as (host, port), rpc.rpc_server(TARGET, "qemu", tracker=f"{host}:{port}", key="edgert-test") as ep:
        assert ep.via_tracker and ep.key == "edgert-test"
        tracker = tvm_rpc.connect_tracker(host, port)
        for _ in range(2):  # the server offers itself again after each session
            _run_matmul(tracker.request("edgert-test", session_timeout=60), matmul_so)
        fast = ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0)
        builder, runner = rpc.ms_builder_runner(TARGET, ep, evaluator_config=fast)
        _, results, _ = _measure(builder, runner, _candidates(1))
        assert results[0].error_msg is None and float(results[0].run_secs[0]) > 0
        # A key no board registered fails at once, naming the key, instead of waiting forever.
        wrong = rpc.RPCEndpoint(key="no-such-board", tracker_host=host, tracker_port=port, session_timeout=20)
        builder, runner = rpc.ms_builder_runner(TARGET, wrong, evaluator_config=fast, fail_fast=2)
        start = time.monotonic()
        with pytest.raises(TuningError, match="no device registered under key 'no-such-board'.*edgert-test"):
            _measure(builder, runner, _candidates(2))
        assert time.monotonic() - start < 30


def test_dead_server_is_a_loud_error(qemu):
    from tvm.s_tir import meta_schedule as ms

    fast = ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0)
    with rpc.rpc_server(TARGET, "qemu") as ep:
        builder, runner = rpc.ms_builder_runner(TARGET, ep, evaluator_config=fast, fail_fast=10)
        os.kill(ep.server_pid, 9)  # the device went away mid-tuning
        start = time.monotonic()
        _, results, _ = _measure(builder, runner, _candidates(2))
        assert all(r.error_msg for r in results) and time.monotonic() - start < 30
        with pytest.raises(TuningError, match=r"none of the 2 candidates.*127\.0\.0\.1:\d+.*first error: run failed: .*"):
            runner.check()
    assert _gone(ep.server_pid)


def test_server_is_stopped_when_the_block_is_interrupted(qemu):
    with pytest.raises(KeyboardInterrupt), rpc.rpc_server(TARGET, "qemu") as ep:
        pid = ep.server_pid
        raise KeyboardInterrupt
    assert _gone(pid)


def test_server_usage_errors_are_one_line(qemu):
    tgt = load_target(TARGET)
    transport = rpc.open_transport("qemu")
    try:
        runner = transport.push_runner(tgt)
        p = subprocess.run(
            transport.device.wrap([runner, "--rpc-server", "--tracker", "127.0.0.1:9"]),
            capture_output=True, text=True, timeout=60,
        )
    finally:
        transport.close()
    assert p.returncode == 2
    assert p.stdout.splitlines() == [
        'EDGERT {"status":"error","code":"usage","message":"--tracker needs --key KEY, the name clients request this device by"}'
    ]


def test_target_and_device_must_agree():
    with pytest.raises(TargetError, match="device 'qemu' runs aarch64"), rpc.rpc_server("host", "qemu"):
        pass
