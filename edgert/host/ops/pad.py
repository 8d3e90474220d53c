"""Pad: constant/reflect/edge/wrap; pads as attribute (< 11) or input (11+, axes input from 18); negative pads crop."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op

_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad(ctx, x, pads, value, axes):
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    k = len(axes)
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(axes):
        begin[a], end[a] = pads[i], pads[i + k]
    # Crop first (negative pads), then pad.
    crop = tuple(slice(-b if b < 0 else 0, x.shape[a] + e if e < 0 else None) for a, (b, e) in enumerate(zip(begin, end, strict=True)))
    x = x[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end, strict=True)]
    mode = _MODES[ctx.attr("mode", "constant")]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.asarray(0 if value is None else value).reshape(-1)[0]
                      if np.asarray(0 if value is None else value).size else 0)
    return np.pad(x, width, mode=mode)


@op("Pad", since=2)
def pad_attr(ctx, x):
    return _pad(ctx, x, ctx.attr("pads"), ctx.attr("value", 0.0), None)


@op("Pad", since=11)
def pad(ctx, x, pads, constant_value=None, axes=None):
    return _pad(ctx, x, pads, constant_value, axes)
