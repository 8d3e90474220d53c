"""Generated whole-graph functions: parity with onnxruntime and the interpreter, when they are made, the disk cache.

Tolerance as in tests/host/test_models.py: max |got - want| <= 1e-4 * max |want| + 1e-5 (summation order differs).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)
ZOO = ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws")


def _close(got, want, what=""):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    err = np.abs(got - want).max()
    assert err <= 1e-4 * np.abs(want).max() + 1e-5, f"{what} max|err| {err:.3g} vs max|ref| {np.abs(want).max():.3g}"


def _ort(model, feeds):
    import onnxruntime as ort

    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(nodes, inputs, inits, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _small_cnn(batch="N", width=6):
    w = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])]
    return _model(nodes, [("x", [batch, 2, 5, width])], {"w": w})


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_runs_as_one_generated_function(name):
    from edgert.host import HostExecutor, HostOptions
    from edgert.zoo import registry

    path = str(registry.get(name).onnx_path)
    ex = HostExecutor(path, options=HostOptions(threads=1, codegen="always"))
    feeds = {n: RNG.standard_normal([d.dim_value or 1 for d in t.shape.dim]).astype(np.float32)
             for n, t in ex.input_types.items()}
    got = ex.run(feeds)
    assert ex.compiled_plan(feeds) is not None
    interpreted = HostExecutor(path, options=HostOptions(threads=1, codegen="never")).run(feeds)
    for out, want in zip(ex.output_names, _ort(path, feeds), strict=True):
        _close(got[out], want, f"{name}:{out} vs onnxruntime")
        _close(got[out], interpreted[out], f"{name}:{out} vs the interpreter")


def test_auto_generates_code_on_the_third_run_with_the_same_shapes():
    from edgert.host import HostExecutor
    from edgert.host.executor import AUTO_COMPILE_RUN

    model = _small_cnn()
    ex = HostExecutor(model, threads=1)
    x = {"x": RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)}
    (want,) = _ort(model, x)
    for run in range(1, AUTO_COMPILE_RUN + 1):
        got = ex.run(x)["y"]
        assert (ex.compiled_plan(x) is not None) == (run == AUTO_COMPILE_RUN), f"run {run}"
        _close(got, want, f"run {run}")
    # Other shapes: their own count, their own plan; the first plan is kept.
    x2 = {"x": RNG.standard_normal((3, 2, 5, 6)).astype(np.float32)}
    assert ex.compiled_plan(x2) is None
    for _ in range(AUTO_COMPILE_RUN):
        got = ex.run(x2)["y"]
    _close(got, _ort(model, x2)[0], "batch 3")
    assert ex.compiled_plan(x2) is not None and ex.compiled_plan(x2) is not ex.compiled_plan(x)


def test_a_node_without_lowering_keeps_the_interpreter_in_auto_and_is_refused_in_always():
    from edgert.host import HostExecutor, HostOptions
    from edgert.host.executor import AUTO_COMPILE_RUN, UnsupportedHostOperatorError

    model = _model([helper.make_node("Floor", ["x"], ["f"]), helper.make_node("Relu", ["f"], ["y"])], [("x", [2, 3])], {})
    x = {"x": (RNG.standard_normal((2, 3)) * 4).astype(np.float32)}
    ex = HostExecutor(model)
    for _ in range(AUTO_COMPILE_RUN + 1):
        np.testing.assert_array_equal(ex.run(x)["y"], np.maximum(np.floor(x["x"]), 0))
    assert ex.compiled_plan(x) is None and "Floor" in ex.codegen_skipped
    with pytest.raises(UnsupportedHostOperatorError, match="codegen='auto'"):
        HostExecutor(model, options=HostOptions(codegen="always")).run(x)
    with pytest.raises(ValueError, match="codegen must be one of"):
        HostExecutor(model, options=HostOptions(codegen="fast"))


def test_generated_source_is_written_once_and_shared_by_hash(tmp_path, monkeypatch):
    from edgert.host import HostExecutor, HostOptions

    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))
    model = _small_cnn(batch=1, width=11)  # shapes no other test uses: a source this test writes itself
    x = {"x": RNG.standard_normal((1, 2, 5, 11)).astype(np.float32)}
    first = HostExecutor(model, options=HostOptions(codegen="always"))
    first.run(x)
    path = first.compiled_plan(x).path
    assert path.parent == tmp_path / "host-codegen" and path.is_file()
    numba_cache = Path(os.environ.get("NUMBA_CACHE_DIR") or path.parent / "__pycache__")  # numba's rule
    assert any(numba_cache.rglob(f"{path.stem}.*.nbi")), "numba's on-disk cache of the function"
    second = HostExecutor(model, options=HostOptions(codegen="always"))
    _close(second.run(x)["y"], first.run(x)["y"])
    assert second.compiled_plan(x).path == path
    assert [p.name for p in path.parent.glob("*.py")] == [path.name]


def test_a_cached_source_that_was_changed_is_written_again_not_imported(tmp_path, monkeypatch):
    import sys

    from edgert.host import HostExecutor, HostOptions

    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))
    model = _small_cnn(batch=1, width=13)  # shapes no other test uses
    x = {"x": RNG.standard_normal((1, 2, 5, 13)).astype(np.float32)}
    first = HostExecutor(model, options=HostOptions(codegen="always"))
    ref = first.run(x)["y"]
    path = first.compiled_plan(x).path
    good = path.read_text()
    path.write_text("raise RuntimeError('edited in the cache')\n")
    sys.modules.pop(path.stem, None)  # as a new process would see it
    second = HostExecutor(model, options=HostOptions(codegen="always"))
    _close(second.run(x)["y"], ref)
    assert path.read_text() == good


def test_a_function_numba_rejects_falls_back_to_the_interpreter_in_auto(monkeypatch, tmp_path):
    from numba.core.errors import NumbaError

    from edgert.host import HostExecutor, HostOptions
    from edgert.host.codegen import lower
    from edgert.host.executor import AUTO_COMPILE_RUN

    def broken(g, ctx, ins, outs):  # a kernel called with a wrong argument list: numba's typing fails
        g.define(outs[0], f"{g.kernel('unary')}({g.ref(ins[0])})", ins[0].shape)

    monkeypatch.setitem(lower.LOWERINGS, "Relu", broken)
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))  # the broken source stays out of the user's cache
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", [3, 7])], {})
    x = {"x": RNG.standard_normal((3, 7)).astype(np.float32)}
    ex = HostExecutor(model)
    with pytest.warns(RuntimeWarning, match="numba could not compile"):
        for _ in range(AUTO_COMPILE_RUN):
            np.testing.assert_array_equal(ex.run(x)["y"], np.maximum(x["x"], 0))
    assert ex.compiled_plan(x) is None and "numba could not compile" in ex.codegen_skipped
    with pytest.raises(NumbaError):
        HostExecutor(model, options=HostOptions(codegen="always")).run(x)
