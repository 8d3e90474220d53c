"""Numba kernels compiled on first use and cached on disk.

``@kernel(nogil=True)`` keeps numba out of ``import edgert.host`` (listing the
supported operators needs no compiler); the first call compiles the kernel with
``numba.njit(cache=True)``, so later processes load the machine code from
``__pycache__`` instead of compiling again. Kernels take a ``start, stop`` range
of their outer loop and release the GIL: edgert.host.parallel runs the chunks.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Kernel:
    """A function compiled by numba on its first call; ``py_func`` is the uncompiled Python."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any], setup: Callable[[], None] | None = None):
        self.py_func = fn
        self.options = options
        self.setup = setup
        self._compiled: Callable[..., Any] | None = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    def compiled(self) -> Callable[..., Any]:
        if self._compiled is None:
            from edgert.model import require

            numba = require("numba", "host")
            if self.setup is not None:
                self.setup()
            self._compiled = numba.njit(cache=True, **self.options)(self.py_func)
        return self._compiled

    def __call__(self, *args: Any) -> Any:
        return self.compiled()(*args)


def kernel(setup: Callable[[], None] | None = None, **options: Any) -> Callable[[Callable[..., Any]], Kernel]:
    """Decorator: ``@kernel(nogil=True, fastmath=True)``; options go to ``numba.njit``. ``setup`` runs once
    before the first compile: it defines globals the kernel needs that import numba (e.g. LLVM intrinsics)."""

    def wrap(fn: Callable[..., Any]) -> Kernel:
        return Kernel(fn, options, setup)

    return wrap
