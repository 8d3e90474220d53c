"""Reference runtimes: onnxruntime for ONNX, LiteRT for TFLite.

Their outputs are the golden answers a bundle is checked against.
"""
from __future__ import annotations

import numpy as np

from edgert.errors import ModelError, first_line


def name(model) -> str:
    """Which runtime (with version) produced the reference outputs."""
    if model.format == "tflite":
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')}"
    ort = _ort()
    return f"onnxruntime {ort.__version__}"


def run(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` on ``feeds``, in ``model.outputs`` order."""
    return session(model)(feeds)


def session(model):
    """A reusable ``feeds -> outputs`` callable for many runs of the same model."""
    if model.format == "tflite":
        from edgert import tflite

        return lambda feeds: tflite.reference_run(model, feeds)
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # The reference must compute the graph as written, not a re-fused variant.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    names = [o.name for o in model.outputs]
    try:
        sess = ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load the model: {first_line(exc)}") from None

    def run_once(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return [np.asarray(o) for o in sess.run(names, feeds)]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            raise ModelError(f"onnxruntime cannot run the model: {first_line(exc)}") from None

    return run_once


def _ort():
    from edgert.model import require

    return require("onnxruntime", "reference")
