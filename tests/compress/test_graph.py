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
