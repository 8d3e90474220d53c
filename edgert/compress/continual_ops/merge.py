"""Element-wise binary/variadic operators and Concat: branches of different delay are aligned.

The branch that reaches a position earlier (smaller lag, e.g. a residual skip around a
symmetrically padded conv) is delayed by a state buffer until the other catches up.
"""
from __future__ import annotations

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of

OPS = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Concat",
       "Equal", "Greater", "Less", "And", "Or")


def convert(b: StepBuilder, node) -> None:
    timed = [i for i in node.input if i and not b.is_const(i)]
    axes = {b.timing[i].axis for i in timed}
    if len(axes) > 1:
        if None in axes:
            raise refuse(node, "mixes a tensor pooled over time with one that still has a time axis; "
                               "the pooled value has no offline counterpart at each step")
        raise refuse(node, "its inputs carry time on different axes")
    ranks = {len(b.shapes[i]) for i in timed}
    if len(ranks) > 1:
        raise refuse(node, "its time-varying inputs have different ranks; reshape them to one rank first")
    aligned, t = b.align(node, timed)
    by_name = dict(zip(timed, aligned, strict=True))
    rank = ranks.pop()
    out_axis = t.axis
    for i in node.input:
        if not i or not b.is_const(i) or t.axis is None:
            continue
        shape = b.shapes.get(i, [])
        pos = t.axis - (rank - len(shape))
        if pos >= 0 and shape[pos] != 1:
            raise refuse(node, f"constant input '{i}' varies along time (size {shape[pos]}); it would differ at every step")
        if len(shape) > rank:
            out_axis = t.axis + len(shape) - rank
    if node.op_type == "Concat" and t.axis is not None and attrs_of(node)["axis"] % rank == t.axis:
        raise refuse(node, "concatenation along the time axis cannot be streamed")
    b.copy(node, by_name)
    b.set_step(node.output[0], node.output[0], t.moved(axis=out_axis))
