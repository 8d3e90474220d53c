"""Shared geometry of convolution and pooling: output sizes, padding, im2col."""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np


def window_geometry(ctx, spatial: tuple[int, ...], kernel: tuple[int, ...], ceil_mode: bool = False):
    """(strides, dilations, pads_begin, pads_end, out_shape) from the node's attributes (auto_pad included)."""
    nd = len(spatial)
    strides = tuple(ctx.attr("strides") or (1,) * nd)
    dilations = tuple(ctx.attr("dilations") or (1,) * nd)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(math.ceil(s / st) for s, st in zip(spatial, strides, strict=True))
        total = [max(0, (o - 1) * st + e - s) for o, st, e, s in zip(out, strides, eff, spatial, strict=True)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return strides, dilations, tuple(begin), tuple(end), out
    if auto_pad == "VALID":
        begin = end = (0,) * nd
    else:
        pads = ctx.attr("pads") or (0,) * (2 * nd)
        begin, end = tuple(pads[:nd]), tuple(pads[nd:])
    out = []
    for s, e, st, b, en in zip(spatial, eff, strides, begin, end, strict=True):
        span = s + b + en - e
        if ceil_mode:
            o = -(-span // st) + 1
            if (o - 1) * st >= s + b:  # the last window would start in the right padding
                o -= 1
        else:
            o = span // st + 1
        out.append(o)
    return strides, dilations, begin, end, tuple(out)


def pad_spatial(x: np.ndarray, begin, end, value=0) -> np.ndarray:
    """Constant padding of the spatial axes (np.pad costs ~15 us of Python per call; this ~2 us)."""
    if not any(begin) and not any(end):
        return x
    shape = (*x.shape[:2], *(n + b + e for n, b, e in zip(x.shape[2:], begin, end, strict=True)))
    out = np.zeros(shape, x.dtype) if value == 0 else np.full(shape, value, x.dtype)
    out[(slice(None), slice(None), *(slice(b, b + n) for b, n in zip(begin, x.shape[2:], strict=True)))] = x
    return out


def required_extent(out_shape, kernel, strides, dilations):
    """Input extent each spatial axis needs (a ceil_mode window may reach past the padded input)."""
    return tuple((o - 1) * s + (k - 1) * d + 1 for o, k, s, d in zip(out_shape, kernel, strides, dilations, strict=True))


def window_slices(offset, out_shape, strides, dilations):
    return tuple(slice(k * d, k * d + (o - 1) * s + 1, s)
                 for k, o, s, d in zip(offset, out_shape, strides, dilations, strict=True))


@functools.lru_cache(maxsize=1024)
def _tap_slices(kernel, strides, dilations, out_shape) -> list[tuple[slice, ...]]:
    return [(slice(None), slice(None), *window_slices(off, out_shape, strides, dilations))
            for off in itertools.product(*(range(k) for k in kernel))]


def im2col(xp: np.ndarray, kernel, strides, dilations, out_shape) -> np.ndarray:
    """(N, C, *padded) -> (N, C*prod(kernel), prod(out_shape)), rows ordered C-major then kernel offset."""
    n, c = xp.shape[:2]
    taps = _tap_slices(tuple(kernel), tuple(strides), tuple(dilations), tuple(out_shape))
    cols = np.empty((n, c, len(taps), *out_shape), dtype=xp.dtype)
    for i, sl in enumerate(taps):
        cols[:, :, i] = xp[sl]
    return cols.reshape(n, c * len(taps), math.prod(out_shape))
