import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.compress import groups
from edgert.compress.qdq import name_nodes
from edgert.model import load


def _analyze(proto):
    name_nodes(proto)
    return groups.analyze(onnx.shape_inference.infer_shapes(proto))


def _by_producer(graph, producer):
    return next(g for g in graph.groups.values() if producer in g.producers)


def _hand_graph(middle_op: str = "Relu"):
    """x -> c1 -> BN -> act -> dw -> c2 (+ c1 residual) -> SE Mul -> c3 || c4 -> Concat -> c5 -> out."""
    rng = np.random.default_rng(0)
    inits = []

    def const(name, shape):
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("w1", (16, 3, 3, 3)), const("b1", (16,))], ["c1"], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("BatchNormalization", ["c1", const("s", (16,)), const("bb", (16,)), const("m", (16,)),
                                                 "var"], ["bn"], name="bn"),
        helper.make_node(middle_op, ["bn"] + (["shape"] if middle_op == "Reshape" else []), ["a"], name="act"),
        helper.make_node("Conv", ["a", const("wd", (16, 1, 3, 3))], ["dw"], pads=[1, 1, 1, 1], group=16, name="dw"),
        helper.make_node("Conv", ["dw", const("w2", (16, 16, 1, 1))], ["c2"], name="c2"),
        helper.make_node("Add", ["c2", "c1"], ["res"], name="res"),
        helper.make_node("GlobalAveragePool", ["res"], ["gap"], name="gap"),
        helper.make_node("Conv", ["gap", const("wse1", (4, 16, 1, 1))], ["se1"], name="se1"),
        helper.make_node("Conv", ["se1", const("wse2", (16, 4, 1, 1))], ["se2"], name="se2"),
        helper.make_node("Sigmoid", ["se2"], ["gate"], name="sig"),
        helper.make_node("Mul", ["res", "gate"], ["se"], name="se"),
        helper.make_node("Conv", ["se", const("w3", (8, 16, 1, 1))], ["c3"], name="c3"),
        helper.make_node("Conv", ["se", const("w4", (12, 16, 1, 1))], ["c4"], name="c4"),
        helper.make_node("Concat", ["c3", "c4"], ["cat"], axis=1, name="cat"),
        helper.make_node("Conv", ["cat", const("w5", (4, 20, 1, 1))], ["out"], name="c5"),
    ]
    inits.append(numpy_helper.from_array(np.ones(16, np.float32), "var"))
    inits.append(numpy_helper.from_array(np.array([1, 16, 8, 8], np.int64), "shape"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 8, 8))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_graph_groups_edits_and_macs():
    graph = _analyze(_hand_graph())
    res = _by_producer(graph, "c1")
    # The residual Add joins c1 and c2; the SE Mul joins the gate (se2) with them.
    assert sorted(res.producers) == ["c1", "c2", "se2"] and res.size == 16 and not res.unsafe
    assert not _by_producer(graph, "se1").unsafe and _by_producer(graph, "se1").size == 4
    assert _by_producer(graph, "c5").unsafe == "model output out"
    edited = {(e.init, e.axis) for e in graph.edits}
    # BN parameters, the depthwise weight, and the SE expansion follow the residual group.
    for init, axis in [("s", 0), ("bb", 0), ("m", 0), ("var", 0), ("wd", 0), ("w2", 1), ("wse2", 0), ("w3", 1)]:
        assert (init, axis) in edited
    # The concat consumer reads two segments: c3's 8 channels then c4's 12.
    c5 = next(c for c in graph.consumers if c.node == "c5")
    assert [n for _, n in c5.layout.segments] == [8, 12]
    assert graph.depthwise and graph.depthwise[0][0] == "dw"
    full = 16 * 27 * 64 + 16 * 9 * 64 + 16 * 16 * 64 + 4 * 16 + 16 * 4 + 8 * 16 * 64 + 12 * 16 * 64 + 4 * 20 * 64
    assert graph.macs() == full
    # Halving the residual group halves every layer it feeds or produces (the SE convs included).
    half = graph.macs({res.id: 8})
    # c2 reads and writes the group (a quarter left); the others lose half.
    saved = (16 * 27 * 64 + 16 * 9 * 64 + 4 * 16 + 16 * 4 + 8 * 16 * 64 + 12 * 16 * 64) / 2 + 16 * 16 * 64 * 0.75
    assert half == pytest.approx(full - saved)


def test_unknown_op_marks_group_unsafe_with_reason():
    graph = _analyze(_hand_graph("Reshape"))
    assert _by_producer(graph, "c1").unsafe == "Reshape act"
    assert not _by_producer(graph, "c3").unsafe  # groups elsewhere stay prunable


def test_indices_follow_concat_segments_and_flatten_spread():
    lay = groups.Layout(((0, 3), (1, 2)), inner=2)
    graph = groups.ChannelGraph({}, [], [], [], 0, [0, 1])
    idx = graph.indices(lay, {0: np.array([0, 2]), 1: np.array([1])})
    assert idx.tolist() == [0, 1, 4, 5, 8, 9]


@pytest.mark.parametrize("name, producers", [
    ("resnet_basic", ["/layer2/layer2.0/conv2/Conv", "/layer2/layer2.0/downsample/downsample.0/Conv"]),
    ("resnet_bottleneck", ["/layer1/layer1.0/conv3/Conv", "/layer1/layer1.0/downsample/downsample.0/Conv"]),
    ("mobilenet_v3", ["/features/features.4/block/block.0/block.0.0/Conv", "/features/features.4/block/block.2/fc2/Conv"]),
])
def test_torchvision_structures_couple_residuals_and_squeeze_excitation(data_dir, name, producers):
    from edgert.compress.prune import _unshare

    graph = _analyze(_unshare(load(data_dir / "tiny" / f"{name}.onnx").proto))
    group = _by_producer(graph, producers[0])
    assert sorted(group.producers) == sorted(producers) and not group.unsafe


def test_channel_shuffle_is_left_alone_with_reason(data_dir):
    from edgert.compress.graph import fold_static_shapes

    graph = _analyze(fold_static_shapes(load(data_dir / "tiny" / "shufflenet_v2.onnx").proto))
    alone = graph.left_alone()
    assert any(g.unsafe.startswith("Reshape") for g in alone)  # the shuffle's reshape
    assert len(graph.prunable()) >= 5  # the branches' inner channels and the stem/last convs


def test_tensor_read_inside_an_if_branch_is_left_alone():
    proto = _hand_graph()
    g = proto.graph
    branch = helper.make_graph([helper.make_node("Identity", ["c3"], ["b_out"])], "branch", [],
                               [helper.make_tensor_value_info("b_out", TensorProto.FLOAT, None)])
    g.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    g.node.append(helper.make_node("If", ["cond"], ["if_out"], then_branch=branch, else_branch=branch, name="if"))
    g.output.append(helper.make_tensor_value_info("if_out", TensorProto.FLOAT, None))
    graph = _analyze(proto)
    assert _by_producer(graph, "c3").unsafe == "used inside the subgraph of If if"
    assert not _by_producer(graph, "c4").unsafe


def test_transformer_mlp_hidden_features_are_a_group_on_the_last_axis():
    from edgert.zoo.registry import get

    graph = _analyze(load(get("vit_digits").onnx_path).proto)
    mlp = [g for g in graph.prunable() if any("mlp.0" in p for p in g.producers)]
    assert len(mlp) == 2 and all(g.size == 128 for g in mlp)
    edited = {(e.init, e.axis) for e in graph.edits if graph.find(e.layout.segments[0][0]) == mlp[0].id}
    # The first MatMul's output columns, its bias, and the second MatMul's input rows.
    assert sorted(axis for _, axis in edited) == [0, 0, 1]
    assert all(e.layout.last for e in graph.edits if graph.find(e.layout.segments[0][0]) == mlp[0].id)
    qkv = _by_producer(graph, "/blocks/blocks.0/attn/qkv/MatMul")
    assert qkv.unsafe.startswith("Reshape")  # the split into heads is not pruned
    assert _by_producer(graph, "/blocks/blocks.0/mlp/mlp.3/MatMul").unsafe.startswith("Add")  # residual stream
