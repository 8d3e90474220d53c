"""Cross-layer equalisation (Nagel et al., "Data-Free Quantization", 2019) on the float model.

For Conv1 -> ReLU -> Conv2, scaling output channel i of Conv1 by 1/s_i and
input channel i of Conv2 by s_i leaves the network unchanged (ReLU commutes
with positive scales) and, with s_i = sqrt(r1_i / r2_i) for the weight ranges
r1, r2, gives both layers the same per-channel range. Depthwise convolutions,
whose channels have wildly different ranges, gain most. ReLU6 does not commute
with scaling, so an equalised pair's ReLU6 becomes a ReLU, as AIMET does; the
quantiser after it then calibrates the real range.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIN_SCALE, _MAX_SCALE = 1e-2, 1e2  # keep rescaling numerically tame


@dataclass(frozen=True)
class EqualizeResult:
    pairs: int  # Conv pairs equalised
    relu6_replaced: int  # ReLU6 activations turned into ReLU


def has_depthwise(proto) -> bool:
    from onnx import helper

    inits = {t.name: t for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            g = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
            if g > 1 and g == inits[n.input[1]].dims[0]:
                return True
    return False


def equalize(proto, iterations: int = 4) -> EqualizeResult:
    """Equalise Conv -> Relu/ReLU6 -> Conv pairs of ``proto`` in place (a few sweeps, as in the paper)."""
    from onnx import helper, numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    outputs = {o.name for o in g.output}
    use_count: dict[str, int] = {}
    for node in g.node:
        for i in node.input:
            use_count[i] = use_count.get(i, 0) + 1

    def attr(node, name, default):
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def single(t):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and t not in outputs else None

    pairs = []
    for n1 in g.node:
        if n1.op_type != "Conv" or n1.input[1] not in inits or use_count.get(n1.input[1], 0) != 1:
            continue
        act = single(n1.output[0])
        if act is None or not _is_relu_like(act, inits):
            continue
        n2 = single(act.output[0])
        if n2 is None or n2.op_type != "Conv" or n2.input[1] not in inits or use_count.get(n2.input[1], 0) != 1:
            continue
        if n2.input[0] != act.output[0]:
            continue
        w1 = inits[n1.input[1]]
        w2 = inits[n2.input[1]]
        c = w1.dims[0]
        g2 = attr(n2, "group", 1)
        if attr(n1, "group", 1) not in (1, c) or g2 not in (1, c) or (g2 == 1 and w2.dims[1] != c):
            continue  # only plain and depthwise convolutions: channel i maps to channel i
        pairs.append((n1, act, n2, g2 == c and c > 1))
    relu6 = 0
    for _ in range(iterations):
        for n1, _act, n2, depthwise2 in pairs:
            w1 = numpy_helper.to_array(inits[n1.input[1]]).astype(np.float64)
            w2 = numpy_helper.to_array(inits[n2.input[1]]).astype(np.float64)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = (np.abs(w2).reshape(w2.shape[0], -1).max(axis=1) if depthwise2
                  else np.abs(w2).swapaxes(0, 1).reshape(w2.shape[1], -1).max(axis=1))
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.maximum(r2, 1e-30)), 1.0)
            s = np.clip(s, _MIN_SCALE, _MAX_SCALE)
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            w1 = w1 / s.reshape(shape1)
            w2 = w2 * (s.reshape(shape1) if depthwise2 else s.reshape((1, -1) + (1,) * (w2.ndim - 2)))
            _set(inits[n1.input[1]], w1)
            _set(inits[n2.input[1]], w2)
            if len(n1.input) > 2 and n1.input[2] in inits:
                _set(inits[n1.input[2]], numpy_helper.to_array(inits[n1.input[2]]).astype(np.float64) / s)
    for _n1, act, _n2, _ in pairs:
        if act.op_type == "Clip":
            relu6 += 1
            act.op_type = "Relu"
            del act.input[1:]
            del act.attribute[:]
    return EqualizeResult(len(pairs), relu6)


def _is_relu_like(node, inits) -> bool:
    """Relu, or a Clip with lower bound 0 (ReLU6 and friends)."""
    from onnx import helper, numpy_helper

    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    lo = node.input[1] if len(node.input) > 1 else ""
    if lo:
        return lo in inits and float(numpy_helper.to_array(inits[lo])) == 0.0
    return any(a.name == "min" and helper.get_attribute_value(a) == 0.0 for a in node.attribute)


def _set(tensor, value: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float32), tensor.name))
