"""Pad: zero padding along time is handed to the next Conv/pooling as pending padding."""
from __future__ import annotations

import numpy as np

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of


def convert(b: StepBuilder, node) -> None:
    a = attrs_of(node)
    x, t = node.input[0], b.timing[node.input[0]]
    if a.get("mode", b"constant") != b"constant":
        raise refuse(node, "only constant (zero) padding along time can be streamed")
    if b.opset < 11:
        pads = list(a["pads"])
        value = a.get("value", 0.0)
    else:
        if any(not b.is_const(i) for i in node.input[1:] if i):
            raise refuse(node, "pads, value and axes must be constants")
        pads = [int(v) for v in b.const_values[node.input[1]]]
        value = float(b.const_values[node.input[2]].reshape(-1)[0]) if len(node.input) > 2 and node.input[2] else 0.0
    rank = len(b.shapes[x])
    if len(node.input) > 3 and node.input[3]:
        axes = [int(v) % rank for v in b.const_values[node.input[3]]]
        full = [0] * (2 * rank)
        for i, ax in enumerate(axes):
            full[ax], full[ax + rank] = pads[i], pads[i + len(axes)]
        pads = full
    ta = t.axis
    if ta is None:
        b.nodes.append(node)
        b.set_step(node.output[0], node.output[0], t)
        return
    left, right = pads[ta], pads[ta + rank]
    if left or right:
        if value != 0.0:
            raise refuse(node, f"padding along time with {value}; only zero padding can be streamed")
        if left < 0 or right < 0:
            raise refuse(node, "negative padding (cropping) along time cannot be streamed")
    rest = list(pads)
    rest[ta] = rest[ta + rank] = 0
    out = node.output[0]
    if any(rest):
        step = b.node("Pad", [b.s(x), b.const(np.array(rest, np.int64), f"{out}_pads"), *(
            [b.s(node.input[2])] if len(node.input) > 2 and node.input[2] else [])], out, out, mode="constant")
    else:
        step = b.s(x)
    b.set_step(out, step, t.moved(pad=(t.pad[0] + left, t.pad[1] + right), length=t.length + left + right))
