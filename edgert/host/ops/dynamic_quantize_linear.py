"""DynamicQuantizeLinear: uint8 quantisation with scale and zero point from the tensor's own range (incl. 0)."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


@op("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx, x):
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255) if hi > lo else np.float32(0)
    zp = np.uint8(np.clip(np.rint(-lo / scale), 0, 255)) if scale else np.uint8(0)
    y = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8) if scale else np.full(x.shape, zp, np.uint8)
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)
