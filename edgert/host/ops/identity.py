"""Identity."""
from __future__ import annotations

from edgert.host.registry import op


@op("Identity", since=1)
def identity(ctx, x):
    return x
