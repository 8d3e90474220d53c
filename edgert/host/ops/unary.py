"""Parameterless elementwise operators: Relu, Sigmoid, Tanh, Sqrt, Exp, Log, Neg, Abs, Reciprocal, Floor, Ceil, Round, Sign."""
from __future__ import annotations

import numpy as np

from edgert.host.registry import op


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


_UNARY = {
    "Relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "Sigmoid": _sigmoid,
    "Tanh": np.tanh,
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Neg": np.negative,
    "Abs": np.abs,
    "Reciprocal": np.reciprocal,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.round,  # half to even, as ONNX specifies
    "Sign": np.sign,
}


def _register(name, fn):
    @op(name, since=1)
    def unary(ctx, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return fn(x)

    return unary


for _name, _fn in _UNARY.items():
    _register(_name, _fn)
