"""ConvTranspose: per group, W^T @ x (BLAS) then col2im (scatter-add of kernel taps), cropped by the pads."""
from __future__ import annotations

import itertools

import numpy as np

from edgert.host.registry import op


@op("ConvTranspose", since=1)
def conv_transpose(ctx, x, w, b=None):
    n, cin = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    group = ctx.attr("group", 1)
    kernel = tuple(ctx.attr("kernel_shape") or w.shape[2:])
    strides = tuple(ctx.attr("strides") or (1,) * nd)
    dilations = tuple(ctx.attr("dilations") or (1,) * nd)
    out_pad = tuple(ctx.attr("output_padding") or (0,) * nd)
    cout_g = w.shape[1]
    full = tuple(s * (i - 1) + op_ + (k - 1) * d + 1
                 for s, i, op_, k, d in zip(strides, spatial, out_pad, kernel, dilations, strict=True))
    output_shape = ctx.attr("output_shape")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if output_shape:
        output_shape = tuple(output_shape[-nd:])
        total = [f - o for f, o in zip(full, output_shape, strict=True)]
        # C-style halving (toward zero) as the ONNX spec writes it.
        if auto_pad == "SAME_UPPER":
            begin = [int(t / 2) for t in total]
        else:
            begin = [t - int(t / 2) for t in total]
        # An output larger than the full result is output_padding: zeros at the end.
        begin = [0 if t < 0 else b_ for t, b_ in zip(total, begin, strict=True)]
        end = [t - b_ for t, b_ in zip(total, begin, strict=True)]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [i * s for i, s in zip(spatial, strides, strict=True)]
        total = [f - t for f, t in zip(full, target, strict=True)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    else:
        pads = ctx.attr("pads") or (0,) * (2 * nd)
        begin, end = list(pads[:nd]), list(pads[nd:])
    y = np.zeros((n, cout_g * group, *full), dtype=np.float32)
    cin_g = cin // group
    for g in range(group):
        xg = x[:, g * cin_g:(g + 1) * cin_g].reshape(n, cin_g, -1)
        wg = w[g * cin_g:(g + 1) * cin_g].reshape(cin_g, -1)  # (Cin_g, Cout_g * prod(k))
        cols = np.matmul(wg.T, xg).reshape(n, cout_g, *kernel, *spatial)
        for off in itertools.product(*(range(k) for k in kernel)):
            dst = tuple(slice(o * d, o * d + (i - 1) * s + 1, s)
                        for o, d, i, s in zip(off, dilations, spatial, strides, strict=True))
            y[(slice(None), slice(g * cout_g, (g + 1) * cout_g), *dst)] += cols[(slice(None), slice(None), *off)]
    if any(v < 0 for v in (*begin, *end)):
        y = np.pad(y, [(0, 0), (0, 0)] + [(max(-b_, 0), max(-e, 0)) for b_, e in zip(begin, end, strict=True)])
        begin, end = [max(b_, 0) for b_ in begin], [max(e, 0) for e in end]
        full = y.shape[2:]
    crop = tuple(slice(b_, f - e) for b_, e, f in zip(begin, end, full, strict=True))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * nd))
    return np.ascontiguousarray(y, dtype=x.dtype)
