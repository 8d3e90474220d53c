import numpy as np
import onnx

from edgert.compress.graph import fold_static_shapes
from edgert.model import load


def _ort(proto, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def test_shape_arithmetic_folded_outputs_unchanged(data_dir):
    model = load(data_dir / "shufflenet_mini.onnx")
    folded = fold_static_shapes(model.proto)
    before = [n.op_type for n in model.proto.graph.node]
    after = [n.op_type for n in folded.graph.node]
    assert before.count("Shape") == 5 and before.count("Gather") == 5
    assert "Shape" not in after and "Gather" not in after and "Cast" not in after
    # The compute nodes all stay; both Reshapes now take constant shapes.
    assert after.count("Conv") == before.count("Conv") and after.count("Reshape") == 2
    inits = {t.name for t in folded.graph.initializer}
    assert all(n.input[1] in inits for n in folded.graph.node if n.op_type in ("Reshape", "Slice"))
    onnx.checker.check_model(folded)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(_ort(folded, x), _ort(model.proto, x))
    assert model.proto.graph.node[1].op_type == before[1], "the input model is not modified"


def test_weights_are_not_duplicated(data_dir):
    model = load(data_dir / "mobilenetv2_mini.onnx")
    folded = fold_static_shapes(model.proto)
    assert len(folded.graph.node) == len(model.proto.graph.node)
    assert folded.ByteSize() <= model.proto.ByteSize()


def test_folds_at_the_models_own_opset():
    # Opset 11: Unsqueeze takes `axes` as an attribute (an input from opset 13 on).
    from onnx import TensorProto, helper, numpy_helper

    idx = numpy_helper.from_array(np.array(1, np.int64), "idx")
    nodes = [
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["c"], ["c1"], axes=[0]),
        helper.make_node("Concat", ["minus1", "c1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["input", "shape"], ["output"]),
    ]
    minus1 = numpy_helper.from_array(np.array([-1], np.int64), "minus1")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 3, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], [idx, minus1])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=6)
    folded = fold_static_shapes(proto)
    assert [n.op_type for n in folded.graph.node] == ["Reshape"]
    shape = next(t for t in folded.graph.initializer if t.name == "shape")
    assert numpy_helper.to_array(shape).tolist() == [-1, 3]
