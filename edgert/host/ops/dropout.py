"""Dropout at inference: the input unchanged, and an all-true mask when asked for."""
from __future__ import annotations

import numpy as np

from edgert.host.executor import UnsupportedHostOperatorError
from edgert.host.registry import op


@op("Dropout", since=1)
def dropout(ctx, x, ratio=None, training_mode=None):
    if training_mode is not None and bool(training_mode):
        raise UnsupportedHostOperatorError(f"Dropout node '{ctx.name}' is in training mode; export the model in eval mode")
    return (x, np.ones(x.shape, dtype=bool)) if len(ctx.outputs) > 1 else x
