"""Cast between the numeric and bool types NumPy has (no float8/bfloat16/int4, no strings)."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op

# ONNX TensorProto data types NumPy represents natively.
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _prepare(ctx) -> None:
    if ctx.attr("to") not in DTYPES:
        raise UnsupportedHostOperatorError(f"Cast node '{ctx.name}' casts to ONNX type {ctx.attr('to')}; the host "
                                           "executor casts to float16/32/64, (u)int8-64 and bool")


@op("Cast", since=1, prepare=_prepare)
def cast(ctx, x):
    if x.dtype.kind not in "fiub":
        raise UnsupportedHostOperatorError(f"Cast node '{ctx.name}' reads {x.dtype} data; the host executor casts "
                                           "float16/32/64, (u)int8-64 and bool")
    return x.astype(DTYPES[ctx.attr("to")])
