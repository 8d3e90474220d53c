"""Every lowering against onnxruntime and the interpreter: two small graphs that use them all, and the ONNX
node conformance cases whose nodes all lower (one compiled case per operator: each compile costs ~1 s).

Tolerance: max |got - want| <= 1e-4 * max |want| + 1e-5 (models); the conformance cases' own rtol/atol.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


def _f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes, x_shape, inits, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _cnn():
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             n("Clip", ["c1", "lo", "hi"], ["c1c"]),
             n("BatchNormalization", ["c1c", "s", "bb", "m", "v"], ["bn"]),
             n("HardSwish", ["bn"], ["hs"]),
             n("MaxPool", ["hs"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
             n("Conv", ["mp", "w2"], ["dw"], pads=[1, 1, 1, 1], group=4),
             n("Relu", ["dw"], ["dwr"]),
             n("Concat", ["dwr", "mp"], ["cat"], axis=1),
             n("Pad", ["cat", "pads", "pv"], ["pd"]),
             n("HardSigmoid", ["pd"], ["hsg"], alpha=0.3, beta=0.4),
             n("GlobalAveragePool", ["hsg"], ["gap"]),
             n("Flatten", ["gap"], ["fl"]),
             n("Gemm", ["fl", "wg", "cg"], ["gm"], alpha=0.5, beta=2.0),
             n("Sigmoid", ["gm"], ["y"])]
    inits = {"w1": _f32(4, 3, 3, 3), "b1": _f32(4), "lo": np.float32(0), "hi": np.float32(6), "s": _f32(4), "bb": _f32(4),
             "m": _f32(4), "v": np.abs(_f32(4)) + 0.5, "w2": _f32(4, 1, 3, 3), "pads": np.array([0, 0, 1, 0, 0, 0, 0, 2]),
             "pv": np.float32(0.5), "wg": _f32(8, 5), "cg": _f32(5)}
    return _model(nodes, [1, 3, 9, 10], inits)


def _transformer():
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q"]), n("Add", ["q", "bq"], ["qb"]),
             n("Reshape", ["qb", "shape"], ["r"]), n("Transpose", ["r"], ["t"], perm=[2, 0, 1, 3]),
             n("Gather", ["t", "i0"], ["g0"], axis=0), n("Gather", ["t", "i2"], ["g2"], axis=0),
             n("Transpose", ["g2"], ["g2t"], perm=[0, 2, 1]), n("MatMul", ["g0", "g2t"], ["s"]),
             n("Div", ["s", "two"], ["sd"]), n("Softmax", ["sd"], ["sm"], axis=-1), n("MatMul", ["sm", "g0"], ["o"]),
             n("Sub", ["o", "x"], ["d"]), n("Mul", ["d", "col"], ["dm"]), n("Tanh", ["dm"], ["th"]),
             n("LayerNormalization", ["th", "ls", "lb"], ["ln"], epsilon=1e-3),
             n("ReduceMean", ["ln"], ["rm"], axes=[1], keepdims=1), n("Squeeze", ["rm", "ax1"], ["sq"]),
             n("Abs", ["sq"], ["ab"]), n("Sqrt", ["ab"], ["sr"]), n("Neg", ["sr"], ["ng"]), n("Exp", ["ng"], ["ex"]),
             n("Erf", ["ex"], ["y"])]
    inits = {"wq": _f32(8, 24), "bq": _f32(24), "shape": np.array([2, 6, 3, 8]), "i0": np.array(0), "i2": np.array(-1),
             "two": np.float32(2.0), "col": _f32(6, 1), "ls": _f32(8), "lb": _f32(8), "ax1": np.array([1])}
    return _model(nodes, [2, 6, 8], inits)


@pytest.mark.parametrize("build", [_cnn, _transformer])
def test_every_lowering_matches_onnxruntime_and_the_interpreter(build):
    import onnxruntime as ort

    from edgert.host import HostExecutor, HostOptions
    from edgert.host.codegen.lower import LOWERINGS

    model = build()
    x = {"x": _f32(*[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])}
    ex = HostExecutor(model, options=HostOptions(codegen="always"))
    got = ex.run(x)["y"]
    assert ex.compiled_plan(x) is not None
    assert {s.ctx.op_type for s in ex.steps} <= set(LOWERINGS)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    interpreted = HostExecutor(model, options=HostOptions(codegen="never")).run(x)["y"]
    for ref, what in ((want, "onnxruntime"), (interpreted, "interpreter")):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        err = np.abs(got - ref).max()
        assert err <= 1e-4 * np.abs(ref).max() + 1e-5, f"vs {what}: max|err| {err:.3g}"


def test_the_two_graphs_use_every_lowering():
    from edgert.host.codegen.lower import LOWERINGS

    used = {node.op_type for build in (_cnn, _transformer) for node in build().graph.node}
    # Identity/Dropout/Unsqueeze share Reshape's lowering (a reshape), and are covered by conformance cases below.
    assert set(LOWERINGS) - used <= {"Identity", "Dropout", "Unsqueeze"}


@pytest.mark.timeout(300)
def test_conformance_cases_that_lower_pass_as_generated_code():
    from onnx import TensorProto as TP
    from onnx.backend.test.case.node import collect_testcases

    from edgert.host import HostExecutor, HostOptions
    from edgert.host.codegen import plan
    from edgert.host.codegen.lower import LOWERINGS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None)
                 if c.model.graph.node and all(n.op_type in LOWERINGS and n.domain in ("", "ai.onnx") for n in c.model.graph.node)
                 and all(i.type.tensor_type.elem_type == TP.FLOAT for i in c.model.graph.input)]
    compiled: dict[str, str] = {}
    for case in cases:
        ops = {n.op_type for n in case.model.graph.node}
        if ops <= set(compiled):
            continue
        try:
            ex = HostExecutor(case.model, options=HostOptions(codegen="never"))
        except Exception:  # noqa: BLE001 - refused by the interpreter (tests/host/test_conformance.py checks that)
            continue
        inputs, expected = case.data_sets[0]
        feeds = dict(zip(ex.input_names, [np.asarray(v) for v in inputs], strict=True))
        try:
            plan.lower(ex, plan.trace(ex, feeds))
        except plan.NotLowerable:
            continue
        gen = HostExecutor(case.model, options=HostOptions(codegen="always"))
        got = gen.run(feeds)
        assert gen.compiled_plan(feeds) is not None, case.name
        for name, want in zip(gen.output_names, expected, strict=True):
            want = np.asarray(want)
            assert got[name].shape == want.shape and got[name].dtype == want.dtype, case.name
            np.testing.assert_allclose(got[name], want, rtol=case.rtol, atol=case.atol, err_msg=case.name)
        compiled.update({op: case.name for op in ops})
    # Operators whose lowerings no conformance case reaches (constant weights, fused forms) are the graphs' above.
    print(f"\ngenerated code passed conformance cases for {len(compiled)} operators: {', '.join(sorted(compiled))}")
    assert {"Add", "Relu", "Softmax", "Transpose", "MaxPool", "Erf", "MatMul", "Concat"} <= set(compiled), sorted(compiled)
