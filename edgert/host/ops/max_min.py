"""Max and Min: elementwise over any number of inputs, with broadcasting."""
from __future__ import annotations

import functools

import numpy as np

from edgert.host.registry import op


@op("Max", since=1)
def max_(ctx, *xs):
    return functools.reduce(np.maximum, xs)


@op("Min", since=1)
def min_(ctx, *xs):
    return functools.reduce(np.minimum, xs)
