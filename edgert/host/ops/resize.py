"""Resize (opset 11+): nearest and (multi)linear, every coordinate transformation mode; separable per axis."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op


def _prepare(ctx) -> None:
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear") or ctx.attr("antialias", 0):
        raise UnsupportedHostOperatorError(
            f"Resize node '{ctx.name}' uses mode={mode}{' with antialias' if ctx.attr('antialias', 0) else ''}; "
            "the host executor resizes with nearest or linear (no antialias)")


def _source_coords(ctx, out_len, in_len, scale, roi_start, roi_end):
    mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    x = np.arange(out_len, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adj = out_len / (scale * in_len)
        center = in_len / 2
        offset = center * (1 - adj)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
    if mode == "align_corners":
        # The unrounded output length (in_len * scale), as the ONNX reference resizes.
        length = in_len * scale
        return x * (in_len - 1) / (length - 1) if length > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_crop_and_resize":
        if out_len > 1:
            return roi_start * (in_len - 1) + x * (roi_end - roi_start) * (in_len - 1) / (out_len - 1)
        return np.full_like(x, 0.5 * (roi_start + roi_end) * (in_len - 1))
    raise UnsupportedHostOperatorError(f"Resize node '{ctx.name}': unknown coordinate_transformation_mode {mode}")


def _nearest(ctx, coords):
    mode = ctx.attr("nearest_mode", "round_prefer_floor")
    if mode == "round_prefer_floor":
        return np.where(coords == np.floor(coords) + 0.5, np.floor(coords), np.round(coords))
    if mode == "round_prefer_ceil":
        return np.where(coords == np.floor(coords) + 0.5, np.ceil(coords), np.round(coords))
    if mode == "floor":
        return np.floor(coords)
    return np.ceil(coords)


def _output_sizes(ctx, x, scales, sizes, axes):
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    full_scales = [1.0] * rank
    out = list(x.shape)
    if sizes is not None and len(sizes):
        sizes = [int(s) for s in sizes]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [sizes[i] / x.shape[a] for i, a in enumerate(axes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sizes = [int(np.round(r * x.shape[a])) for a in axes]
        for i, a in enumerate(axes):
            out[a], full_scales[a] = sizes[i], ratios[i]
    else:
        for i, a in enumerate(axes):
            full_scales[a] = float(scales[i])
            out[a] = int(np.floor(x.shape[a] * float(scales[i])))
    return out, full_scales, axes


@op("Resize", since=11, prepare=_prepare)
def resize(ctx, x, roi=None, scales=None, sizes=None):
    axes_attr = ctx.attr("axes")
    out_shape, full_scales, axes = _output_sizes(
        ctx, x, None if scales is None or not scales.size else scales, sizes, axes_attr)
    rank = x.ndim
    roi_full = [(0.0, 1.0)] * rank
    if roi is not None and roi.size:
        k = len(axes)
        for i, a in enumerate(axes):
            roi_full[a] = (float(roi[i]), float(roi[i + k]))
    mode = ctx.attr("mode", "nearest")
    y = x.astype(np.float64) if x.dtype.kind == "f" else x
    extrapolate = ctx.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize"
    outside_masks = []
    for a in range(rank):
        if out_shape[a] == x.shape[a] and full_scales[a] == 1.0 and roi_full[a] == (0.0, 1.0):
            continue
        n_in = x.shape[a]
        c = _source_coords(ctx, out_shape[a], n_in, full_scales[a], *roi_full[a])
        if extrapolate:
            outside_masks.append((a, (c < 0) | (c > n_in - 1)))
        if mode == "nearest":
            idx = np.clip(_nearest(ctx, c), 0, n_in - 1).astype(np.int64)
            y = np.take(y, idx, axis=a)
        else:
            c = np.clip(c, 0, n_in - 1)
            lo = np.floor(c).astype(np.int64)
            hi = np.minimum(lo + 1, n_in - 1)
            frac = (c - lo).reshape([-1 if i == a else 1 for i in range(rank)])
            y = np.take(y, lo, axis=a) * (1 - frac) + np.take(y, hi, axis=a) * frac
    if outside_masks:
        value = ctx.attr("extrapolation_value", 0.0)
        y = np.array(y, copy=True)
        for a, mask in outside_masks:
            idx = [slice(None)] * rank
            idx[a] = mask
            y[tuple(idx)] = value
    return y.astype(x.dtype) if x.dtype.kind == "f" else y
