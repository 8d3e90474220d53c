import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edgert.cli import main
from edgert.compress import rounding
from edgert.compress.equalize import equalize
from edgert.compress.qdq import Layer, find_layers, name_nodes
from edgert.compress.quantize import QuantizeSpec, parse_spec, quantize
from edgert.errors import CompressError
from edgert.model import Model, load
from edgert.zoo import evaluate, get

ZOO = ("digits_cnn", "mobilenetv2_digits", "tcn_kws", "vit_digits")


def _model(proto) -> Model:
    from edgert.model import _spec

    proto = onnx.shape_inference.infer_shapes(proto)
    return Model("onnx", [_spec(i) for i in proto.graph.input], [_spec(o) for o in proto.graph.output], "test",
                 proto=proto)


def _ort(proto, feeds, optimized=False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def fragile_model(seed=0):
    """conv1 -> relu -> (x1000 on channel 0) -> conv2 -> relu -> pool -> fc: conv2's input has one huge channel.

    conv2 down-weights that channel, so the float network is well behaved, but a
    per-tensor int8 scale for conv2's input spends all its levels on channel 0
    and rounds the other seven channels to zero.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3
    gain = np.ones((1, 8, 1, 1), np.float32)
    gain[0, 0] = 1000.0
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    w2[:, 0] /= 1000.0
    fc = rng.standard_normal((10, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "w1"), (np.zeros(8, np.float32), "b1"), (gain, "gain"), (w2, "w2"),
              (rng.standard_normal(8).astype(np.float32) * 0.1, "b2"), (fc, "fc"), (np.zeros(10, np.float32), "fcb")]]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Mul", ["r1", "gain"], ["m"], name="gain"),
        helper.make_node("Conv", ["m", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "fragile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return _model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _calib(model, n=64, seed=1):
    x = np.random.default_rng(seed).standard_normal((n, *model.inputs[0].shape[1:])).astype(np.float32)
    return {model.inputs[0].name: x}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_keep_their_accuracy(name):
    zoo = get(name)
    q, report = quantize(load(zoo.onnx_path), QuantizeSpec(), name)
    result = evaluate(name, q)
    assert result.accuracy >= zoo.float_accuracy - 0.01, (result, report.table())
    assert result.agreement >= 0.98
    assert report.output_sqnr_db > 25.0 and not report.kept_float
    ops = [n.op_type for n in q.proto.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")


def test_qdq_conventions_and_onnxruntime_runs_it():
    model = load(get("digits_cnn").onnx_path)
    q, report = quantize(model, QuantizeSpec(samples=64), "digits_cnn")
    g = q.proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
    assert len(convs) == 4
    for node in convs:
        x_dq, w_dq, b_dq = (producers[i] for i in node.input)
        assert x_dq.op_type == w_dq.op_type == b_dq.op_type == "DequantizeLinear"
        x_scale, x_zp = inits[x_dq.input[1]], inits[x_dq.input[2]]
        assert x_scale.shape == () and x_zp.dtype == np.int8 and x_zp == 0  # per-tensor symmetric int8
        w, w_scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
        axis = helper.get_attribute_value(w_dq.attribute[0])
        assert w.dtype == np.int8 and np.abs(w).max() == 127 and w_scale.shape == (w.shape[axis],)
        assert axis == 0 and not np.any(inits[w_dq.input[2]])
        b, b_scale = inits[b_dq.input[0]], inits[b_dq.input[1]]
        assert b.dtype == np.int32 and inits[b_dq.input[2]].dtype == np.int32
        np.testing.assert_allclose(b_scale, x_scale * w_scale, rtol=1e-6)  # onnxruntime's bias convention
    assert not any(t.dtype == np.float32 and t.ndim >= 2 for t in inits.values()), "no float weights left"
    assert q.proto.ByteSize() < 0.45 * model.proto.ByteSize()  # int8 weights (names and scales take the rest)
    onnx.checker.check_model(q.proto)
    x = {"input": np.random.default_rng(0).random((1, 1, 8, 8), np.float32)}
    plain, fused = _ort(q.proto, x)[0], _ort(q.proto, x, optimized=True)[0]  # fused: onnxruntime's int8 kernels
    ref = _ort(model.proto, x)[0]
    assert np.argmax(plain) == np.argmax(ref) == np.argmax(fused)
    assert np.abs(plain - fused).max() < 0.05 * np.abs(ref).max()
    assert q.history[-1]["pass"] == "quantize" and q.history[-1]["params"]["method"] == "percentile"
    assert all(n.op_type != "QuantizeLinear" for n in model.proto.graph.node), "the input model is unchanged"
    assert report.layers == sorted(report.layers, key=lambda r: r.sqnr_db)


def test_report_finds_the_fragile_layer_and_auto_keeps_it_float():
    model = fragile_model()
    calib = _calib(model)
    q, report = quantize(model, QuantizeSpec(method="minmax"), calib)
    worst = report.layers[0]
    assert worst.name == "conv2" and worst.sqnr_db < 10 and worst.output_sqnr_db < 15
    assert all(r.sqnr_db > 25 for r in report.layers[1:]), report.table()
    assert report.output_sqnr_db < 15 and not report.kept_float

    q, report = quantize(model, QuantizeSpec(method="minmax", keep_float="auto"), calib)
    assert report.kept_float == ["conv2"] and report.output_sqnr_db >= 30.0
    assert next(r for r in report.layers if r.name == "conv2").float
    conv2 = next(n for n in q.proto.graph.node if n.name == "conv2")
    assert list(conv2.input) == ["m", "w2", "b2"], "conv2 stays float: float input and weights"
    x = {"input": calib["input"][:1]}
    out, ref = _ort(q.proto, x)[0], _ort(model.proto, x)[0]
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()

    _, named = quantize(model, QuantizeSpec(method="minmax", keep_float=("conv2",)), calib)
    assert named.kept_float == ["conv2"] and named.output_sqnr_db == pytest.approx(report.output_sqnr_db)
    with pytest.raises(CompressError, match="conv9.*conv1"):
        quantize(model, QuantizeSpec(keep_float=("conv9",)), calib)


def test_auto_keep_float_uses_accuracy_on_zoo_models():
    q, report = quantize(load(get("tcn_kws").onnx_path), QuantizeSpec(keep_float="auto", samples=64), "tcn_kws")
    assert report.calib_accuracy["int8"] >= report.calib_accuracy["float"] - 0.005
    assert len(report.kept_float) < len(report.layers)


def test_spec_parsing():
    assert parse_spec("int8") == QuantizeSpec()
    s = parse_spec("int8:entropy,adaround=1,samples=64", "auto")
    assert (s.method, s.adaround, s.samples, s.keep_float) == ("entropy", True, 64, "auto")
    assert parse_spec("int8:method=mse,bias_correction=0", "a, b").keep_float == ("a", "b")
    for bad, msg in [("int4", "only int8"), ("int8:kl", "unknown calibration method"), ("int8:foo=1", "unknown option"),
                     ("int8:samples=x", "not a number"), ("int8:equalize=maybe", "equalize")]:
        with pytest.raises(CompressError, match=msg):
            parse_spec(bad)


def _conv_layer(attrs, w_shape):
    return Layer("c", "Conv", ["x"], "y", "w", None, 0, attrs), w_shape


@pytest.mark.parametrize("attrs, x_shape, w_shape", [
    ({"pads": [1, 1, 1, 1]}, (1, 4, 7, 6), (5, 4, 3, 3)),
    ({"pads": [0, 1, 2, 1], "strides": [2, 2], "dilations": [1, 2]}, (1, 4, 9, 9), (6, 4, 3, 3)),
    ({"pads": [1, 1, 1, 1], "group": 4, "strides": [2, 2]}, (1, 4, 8, 8), (4, 1, 3, 3)),
    ({"pads": [2, 0], "dilations": [2]}, (1, 3, 10), (4, 3, 3)),
])
def test_columns_reproduce_the_convolution(attrs, x_shape, w_shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    layer, _ = _conv_layer(attrs, w_shape)
    cols = rounding.columns(layer, x, w_shape)
    g = cols.shape[0]
    w2 = rounding.weight_matrix(layer, w).reshape(g, -1, cols.shape[1])
    y = np.einsum("gok,gkp->gop", w2, cols).reshape(w_shape[0], -1)
    node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    ref = _ort(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x})[0]
    np.testing.assert_allclose(y, ref.reshape(w_shape[0], -1), atol=1e-4)


def test_bias_correction_removes_the_mean_output_shift():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)) * np.linspace(0.1, 3, 32)
    x = rng.standard_normal((32, 4000)) + 2.0  # non-zero mean input: rounding errors shift the output
    scales = np.abs(w).max(1) / 127
    wq = np.clip(np.round(w / scales[:, None]), -127, 127) * scales[:, None]
    stats = rounding.new_stats(1, 32, gram=False)
    rounding.update(stats, x[None], in_scale=np.abs(x).max() / 127)
    bias = rounding.corrected_bias(w, wq, np.zeros(16), stats)
    xq = np.clip(np.rint(x / (np.abs(x).max() / 127)), -128, 127) * (np.abs(x).max() / 127)
    before = np.abs((wq @ xq - w @ x).mean(axis=1))
    after = np.abs((wq @ xq + bias[:, None] - w @ x).mean(axis=1))
    assert after.max() < 1e-5 and before.max() > 1e-3


def test_adaround_lowers_the_layer_error():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 24))
    x = rng.standard_normal((24, 24)) @ rng.standard_normal((24, 2000)) * 0.3  # correlated inputs
    scales = np.abs(w).max(1) / 127 * 8  # a coarse grid, so rounding matters
    q, before, after = rounding.adaround(w, scales, (x @ x.T)[None], iters=400)
    assert q.dtype == np.int8 and after < 0.6 * before
    nearest = np.clip(np.round(w / scales[:, None]), -127, 127)
    assert np.abs(q - nearest).max() <= 1, "AdaRound only chooses between the two neighbours"
    direct = np.sum(((q * scales[:, None] - w) @ x) ** 2)
    assert direct == pytest.approx(after, rel=1e-6)


def test_adaround_in_the_pipeline():
    _, report = quantize(fragile_model(), QuantizeSpec(adaround=True, adaround_iters=200, keep_float=("conv2",)),
                         _calib(fragile_model()))
    assert set(report.adaround) == {"conv1", "conv2", "fc"}
    assert all(0 <= v < 1 for v in report.adaround.values()) and max(report.adaround.values()) > 0.05


def test_equalization_keeps_relu_networks_exact():
    proto = fragile_model().proto
    rng = np.random.default_rng(3)
    w1 = numpy_helper.to_array(proto.graph.initializer[0])
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1 * rng.uniform(0.05, 5, (8, 1, 1, 1)).astype(np.float32),
                                                                "w1"))
    proto.graph.node[2].op_type = "Identity"  # conv1 -> relu -> conv2 becomes an equalisable pair
    del proto.graph.node[2].input[1:]
    before = onnx.ModelProto()
    before.CopyFrom(proto)
    result = equalize(proto)
    assert (result.pairs, result.relu6_replaced) == (0, 0), "Identity between the pair: not a pair"
    nodes = proto.graph.node
    nodes[3].input[0] = "r1"
    del nodes[2]
    before.CopyFrom(proto)
    assert equalize(proto).pairs == 1
    x = {"input": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(_ort(proto, x)[0], _ort(before, x)[0], rtol=1e-4, atol=1e-4)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    r1 = np.abs(inits["w1"]).reshape(8, -1).max(1)
    r2 = np.abs(inits["w2"]).swapaxes(0, 1).reshape(8, -1).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-3)


def test_zoo_layers_found():
    proto = onnx.shape_inference.infer_shapes(load(get("mobilenetv2_digits").onnx_path).proto)
    name_nodes(proto)
    layers = find_layers(proto)
    ops = [lay.op for lay in layers]
    assert ops.count("Conv") == 17 and ops.count("Gemm") == 1 and ops.count("Add") == 3
    fused = [lay for lay in layers if lay.op == "Conv" and lay.output.endswith("Clip_output_0")]
    assert len(fused) == 12, "Conv + ReLU6 is one layer"


def test_cli(tmp_path):
    out, rep = tmp_path / "q.onnx", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["compress", str(get("tcn_kws").onnx_path), "-o", str(out), "--quantize",
                                  "int8:mse,samples=64", "--calib", "tcn_kws", "--report", str(rep)])
    assert r.exit_code == 0, r.output
    assert "output SQNR" in r.output and out.is_file()
    report = json.loads(rep.read_text())
    assert report["spec"]["method"] == "mse" and report["samples"] == 64 and len(report["layers"]) >= 5
    assert load(out).history[-1]["pass"] == "quantize"
    r = CliRunner().invoke(main, ["compress", str(get("tcn_kws").onnx_path), "-o", str(tmp_path / "x.onnx"),
                                  "--quantize", "int8", "--calib", str(tmp_path / "none.npz")])
    assert r.exit_code == 2 and "calibration file not found" in r.output and not (tmp_path / "x.onnx").exists()
    r = CliRunner().invoke(main, ["compress", str(get("tcn_kws").onnx_path), "-o", str(tmp_path / "x.onnx")])
    assert r.exit_code != 0 and "--quantize" in r.output
