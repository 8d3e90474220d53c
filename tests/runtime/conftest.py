"""A tiny two-output model (one conv + relu), compiled once per target for the native-runtime tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

IN_SHAPE, OUT_SHAPE = (1, 3, 8, 8), (1, 4, 8, 8)
# Two outputs, so main returns a tuple; the "/" exercises file-name sanitising.
OUTPUTS = ("conv/out", "relu")


def _onnx_model():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w", "b"], [OUTPUTS[0]], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [OUTPUTS[0]], [OUTPUTS[1]]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, IN_SHAPE)],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, OUT_SHAPE) for n in OUTPUTS],
        initializer=[weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """tiny_bundle(target_name) -> bundle dir, built once per session; copy it before changing it."""
    import onnx

    import edgert

    root = tmp_path_factory.mktemp("tiny")
    onnx.save(_onnx_model(), root / "tiny.onnx")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = edgert.compile(root / "tiny.onnx", target=name, output=root / f"tiny.{name}.edgert").path
        return built[name]

    return get
