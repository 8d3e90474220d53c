"""Fixtures of the runtime tests: a small continual step model's bundle (stream mode)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

FRAME_CHANNELS, WINDOW = 2, 8


def _offline_model():
    """Two 1-D convs (kernel 3) over [1, C, time]: a step model with delay 4 and two state tensors."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((4, FRAME_CHANNELS, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 4, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"])],
        "stream_tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, FRAME_CHANNELS, WINDOW))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 3, WINDOW - 4))],
        initializer=[w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="session")
def stream_bundle(tmp_path_factory) -> Path:
    """The host bundle of a continual step model, built once per session; copy it before changing it."""
    import onnx

    import edgert
    from edgert.compress import continual

    root = tmp_path_factory.mktemp("stream_tiny")
    onnx.save(_offline_model(), root / "offline.onnx")
    step, _ = continual(edgert.load(root / "offline.onnx"), 2)
    step.save(root / "step.onnx")
    return edgert.compile(root / "step.onnx", target="host", output=root / "step.edgert", log=lambda _m: None).path
