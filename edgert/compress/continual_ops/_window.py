"""Shared by Conv and pooling: a sliding window along time becomes a state buffer."""
from __future__ import annotations

from edgert.compress.continual_ops._builder import StepBuilder, refuse


def attrs_of(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def window_along_time(b: StepBuilder, node, kernel: list[int], inputs: list[str], *,
                      allow_own_pad: bool = True, pad_reason: str = "", special=None) -> None:
    """Rewrite ``node`` (Conv, MaxPool, AveragePool) to see one output step over a buffered window.

    The step node keeps every attribute except along time, where it gets stride 1 and no
    padding: its input is exactly the (K-1)*d+1 positions one output needs. ``special(k, d)``
    may emit a cheaper equivalent instead (it returns False to decline).
    """
    x = node.input[0]
    t = b.timing[x]
    if t.axis is None or t.axis < 2:
        raise refuse(node, f"the time axis must be a spatial axis (2 or later) of its input, not axis {t.axis}")
    a = attrs_of(node)
    nsp = len(kernel)
    sp = t.axis - 2
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise refuse(node, "auto_pad SAME_* is not supported; re-export with explicit pads")
    dil = list(a.get("dilations", [1] * nsp))
    strides = list(a.get("strides", [1] * nsp))
    pads = list(a.get("pads", [0] * (2 * nsp)))
    k, d, s = kernel[sp], dil[sp], strides[sp]
    own = pads[sp]
    if own and not allow_own_pad:
        raise refuse(node, pad_reason)
    p_left = own + t.pad[0]
    n = (k - 1) * d
    if p_left > n:
        raise refuse(node, f"left padding {p_left} along time exceeds its reach {(k - 1)} x dilation {d}; "
                           "use at most (kernel-1)*dilation")
    out = node.output[0]
    lag = t.lag + (n - p_left) * t.rate
    length = b.shapes.get(out, [0] * (t.axis + 1))[t.axis]
    timing = t.moved(lag=lag, rate=t.rate * s, back=t.back + n * t.rate, length=length, pad=(0, 0))
    if special is not None and special(k, d):
        b.set_step(out, out, timing)
        return
    win, d_left = b.taps(b.s(x), k, d, t.axis, t, node.name or node.op_type)
    pads[sp] = pads[sp + nsp] = 0
    strides[sp] = 1
    dil[sp] = d_left
    new = dict(a)
    new.pop("auto_pad", None)
    new["pads"], new["strides"] = pads, strides
    if "dilations" in a or d != 1:
        new["dilations"] = dil
    b.node(node.op_type, [win, *[b.s(i) if i else "" for i in inputs]], node.name or node.op_type, out, **new)
    b.set_step(out, out, timing)
