"""Conv along time (1D/2D/3D, any kernel, dilation, stride, zero padding)."""
from __future__ import annotations

import numpy as np

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of, window_along_time


def convert(b: StepBuilder, node) -> None:
    if any(not b.is_const(i) for i in node.input[1:] if i):
        raise refuse(node, "weights and bias must be constants")
    kernel = attrs_of(node).get("kernel_shape") or b.shapes[node.input[1]][2:]
    window_along_time(b, node, list(kernel), list(node.input[1:]), special=lambda k, d: _as_matmul(b, node, k, d))


def _as_matmul(b: StepBuilder, node, k: int, d: int) -> bool:
    """A 1-D conv's single output step is a matrix product of its taps: buffer the frames
    time-major ([1, positions, C]: each frame a contiguous row), pick the k taps, multiply by the
    weights flattened to [k*C, C_out]. No layout transposes around a conv kernel, which is most of
    what a step costs on TVM's VM for small convs."""
    x = node.input[0]
    t = b.timing[x]
    shape = b.shapes.get(x, [])
    w = b.const_values.get(node.input[1])
    if (b.update == "ring" or len(shape) != 3 or shape[0] != 1 or t.axis != 2 or w is None
            or attrs_of(node).get("group", 1) != 1):
        return False
    c_out, c_in, _ = w.shape
    hint = node.name or node.op_type
    row = b.node("Reshape", [b.s(x), b.const(np.array([1, 1, c_in], np.int64), f"{hint}_row")], f"{hint}_row")
    b._step_shapes[row] = [1, 1, c_in]
    b.dtypes[row] = b.dtypes.get(x, 1)
    n = (k - 1) * d
    win = b.window(row, n, 1, t, hint)  # [1, n+1, C], oldest first
    if d > 1:
        args = [win, *(b.const(np.array([v], np.int64), f"{hint}_taps") for v in (0, n + 1, 1, d))]
        win = b.node("Slice", args, f"{hint}_taps")
    flat = b.node("Reshape", [win, b.const(np.array([1, k * c_in], np.int64), f"{hint}_flat")], f"{hint}_flat")
    w2 = b.const(np.ascontiguousarray(w.transpose(2, 1, 0).reshape(k * c_in, c_out)), f"{hint}_w")
    y = b.node("MatMul", [flat, w2], hint)
    if len(node.input) > 2 and node.input[2]:
        y = b.node("Add", [y, b.s(node.input[2])], hint)
    b.node("Reshape", [y, b.const(np.array([1, c_out, 1], np.int64), f"{hint}_out")], hint, node.output[0])
    return True
