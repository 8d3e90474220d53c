"""Reshape: 0 copies the input's dimension (unless allowzero), -1 is inferred."""
from __future__ import annotations

from edgert.host.registry import op


@op("Reshape", since=5)
def reshape(ctx, x, shape):
    shape = [int(s) for s in shape]
    if not ctx.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)
