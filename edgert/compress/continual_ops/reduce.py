"""Reductions (ReduceMean/Sum/Max/Min, GlobalAverage/MaxPool). Over time: a running window of the offline length."""
from __future__ import annotations

import numpy as np

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of

_GLOBAL = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}


def convert(b: StepBuilder, node) -> None:
    x, t = node.input[0], b.timing[node.input[0]]
    rank = len(b.shapes[x])
    a = attrs_of(node)
    if node.op_type in _GLOBAL:
        op, axes, keepdims = _GLOBAL[node.op_type], list(range(2, rank)), 1
    else:
        op, keepdims = node.op_type, int(a.get("keepdims", 1))
        if len(node.input) > 1 and node.input[1]:
            if not b.is_const(node.input[1]):
                raise refuse(node, "axes must be a constant")
            axes = [int(v) for v in b.const_values[node.input[1]]]
        else:
            axes = list(a.get("axes", []))
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                b.nodes.append(node)
                b.set_step(node.output[0], node.output[0], t)
                return
            axes = list(range(rank))
    axes = sorted(ax % rank for ax in axes)
    out = node.output[0]
    if t.pad != (0, 0):
        raise refuse(node, "its input is zero-padded along time by a Pad node; only Conv and pooling may consume it")
    if t.axis not in axes:
        b.reduce(op, b.s(x), axes, keepdims, out, out)
        axis = t.axis if keepdims else t.axis - sum(ax < t.axis for ax in axes)
        b.set_step(out, out, t.moved(axis=axis))
        return
    # Within the frame first, then a running window over the offline length along time.
    y = b.s(x)
    others = [ax for ax in axes if ax != t.axis]
    if others:
        y = b.reduce(op, y, others, 1, f"{out}_frame")
        shape = list(b.step_shape_of(b.s(x)))
        for ax in others:
            shape[ax] = 1
        b._step_shapes[y] = shape
        b.dtypes[y] = b.dtypes.get(x, 1)
    n = t.length - 1
    # Buffer time-major: the frame with its size-1 time axis moved next to the batch axis is the
    # same bytes (a free Reshape), and each step's shift and the reduction run over contiguous rows.
    frame = list(b.step_shape_of(y))
    rest = [d for i, d in enumerate(frame) if i != t.axis]
    rows = [rest[0], 1, *rest[1:]]  # batch, time, the rest: the layout 1-D conv buffers use too
    tm = b.node("Reshape", [y, b.const(np.array(rows, np.int64), f"{out}_tm")], f"{out}_tm")
    b._step_shapes[tm] = rows
    b.dtypes[tm] = b.dtypes.get(x, 1)
    win = b.unordered_window(tm, n, 1, t, f"{node.name or out}_time")
    shape = list(b.shapes[out])
    red = b.reduce(op, win, [1], 0, f"{out}_time")
    b.node("Reshape", [red, b.const(np.array(shape, np.int64), f"{out}_shape")], out, out)
    b.set_step(out, out, t.moved(axis=None, lag=t.lag + n * t.rate, back=t.back + n * t.rate, length=0))
