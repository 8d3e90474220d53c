"""MaxPool and AveragePool along time."""
from __future__ import annotations

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of, window_along_time


def convert(b: StepBuilder, node) -> None:
    a = attrs_of(node)
    if len([o for o in node.output if o]) > 1:
        raise refuse(node, "the indices output of MaxPool is not supported")
    if node.op_type == "MaxPool":
        # MaxPool's own pads are -inf, not the zeros the state starts with (a Pad node before it is fine).
        reason = "MaxPool's own padding along time is -inf; pad with a zero Pad node before it or drop the padding"
        window_along_time(b, node, list(a["kernel_shape"]), [], allow_own_pad=False, pad_reason=reason)
    else:
        exclude = not a.get("count_include_pad", 0)
        reason = ("AveragePool with count_include_pad=0 and padding along time divides by a count that changes at "
                  "the window's edge; set count_include_pad=1 or pad with a Pad node")
        window_along_time(b, node, list(a["kernel_shape"]), [], allow_own_pad=not exclude, pad_reason=reason)
