"""Operator registry: op type + opset range -> implementation, filled by ``@op`` in ``edgert.host.ops``.

Like the ONNX reference evaluator's ``_op_list``: an operator file registers
one function per behaviour change (``since`` = the first opset with that
behaviour); the executor picks the newest one not newer than the model's opset.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_REGISTRY: dict[str, list[OpImpl]] = {}
_LOADED = False


@dataclass(frozen=True)
class OpImpl:
    op_type: str
    since: int
    fn: Callable[..., Any]
    # Inputs the implementation wants at load time when they are constant (weights), by index.
    prepare: Callable[..., Any] | None = None


def op(op_type: str, since: int = 1, prepare: Callable[..., Any] | None = None):
    """Register ``fn(ctx, *inputs) -> array | tuple`` for ``op_type`` from opset ``since`` on."""

    def wrap(fn):
        impls = _REGISTRY.setdefault(op_type, [])
        if any(i.since == since for i in impls):
            raise ValueError(f"{op_type} registered twice for opset {since}")
        impls.append(OpImpl(op_type, since, fn, prepare))
        impls.sort(key=lambda i: i.since)
        return fn

    return wrap


def load_all() -> None:
    """Import every module of ``edgert.host.ops`` (each registers its operators)."""
    global _LOADED
    if _LOADED:
        return
    from edgert.host import ops

    for info in pkgutil.iter_modules(ops.__path__):
        importlib.import_module(f"{ops.__name__}.{info.name}")
    _LOADED = True


def lookup(op_type: str, opset: int) -> OpImpl | None:
    """The implementation for ``op_type`` at ``opset``, or None when there is none."""
    load_all()
    found = None
    for impl in _REGISTRY.get(op_type, ()):
        if impl.since <= opset:
            found = impl
    return found


def supported_ops() -> list[str]:
    load_all()
    return sorted(_REGISTRY)
