"""ONNX graph utilities shared by the passes and the compiler."""
from __future__ import annotations

import numpy as np

# Constant subgraphs larger than this stay as computed at run time (weights are not duplicated).
_MAX_FOLD_ELEMS = 1 << 16
_NEVER_FOLD = ("Identity", "If", "Loop", "Scan")


def fold_static_shapes(proto, max_elems: int = _MAX_FOLD_ELEMS):
    """Return a copy of ``proto`` with shape arithmetic on static shapes folded into initializers.

    ``Shape(x)`` for statically shaped ``x`` becomes a constant, then every node
    whose inputs are all small constants is evaluated (ONNX reference
    evaluator), repeated until nothing changes. Call it after the inputs are
    pinned. TVM 0.27's ONNX frontend needs this for exporter-generated shape
    code such as torchvision's channel shuffle (Gather on a runtime Shape fails
    with "shape_of expects a tensor input").
    """
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    while True:
        before = len(model.graph.node)
        model = _fold_once(model, max_elems)
        if len(model.graph.node) == before:
            return model


def _fold_once(model, max_elems: int):
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(model, data_prop=True)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    g = model.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = [d.dim_value for d in tt.shape.dim]
    consts: dict[str, np.ndarray] = {}
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        if int(np.prod(init.dims)) <= max_elems:
            consts[init.name] = numpy_helper.to_array(init)
    graph_outputs = {o.name for o in g.output}
    keep, folded = [], []
    for node in g.node:
        out = None
        if graph_outputs.intersection(node.output):
            pass  # graph outputs stay computed
        elif node.op_type == "Shape" and node.domain in ("", "ai.onnx") and node.input[0] in shapes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out = [np.array(shapes[node.input[0]], np.int64)[attrs.get("start", 0) : attrs.get("end")]]
        elif (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NEVER_FOLD
            and not node.op_type.startswith("Random")
            and all(i == "" or i in consts for i in node.input)
        ):
            try:
                out = _evaluate(node, opset, {i: consts[i] for i in node.input if i})
            except Exception:  # noqa: BLE001 - a node the evaluator cannot run is simply left in place
                out = None
            if out is not None and any(np.asarray(o).size > max_elems for o in out):
                out = None
        if out is None:
            keep.append(node)
            continue
        for name, value in zip(node.output, out, strict=True):
            value = np.asarray(value)
            consts[name] = value
            shapes[name] = list(value.shape)
            folded.append(numpy_helper.from_array(value, name))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(folded)
    used = {i for n in g.node for i in n.input} | graph_outputs
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    return model


def _evaluate(node, opset: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one node at the model's opset (a bare NodeProto would run at the newest opset)."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        [node], "fold",
        [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for name, v in feeds.items()],
        [helper.make_empty_tensor_value_info(name) for name in node.output if name],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ReferenceEvaluator(model).run(None, feeds)


def count_params(proto) -> int:
    """Elements in the float initializers (the weights)."""
    return int(sum(int(np.prod(t.dims)) for t in proto.graph.initializer if t.data_type in (1, 10, 11, 16)))


def count_macs(proto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes (shapes from shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    total = 0
    for node in g.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            total += int(np.prod(out)) * int(np.prod(shapes[node.input[1]][1:]))
        elif node.op_type == "ConvTranspose" and node.input[0] in shapes and node.input[1] in shapes:
            w = shapes[node.input[1]]
            total += int(np.prod(shapes[node.input[0]])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[0] in shapes:
            a = shapes[node.input[0]]
            transa = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[-2] if transa and len(a) == 2 else a[-1]
            total += int(np.prod(out)) * k
    return total
