"""QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), per tensor or per axis."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op

INT_TYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}


def per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 1 and ndim > 0:
        shape = [1] * ndim
        shape[axis % ndim] = v.size
        return v.reshape(shape)
    return v


def check_quant_attrs(ctx) -> None:
    if ctx.attr("block_size", 0):
        raise UnsupportedHostOperatorError(f"{ctx.op_type} node '{ctx.name}' uses block quantisation (block_size); "
                                           "the host executor quantises per tensor or per axis only")


def _prepare(ctx) -> None:
    check_quant_attrs(ctx)
    zp = ctx.const(2)
    out_type = ctx.attr("output_dtype", 0)
    if (zp is not None and zp.dtype.type not in INT_TYPES.values()) or (out_type and out_type not in INT_TYPES):
        raise UnsupportedHostOperatorError(f"QuantizeLinear node '{ctx.name}' targets a type other than (u)int8/(u)int16")


@op("QuantizeLinear", since=10, prepare=_prepare)
def quantize_linear(ctx, x, y_scale, y_zero_point=None):
    axis = ctx.attr("axis", 1)
    if y_zero_point is not None:
        dtype = y_zero_point.dtype
    else:
        dtype = np.dtype(INT_TYPES.get(ctx.attr("output_dtype", 0), np.uint8))
    if dtype.type not in INT_TYPES.values():
        raise UnsupportedHostOperatorError(f"QuantizeLinear node '{ctx.name}' targets {dtype}; the host executor "
                                           "quantises to (u)int8 and (u)int16")
    info = np.iinfo(dtype)
    scale = per_axis(y_scale, x.ndim, axis).astype(np.float32)
    zp = per_axis(0 if y_zero_point is None else y_zero_point, x.ndim, axis).astype(np.float32)
    y = np.rint(x.astype(np.float32) / scale) + zp
    return np.clip(y, info.min, info.max).astype(dtype)
