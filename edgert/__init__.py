"""edgert: compress, compile and deploy neural networks to edge devices.

``import edgert`` imports no heavy optional package; TVM, onnxruntime and
friends are imported by the functions that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from edgert.errors import EdgertError

__all__ = ["Bundle", "EdgertError", "Model", "Stream", "__version__", "compile", "load"]


def __getattr__(name: str):
    # Lazy so that `import edgert` stays cheap.
    if name in ("load", "Model"):
        from edgert import model

        return getattr(model, name)
    if name == "compile":
        from edgert.compiler.build import compile

        return compile
    if name == "Bundle":
        from edgert.bundle import Bundle

        return Bundle
    if name == "Stream":
        from edgert.runtime.stream import Stream

        return Stream
    raise AttributeError(f"module 'edgert' has no attribute {name!r}")
