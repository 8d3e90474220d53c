"""Constant: a tensor, or one float/int (list) attribute."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op

_KINDS = {"value": None, "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
          "value_ints": np.int64}


@op("Constant", since=1)
def constant(ctx):
    for name, dtype in _KINDS.items():
        if name in ctx.attrs:
            return np.array(ctx.attrs[name], dtype=dtype)
    raise UnsupportedHostOperatorError(f"Constant node '{ctx.name}' holds {', '.join(ctx.attrs)}; "
                                       "the host executor reads value, value_float(s) and value_int(s)")
