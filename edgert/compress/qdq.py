"""Find the quantisable layers of a float ONNX graph and rewrite it to standard QDQ form.

Conventions (what the integer compile path and onnxruntime consume):

- activations: per-tensor int8, symmetric, zero point 0 (an int8 scalar);
  ``QuantizeLinear -> DequantizeLinear`` on every activation input of a
  quantised node (Conv, Gemm, MatMul, residual Add, pooling, Flatten/Reshape);
- weights: int8 initializers in [-127, 127], symmetric per output channel
  (``DequantizeLinear`` with ``axis`` = the output-channel axis: 0 for Conv and
  Gemm with transB=1, 1 for MatMul and Gemm with transB=0), int8 zero points;
- bias: int32 initializers with scale ``s_in * s_w[c]`` and int32 zero point 0,
  ``DequantizeLinear`` axis 0 (onnxruntime's convention);
- the float activation a Conv/Gemm is fused with (Relu, Clip) stays between
  the op and the next QuantizeLinear.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgert.errors import CompressError

WEIGHTED = ("Conv", "Gemm", "MatMul")
# Nodes whose activation inputs are quantised even without weights: the integer
# path can run them on int8 (a requantising add, pooling, pure data movement).
INT8_INPUT_OPS = ("Add", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape")
FUSED_ACTIVATIONS = ("Relu", "Clip")
QMAX = 127
MIN_OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13


@dataclass
class Layer:
    """One quantisable node (with the activation fused after it)."""

    name: str  # the node's name (unique in the graph)
    op: str
    inputs: list[str]  # float activation inputs that get QuantizeLinear/DequantizeLinear
    output: str  # the layer's output (after the fused activation)
    weight: str | None = None
    bias: str | None = None
    w_axis: int = 0  # output-channel axis of the weight initializer
    attrs: dict = field(default_factory=dict)


def name_nodes(proto) -> None:
    """Give every node a unique name (reports and keep-float lists refer to layers by node name)."""
    seen: set[str] = set()
    for i, node in enumerate(proto.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def ensure_opset(proto):
    """The model at opset >= 13 (per-channel DequantizeLinear); converts older models."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= MIN_OPSET:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises assorted errors
        raise CompressError(
            f"quantising needs ONNX opset >= {MIN_OPSET} and converting from opset {opset} failed ({exc}); "
            f"re-export the model with opset {MIN_OPSET} or newer"
        ) from None


def find_layers(proto) -> list[Layer]:
    """The quantisable nodes of ``proto`` in graph order (nodes must be named, see ``name_nodes``)."""
    from onnx import helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    float_types = _float_tensors(proto)
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in g.output}

    def is_act(t: str) -> bool:
        return bool(t) and t not in inits and t in float_types

    layers = []
    for node in g.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        layer = None
        if node.op_type == "Conv" and node.input[1] in inits and is_act(node.input[0]):
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
            layer = Layer(node.name, "Conv", [node.input[0]], node.output[0], node.input[1], bias, 0, attrs)
        elif node.op_type == "Gemm" and node.input[1] in inits and is_act(node.input[0]):
            if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                continue  # rare exporter forms: stay float
            bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
            if bias is not None and len(inits[bias].dims) != 1:
                bias = None
            axis = 0 if attrs.get("transB", 0) else 1
            layer = Layer(node.name, "Gemm", [node.input[0]], node.output[0], node.input[1], bias, axis, attrs)
        elif node.op_type == "MatMul":
            if node.input[1] in inits and len(inits[node.input[1]].dims) == 2 and is_act(node.input[0]):
                layer = Layer(node.name, "MatMul", [node.input[0]], node.output[0], node.input[1], None, 1, attrs)
            elif is_act(node.input[0]) and is_act(node.input[1]):
                layer = Layer(node.name, "MatMul", [node.input[0], node.input[1]], node.output[0], attrs=attrs)
        elif node.op_type in INT8_INPUT_OPS:
            acts = [i for i in node.input[:1] if is_act(i)]
            if node.op_type == "Add":
                acts = [i for i in node.input if is_act(i)]
                if len(acts) != 2:
                    continue  # an Add of a constant (a MatMul's bias) stays float
            if acts:
                layer = Layer(node.name, node.op_type, acts, node.output[0], attrs=attrs)
        if layer is None:
            continue
        if layer.weight is not None:
            nxt = consumers.get(layer.output, [])
            if len(nxt) == 1 and nxt[0].op_type in FUSED_ACTIVATIONS and layer.output not in outputs:
                layer.output = nxt[0].output[0]
        layers.append(layer)
    return layers


def _float_tensors(proto) -> set[str]:
    from onnx import TensorProto

    g = proto.graph
    infos = [*g.input, *g.value_info, *g.output]
    return {vi.name for vi in infos if vi.type.tensor_type.elem_type == TensorProto.FLOAT}


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel scales along ``axis`` (an all-zero channel gets scale 1)."""
    red = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=red) if red else np.abs(w)
    return np.where(amax > 0, amax / QMAX, 1.0).astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scales.reshape(shape)), -QMAX, QMAX).astype(np.int8)


def fake_quant(x: np.ndarray, scale: float) -> np.ndarray:
    """What QuantizeLinear -> DequantizeLinear (int8, zero point 0) does to ``x`` (round half to even, as ONNX)."""
    return (np.clip(np.rint(x / scale), -128, 127) * scale).astype(np.float32)


@dataclass
class QuantizedWeight:
    q: np.ndarray  # int8
    scales: np.ndarray  # float32 per output channel
    bias: np.ndarray | None = None  # float bias to quantise (possibly corrected)


def emit(proto, layers: list[Layer], act_scales: dict[str, float], weights: dict[str, QuantizedWeight]):
    """A QDQ copy of ``proto``: ``layers`` quantised with ``act_scales`` (tensor -> scale) and ``weights``."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    nodes_by_name = {n.name: n for n in g.node}
    new_inits = []
    qdq_nodes: dict[str, list] = {}  # tensor -> its Q/DQ nodes, inserted right after its producer
    dq_name: dict[str, str] = {}

    def act_dq(t: str) -> str:
        if t not in dq_name:
            s = np.float32(act_scales[t])
            new_inits.append(numpy_helper.from_array(np.array(s, np.float32), f"{t}_scale"))
            new_inits.append(numpy_helper.from_array(np.array(0, np.int8), f"{t}_zero_point"))
            qdq_nodes[t] = [
                helper.make_node("QuantizeLinear", [t, f"{t}_scale", f"{t}_zero_point"], [f"{t}_quantized"],
                                 name=f"{t}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{t}_quantized", f"{t}_scale", f"{t}_zero_point"],
                                 [f"{t}_dequantized"], name=f"{t}_DequantizeLinear"),
            ]
            dq_name[t] = f"{t}_dequantized"
        return dq_name[t]

    weight_dq: list = []
    for layer in layers:
        node = nodes_by_name[layer.name]
        for idx, t in enumerate(node.input):
            if t in layer.inputs:
                node.input[idx] = act_dq(t)
        if layer.weight is None:
            continue
        qw = weights[layer.name]
        base = f"{layer.name}_{layer.weight}"
        c = len(qw.scales)
        new_inits += [
            numpy_helper.from_array(qw.q, f"{base}_quantized"),
            numpy_helper.from_array(qw.scales, f"{base}_scale"),
            numpy_helper.from_array(np.zeros(c, np.int8), f"{base}_zero_point"),
        ]
        weight_dq.append(helper.make_node(
            "DequantizeLinear", [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"], [f"{base}_dequantized"],
            name=f"{base}_DequantizeLinear", axis=layer.w_axis))
        node.input[1] = f"{base}_dequantized"
        if qw.bias is not None:  # Conv/Gemm: int32 bias (added when bias correction made one)
            bscale = (np.float32(act_scales[layer.inputs[0]]) * qw.scales).astype(np.float32)
            bq = np.clip(np.round(qw.bias / bscale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
            bbase = f"{layer.name}_{layer.bias or 'bias'}"
            new_inits += [
                numpy_helper.from_array(bq, f"{bbase}_quantized"),
                numpy_helper.from_array(bscale, f"{bbase}_scale"),
                numpy_helper.from_array(np.zeros(c, np.int32), f"{bbase}_zero_point"),
            ]
            weight_dq.append(helper.make_node(
                "DequantizeLinear", [f"{bbase}_quantized", f"{bbase}_scale", f"{bbase}_zero_point"],
                [f"{bbase}_dequantized"], name=f"{bbase}_DequantizeLinear", axis=0))
            if len(node.input) > 2:
                node.input[2] = f"{bbase}_dequantized"
            else:
                node.input.append(f"{bbase}_dequantized")

    # Rebuild the node list in topological order: weight DQs first, each activation's Q/DQ after its producer.
    order = list(weight_dq)
    graph_inputs = [i.name for i in g.input]
    for t in graph_inputs:
        order += qdq_nodes.pop(t, [])
    for node in g.node:
        order.append(node)
        for out in node.output:
            order += qdq_nodes.pop(out, [])
    if qdq_nodes:
        raise CompressError(f"cannot place quantisation of {', '.join(qdq_nodes)}; report this model to edgert")
    del g.node[:]
    g.node.extend(order)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m

