"""Numba host executor: runs ONNX models with NumPy and Numba, no TVM.

``HostExecutor(model_or_path, threads=None).run({name: array}) -> {name: array}``.
"""
from __future__ import annotations

__all__ = ["HostExecutor", "HostOptions", "supported_ops"]


def __getattr__(name: str):
    # Lazy: the executor pulls in onnx and the operator modules.
    if name in ("HostExecutor", "HostOptions"):
        from edgert.host import executor

        return getattr(executor, name)
    if name == "supported_ops":
        from edgert.host.registry import supported_ops

        return supported_ops
    raise AttributeError(f"module 'edgert.host' has no attribute {name!r}")
