"""DequantizeLinear: (x - zero_point) * scale, per tensor or per axis."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.ops.quantize_linear import check_quant_attrs, per_axis
from edgert.host.registry import op


def _prepare(ctx) -> None:
    check_quant_attrs(ctx)


@op("DequantizeLinear", since=10, prepare=_prepare)
def dequantize_linear(ctx, x, x_scale, x_zero_point=None):
    if x.dtype.kind not in "iu":
        raise UnsupportedHostOperatorError(f"DequantizeLinear node '{ctx.name}' reads {x.dtype}; only integer inputs are supported")
    axis = ctx.attr("axis", 1)
    scale = per_axis(x_scale, x.ndim, axis)
    zp = per_axis(0 if x_zero_point is None else x_zero_point, x.ndim, axis)
    y = (x.astype(np.int32) - np.asarray(zp).astype(np.int32)).astype(np.float32) * scale.astype(np.float32)
    return y.astype(scale.dtype if scale.dtype.kind == "f" else np.float32)
