"""Sparse kernels: the pass picks the right layers and the kernels match onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from edgert.compiler.sparse import SparseError, sparsify
from edgert.compiler.targets import load_target


def _prune(w: np.ndarray, sparsity: float, rng) -> np.ndarray:
    w = w.copy()
    w[rng.random(w.shape) < sparsity] = 0.0
    return w


def _model(nodes, x_shape, y_shape, inits):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run_both(model, x, min_sparsity=0.0):
    """(sparse-compiled output, onnxruntime output, report, compiled module)."""
    import onnxruntime as ort
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    tgt = load_target("host")
    mod, report = sparsify(from_onnx(model, keep_params_in_input=False), tgt, min_sparsity=min_sparsity)
    vm = relax.VirtualMachine(tvm.compile(mod, target=tgt.tvm_target()), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return got, ref, report, mod


def _conv_model(n, ci, co, hw, k, stride, pads, dil, sparsity, bias, relu, rng, zero_row=False):
    from onnx import helper

    w = _prune(rng.standard_normal((co, ci, *k)).astype("float32"), sparsity, rng)
    if zero_row:
        w[co // 2] = 0.0
    inits = {"w": w}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(co).astype("float32")
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c" if relu else "y"], strides=list(stride), pads=list(pads), dilations=list(dil))]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    h, w_ = hw
    oh = (h + pads[0] + pads[2] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    ow = (w_ + pads[1] + pads[3] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    return _model(nodes, (n, ci, h, w_), (n, co, oh, ow), inits)


CONV_CASES = [
    # n, ci, co, (h, w), kernel, stride, pads (t, l, b, r), dilation, sparsity, bias, relu
    pytest.param(1, 3, 5, (9, 7), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 0.5, True, False, id="1x1-s1-odd"),
    pytest.param(1, 8, 6, (7, 9), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 0.9, False, True, id="1x1-s2-nopad"),
    pytest.param(1, 4, 6, (11, 13), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0.9, True, True, id="3x3-s1-p1"),
    pytest.param(2, 5, 7, (10, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0.99, True, True, id="3x3-s2-batch2"),
    pytest.param(1, 6, 4, (12, 12), (3, 3), (1, 1), (0, 1, 2, 1), (2, 2), 0.9, True, False, id="3x3-dil2-asympad"),
    pytest.param(1, 4, 3, (6, 17), (5, 3), (1, 2), (2, 1, 2, 1), (1, 1), 0.5, False, False, id="5x3-s1x2"),
    pytest.param(1, 16, 9, (23, 37), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0.0, True, True, id="3x3-s2-dense-weight"),
]


@pytest.mark.parametrize("n,ci,co,hw,k,stride,pads,dil,sparsity,bias,relu", CONV_CASES)
def test_sparse_conv_matches_onnxruntime(n, ci, co, hw, k, stride, pads, dil, sparsity, bias, relu):
    rng = np.random.default_rng(7)
    model = _conv_model(n, ci, co, hw, k, stride, pads, dil, sparsity, bias, relu, rng, zero_row=True)
    x = rng.standard_normal((n, ci, *hw)).astype("float32")
    got, ref, report, mod = _run_both(model, x)
    assert report.sparse_count == 1 and report.layers[0].format == "csr"
    assert report.layers[0].fused == (("bias",) if bias else ()) + (("relu",) if relu else ())
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    # The conv is gone from the graph and the kernel keeps its own schedule.
    text = mod["main"].script(show_meta=False)
    assert "R.nn.conv2d" not in text and "R.call_tir" in text
    kernels = [f for gv, f in mod.functions_items() if gv.name_hint.startswith("sparse_conv2d")]
    assert len(kernels) == 1 and bool(kernels[0].attrs["tirx.is_scheduled"])


@pytest.mark.parametrize("batch_shape", [(1,), (3,), (2, 3)], ids=["batch1", "batch3", "rank3"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.99])
def test_sparse_gemm_and_matmul_match_onnxruntime(batch_shape, sparsity):
    """Gemm (transB, bias) + Relu then a plain MatMul, each with a pruned constant weight."""
    from onnx import helper

    rng = np.random.default_rng(3)
    k, hidden, out = 37, 24, 11
    g = _prune(rng.standard_normal((hidden, k)).astype("float32"), sparsity, rng)
    g[5] = 0.0  # a fully zero row
    inits = {
        "g": g,
        "gb": rng.standard_normal(hidden).astype("float32"),
        "m": _prune(rng.standard_normal((hidden, out)).astype("float32"), sparsity, rng),
    }
    if len(batch_shape) == 1:
        nodes = [helper.make_node("Gemm", ["x", "g", "gb"], ["h"], transB=1)]
    else:  # Gemm is 2-D only: the rank-3 case uses MatMul + Add
        inits["gt"] = np.ascontiguousarray(g.T)
        nodes = [helper.make_node("MatMul", ["x", "gt"], ["hm"]), helper.make_node("Add", ["hm", "gb"], ["h"])]
    nodes += [helper.make_node("Relu", ["h"], ["r"]), helper.make_node("MatMul", ["r", "m"], ["y"])]
    model = _model(nodes, (*batch_shape, k), (*batch_shape, out), inits)
    x = rng.standard_normal((*batch_shape, k)).astype("float32")
    got, ref, report, _ = _run_both(model, x)
    assert [layer.op for layer in report.layers if layer.chosen] == ["matmul", "matmul"]
    assert report.layers[0].fused == ("bias", "relu")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_cost_model_leaves_dense_and_unsupported_layers_alone():
    from onnx import helper
    from tvm.relax.frontend.onnx import from_onnx

    rng = np.random.default_rng(1)
    inits = {
        "w_dense": rng.standard_normal((32, 32, 3, 3)).astype("float32"),
        "w_sparse": _prune(rng.standard_normal((32, 32, 3, 3)).astype("float32"), 0.95, rng),
        "w_dw": _prune(rng.standard_normal((32, 1, 3, 3)).astype("float32"), 0.95, rng),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w_dense"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w_sparse"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w_dw"], ["y"], pads=[1, 1, 1, 1], group=32),
    ]
    model = _model(nodes, (1, 32, 16, 16), (1, 32, 16, 16), inits)
    mod, report = sparsify(from_onnx(model, keep_params_in_input=False), load_target("host"))
    dense, sparse, depthwise = report.layers
    assert (dense.chosen, sparse.chosen, depthwise.chosen) == (False, True, False)
    assert dense.format == "dense" and dense.sparsity < 0.01 and "estimated" in dense.reason
    assert sparse.format == "csr" and sparse.sparsity > 0.9
    assert "groups=32" in depthwise.reason
    assert (report.sparse_count, report.dense_count) == (1, 2)
    assert report.to_json()["layers"][1]["chosen"] is True
    assert mod["main"].script(show_meta=False).count("R.nn.conv2d") == 2
    # min_sparsity overrides the cost model both ways
    _, forced = sparsify(from_onnx(model, keep_params_in_input=False), load_target("host"), min_sparsity=0.99)
    assert forced.sparse_count == 0 and "min_sparsity" in forced.layers[1].reason
    with pytest.raises(SparseError, match="between 0 and 1"):
        sparsify(mod, load_target("host"), min_sparsity=90)


@pytest.mark.qemu
def test_sparse_bundle_runs_on_aarch64_under_qemu(qemu, tmp_path):
    """A 90%-sparse conv stack cross-compiled for aarch64 (NEON) matches onnxruntime under qemu."""
    from onnx import helper

    import edgert
    from edgert.device.local import QemuDevice
    from edgert.runtime.session import compare, run_on_device

    rng = np.random.default_rng(5)
    inits = {
        "w1": _prune(rng.standard_normal((16, 3, 3, 3)).astype("float32"), 0.5, rng),
        "b1": rng.standard_normal(16).astype("float32"),
        "w2": _prune(rng.standard_normal((24, 16, 3, 3)).astype("float32"), 0.9, rng),
        "g": _prune(rng.standard_normal((10, 24 * 6 * 6)).astype("float32"), 0.9, rng),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Flatten", ["c2"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
    ]
    path = tmp_path / "sparse.onnx"
    path.write_bytes(_model(nodes, (1, 3, 12, 12), (1, 10), inits).SerializeToString())

    from edgert.compiler.build import CompileOptions

    bundle = edgert.compile(
        path, target="generic-aarch64", output=tmp_path / "sparse.edgert", options=CompileOptions(sparse="0.5"), log=lambda _: None
    )
    assert bundle.manifest["build"]["schedules"]["sparse"]["sparse"] == 3
    result = run_on_device(bundle, QemuDevice())
    golden = {s.name: np.load(bundle.path / rel) for s, rel in zip(bundle.outputs, bundle.manifest["golden"]["outputs"], strict=True)}
    agreements = compare(result.outputs, golden, rtol=1e-4)
    assert agreements and all(a.ok for a in agreements), agreements
