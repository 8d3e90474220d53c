"""ConvInteger: (x - x_zero_point) conv (w - w_zero_point) with int32 accumulation."""
from __future__ import annotations

from edgert.host.int8 import int_conv, shifted
from edgert.host.registry import op


@op("ConvInteger", since=10)
def conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None):
    return int_conv(ctx, shifted(x, x_zero_point), shifted(w, w_zero_point, axis=0))
