"""Reference runtimes: onnxruntime for ONNX, LiteRT for TFLite.

Their outputs are the golden answers a bundle is checked against.
"""
from __future__ import annotations

import numpy as np

from edgert.errors import EdgertError, ModelError


def name(model) -> str:
    """Which runtime (with version) produced the reference outputs."""
    if model.format == "tflite":
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    ort = _ort()
    return f"onnxruntime {ort.__version__}"


def run(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` on ``feeds``, in ``model.outputs`` order."""
    if model.format == "tflite":
        from edgert import tflite

        return tflite.reference_run(model, feeds)
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # The reference must compute the graph as written, not a re-fused variant.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in sess.run([o.name for o in model.outputs], feeds)]
    except EdgertError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot run the model: {first}") from None


def _ort():
    from edgert.model import require

    return require("onnxruntime", "reference")
