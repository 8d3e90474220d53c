"""Shared fixtures: the test models and bundles compiled once per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="session")
def qemu():
    """qemu-user and the aarch64 sysroot are installed by 'make install'; their absence is a failure."""
    if not shutil.which("qemu-aarch64-static") or not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        pytest.fail("qemu-aarch64-static and the aarch64 sysroot are required; run 'make install' as root")


@pytest.fixture(scope="session")
def tool():
    """tool(name) -> the module tools/<name>.py, loaded once per session (the tools are scripts, not a package)."""
    import importlib.util
    import sys

    loaded = {}

    def get(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
            spec.loader.exec_module(mod)
            loaded[name] = mod
        return loaded[name]

    yield get
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """compiled(model_file, target) -> Bundle, built once per session."""
    import edgert

    cache: dict[tuple[str, str], object] = {}
    root = tmp_path_factory.mktemp("bundles")

    def get(model: str, target: str, **kw):
        key = (model, target)
        if key not in cache:
            cache[key] = edgert.compile(DATA / model, target=target, output=root / f"{model}.{target}.edgert", **kw)
        return cache[key]

    return get


# A tiny two-output model (one conv + relu), compiled once per target: native-runtime and device tests.
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
