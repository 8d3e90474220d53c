"""Equal, Greater, Less, GreaterOrEqual, LessOrEqual: broadcasting comparisons to bool."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op

_COMPARE = {"Equal": np.equal, "Greater": np.greater, "Less": np.less, "GreaterOrEqual": np.greater_equal,
            "LessOrEqual": np.less_equal}


def _register(name, fn):
    @op(name, since=1)
    def compare(ctx, a, b):
        return fn(a, b)

    return compare


for _name, _fn in _COMPARE.items():
    _register(_name, _fn)
