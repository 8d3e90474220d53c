"""A hand-made bundle (one conv + relu) for testing the native runtime on its own.

Kept minimal on purpose: the real bundle writer lives in edgert.compiler.build.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgert.compiler.targets import Target, load_target
from edgert.fsutil import sha256_file

TARGETS = Path(__file__).resolve().parents[2] / "targets"
IN_SHAPE, OUT_SHAPE = (1, 3, 8, 8), (1, 4, 8, 8)
# Two outputs, so main returns a tuple; the "/" exercises file-name sanitising.
OUTPUTS = ("conv/out", "relu")


def target(name: str) -> Target:
    return load_target(TARGETS / f"{name}.toml")


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


def _spec(name: str, shape) -> dict:
    return {"name": name, "shape": list(shape), "dtype": "float32"}


def build_bundle(tgt: Target, dest: Path) -> Path:
    import onnxruntime as ort
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from edgert.compiler import toolchain

    model = _onnx_model()
    for sub in ("lib", "bin", "include", "golden"):
        (dest / sub).mkdir(parents=True)
    executable = tvm.compile(from_onnx(model, keep_params_in_input=False), target=tgt.tvm_target())
    executable.export_library(str(dest / "lib" / "model.so"), cc=toolchain.find_cxx(tgt))
    for rel, src in toolchain.runtime_libs(tgt).files.items():
        shutil.copy2(src, dest / rel)
    native = toolchain.build_native(tgt)
    shutil.copy2(native.libedgert, dest / "lib" / "libedgert.so")
    shutil.copy2(native.runner, dest / "bin" / "edgert-run")
    shutil.copy2(native.header, dest / "include" / "edgert.h")

    x = np.random.default_rng(1).standard_normal(IN_SHAPE).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.save(dest / "golden" / "input_0.npy", x)
    for i, ref in enumerate(session.run(list(OUTPUTS), {"input": x})):
        np.save(dest / "golden" / f"output_{i}.npy", ref)

    manifest = {
        "format": "edgert-bundle",
        "format_version": 1,
        "target": {"name": tgt.name, "arch": tgt.arch, "os": tgt.os, "device": tgt.device},
        "inputs": [_spec("input", IN_SHAPE)],
        "outputs": [_spec(n, OUT_SHAPE) for n in OUTPUTS],
        "golden": {
            "inputs": ["golden/input_0.npy"],
            "outputs": [f"golden/output_{i}.npy" for i in range(len(OUTPUTS))],
        },
        "files": {str(p.relative_to(dest)): sha256_file(p) for p in sorted(dest.rglob("*")) if p.is_file()},
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """tiny_bundle(target_name) -> bundle dir, built once per session; copy it before changing it."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build_bundle(target(name), tmp_path_factory.mktemp(f"bundle-{name}"))
        return built[name]

    return get
