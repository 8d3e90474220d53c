"""The executor: loading, unsupported-op report, order, buffer lifetime, constant folding, fusion, threads, sparse choice."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def _conv_model(weight: np.ndarray, act: str | None = "Relu", shuffle: bool = False):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv")]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="act"))
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="act"))
    nodes.append(helper.make_node("Flatten", ["y" if act else "c"], ["z"], name="flat"))
    if shuffle:
        nodes.reverse()
    cout, cin = weight.shape[:2]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.linspace(-1, 1, cout, dtype=np.float32), "b"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"), numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 6, 6])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_unsupported_ops_are_listed_before_running(data_dir):
    from edgert.errors import EdgertError
    from edgert.host import HostExecutor
    from edgert.host.executor import UnsupportedHostOperatorError

    with pytest.raises(UnsupportedHostOperatorError) as err:
        HostExecutor(data_dir / "unsupported_ops.onnx")
    msg = str(err.value)
    assert isinstance(err.value, EdgertError)
    assert "Celu (nodes:" in msg and "LpNormalization (nodes:" in msg
    assert "Conv, " in msg and "Relu" in msg  # the supported list
    assert "edgert compile" in msg  # the fix


def test_model_path_proto_and_edgert_model_give_the_same_outputs(data_dir):
    import onnx

    import edgert.model
    from edgert.host import HostExecutor

    path = data_dir / "convnet_extdata.onnx"  # weights in an external data file
    x = {"input": RNG.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    from_path = HostExecutor(path).run(x)
    from_proto = HostExecutor(onnx.load(str(path))).run(x)
    model = edgert.model.Model("onnx", [], [], "m", proto=onnx.load(str(path)))
    from_model = HostExecutor(model).run(x)
    (ref,) = _ort(onnx.load(str(path)), x)
    for out in (from_path, from_proto, from_model):
        np.testing.assert_allclose(out["output"], ref, rtol=1e-4, atol=1e-5)


def test_input_errors(data_dir):
    from edgert.errors import InputError
    from edgert.host import HostExecutor

    ex = HostExecutor(data_dir / "convnet_tiny.onnx")
    with pytest.raises(InputError, match="missing input"):
        ex.run({})
    with pytest.raises(InputError, match="unknown input"):
        ex.run({"input": np.zeros((1, 3, 32, 32), np.float32), "other": np.zeros(1)})


def test_nodes_run_in_topological_order_and_buffers_are_freed():
    from edgert.host import HostExecutor

    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = {"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    ex = HostExecutor(_conv_model(w, act=None, shuffle=True))  # nodes stored in reverse order
    assert [s.ctx.op_type for s in ex.steps] == ["Conv", "Flatten"]
    assert ex.steps[1].free == ["c"]  # the Conv output is dropped after Flatten read it
    np.testing.assert_allclose(ex.run(x)["z"], _ort(_conv_model(w, act=None), x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["Relu", "Clip"])
def test_activation_is_fused_into_the_conv(act):
    from edgert.host import HostExecutor

    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32) * 3
    model = _conv_model(w, act=act)
    ex = HostExecutor(model)
    assert [s.ctx.op_type for s in ex.steps] == ["Conv", "Flatten"]
    assert ex.steps[0].ctx.cache["clip"] == ((0.0, np.inf) if act == "Relu" else (0.0, 6.0))
    x = {"x": RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)}
    np.testing.assert_allclose(ex.run(x)["z"], _ort(model, x)[0], rtol=1e-5, atol=1e-5)


def test_constant_subgraphs_are_folded_at_load():
    from edgert.host import HostExecutor

    # Reshape's target shape comes from Shape -> Gather on an initializer: known at load.
    nodes = [helper.make_node("Shape", ["c"], ["s"]), helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
             helper.make_node("Concat", ["one", "n"], ["shape"], axis=0), helper.make_node("Reshape", ["x", "shape"], ["y"])]
    inits = [numpy_helper.from_array(np.zeros((2, 6), np.float32), "c"), numpy_helper.from_array(np.array([1], np.int64), "i"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    ex = HostExecutor(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [s.ctx.op_type for s in ex.steps] == ["Reshape"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(ex.run({"x": x})["y"], x.reshape(1, 6))


def test_threads_split_kernels_without_changing_results(data_dir):
    import os

    from edgert.host import HostExecutor

    x = {"input": RNG.standard_normal((1, 3, 64, 64)).astype(np.float32)}
    one = HostExecutor(data_dir / "mobilenetv2_mini.onnx", threads=1)
    three = HostExecutor(data_dir / "mobilenetv2_mini.onnx", threads=3)
    assert one.threads == 1 and three.threads == 3 and {s.ctx.threads for s in three.steps} == {3}
    assert HostExecutor(data_dir / "convnet_tiny.onnx").threads == len(os.sched_getaffinity(0))
    np.testing.assert_allclose(three.run(x)["output"], one.run(x)["output"], rtol=1e-5, atol=1e-6)


def test_run_chunks_covers_every_item_once_on_several_threads():
    from edgert.host import parallel

    seen = np.zeros(1000, np.int64)

    def mark(a, b):
        seen[a:b] += 1

    parallel.run_chunks(mark, 1000, threads=4, work=parallel.MIN_PARALLEL_WORK)
    assert (seen == 1).all()


@pytest.mark.parametrize("op", ["Conv", "Gemm", "MatMul"])
def test_sparse_weights_run_as_csr_with_the_same_result(op):
    from edgert.host import HostExecutor, HostOptions

    if op == "Conv":
        w = RNG.standard_normal((16, 8, 1, 1)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w"], ["y"])
        shape = [1, 8, 5, 5]
    elif op == "Gemm":
        w = RNG.standard_normal((16, 8)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)
        shape = [3, 8]
    else:
        w = RNG.standard_normal((8, 16)).astype(np.float32)
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        shape = [2, 3, 8]
    w[RNG.random(w.shape) < 0.9] = 0
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": RNG.standard_normal(shape).astype(np.float32)}
    sparse = HostExecutor(model, options=HostOptions(sparse_threshold=0.8))  # forced: also for the small products here
    dense = HostExecutor(model, options=HostOptions(sparse_threshold=2.0))
    assert sparse.steps[0].ctx.cache["csr"] is not None and dense.steps[0].ctx.cache.get("csr") is None
    np.testing.assert_allclose(sparse.run(x)["y"], _ort(model, x)[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dense.run(x)["y"], _ort(model, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sparsity,wide,csr", [(0.75, True, True), (0.75, False, False), (0.9, False, True), (0.5, True, False)])
def test_default_sparse_choice_follows_the_measured_crossovers(sparsity, wide, csr, monkeypatch):
    """Defaults: CSR from sparse.SPARSE_THRESHOLD zeros; matrix-vector products only from MATVEC_SPARSE_THRESHOLD."""
    from edgert.host import HostExecutor, sparse

    assert sparse.SPARSE_THRESHOLD <= 0.75 < sparse.MATVEC_SPARSE_THRESHOLD <= 0.9  # the cases straddle both

    calls = []
    real = sparse._csr_matvec if not wide else sparse._csr_matmul
    monkeypatch.setattr(sparse, "_csr_matvec" if not wide else "_csr_matmul", lambda *a: (calls.append(1), real(*a)))
    w = RNG.standard_normal((64, 128)).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
    rows = 8 if wide else 1
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "w")])
    x = RNG.standard_normal((rows, 128)).astype(np.float32)
    y = HostExecutor(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run({"x": x})["y"]
    assert bool(calls) == csr
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)


def test_pruned_batch1_gemm_takes_the_vectorised_matvec_by_default(monkeypatch):
    """A batch-1 Gemm whose weight has MATVEC_SPARSE_THRESHOLD zeros runs _csr_matvec (uint16 indices)
    without options, and matches onnxruntime within 1e-5 relative to the output's largest magnitude."""
    from edgert.host import HostExecutor, sparse

    calls = []
    real = sparse._csr_matvec
    monkeypatch.setattr(sparse, "_csr_matvec", lambda *a: (calls.append(1), real(*a)))
    w = RNG.standard_normal((96, 200)).astype(np.float32)  # 200 columns: 12 steps of 16 and a remainder
    w[np.abs(w) < np.quantile(np.abs(w), 0.85)] = 0
    assert sparse.sparsity(w) >= sparse.MATVEC_SPARSE_THRESHOLD
    b = RNG.standard_normal(96).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 200])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": RNG.standard_normal((1, 200)).astype(np.float32)}
    y = HostExecutor(model).run(x)["y"]
    assert calls
    want = _ort(model, x)[0]
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
