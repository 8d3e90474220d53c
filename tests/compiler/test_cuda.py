"""Jetson (CUDA) builds carry sm_87 machine code, never CUDA source that needs nvcc on the device."""
import dataclasses
import shutil
import struct

import numpy as np
import pytest

from edgert.compiler import cuda
from edgert.compiler.targets import load_target
from edgert.errors import ToolchainError

pytestmark = pytest.mark.cuda


def _convnet():
    """Conv+BN+Relu+MaxPool+GlobalAveragePool+Gemm on a 1x3x32x32 input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = []

    def init(name, *shape, positive=False):
        arr = rng.random(shape) + 0.5 if positive else rng.standard_normal(shape) * 0.1
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", init("w1", 16, 3, 3, 3), init("b1", 16)], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c1", init("g", 16, positive=True), init("be", 16), init("mu", 16), init("var", 16, positive=True)],
            ["bn"],
        ),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", init("wf", 10, 16), init("bf", 10)], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _cuda_module_formats(lib: bytes) -> list[bytes]:
    """fmt of every CUDA module in a library's import blob (kind "cuda", then payload, then fmt)."""
    kind = struct.pack("<Q", 4) + b"cuda"
    formats, pos = [], lib.find(kind)
    while pos >= 0:
        (size,) = struct.unpack_from("<Q", lib, pos + len(kind))
        payload = lib[pos + len(kind) + 8 :][:size]
        (n,) = struct.unpack_from("<Q", payload)
        formats.append(payload[8 : 8 + n])
        pos = lib.find(kind, pos + len(kind) + 8 + size)  # the payload may contain the same bytes
    return formats


@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc (CUDA toolkit) is not installed")
def test_jetson_library_holds_sm87_machine_code(tmp_path):
    import tvm_ffi
    from tvm.relax.frontend.onnx import from_onnx

    target = load_target("jetson-orin-nano")
    mod = from_onnx(_convnet(), keep_params_in_input=False)
    callback = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)

    exe = cuda.build_cuda(mod, target)

    after = tvm_ffi.get_global_func("tvm_callback_cuda_compile", allow_missing=True)
    assert (after is None) if callback is None else after.same_as(callback), "global callback not restored"
    lib = tmp_path / "model.so"
    exe.export_library(str(lib), cc=target.toolchain.cxx)
    data = lib.read_bytes()
    assert data[:4] == b"\x7fELF" and data[18] == 183  # e_machine EM_AARCH64: host code for the Jetson CPU
    assert cuda.cuda_elf_arches(lib) == ["sm_87"]
    # Source-only CUDA modules are stored with fmt "cuda" and the kernels' C++ text.
    formats = _cuda_module_formats(data)
    assert formats and all(f in (b"fatbin", b"cubin") for f in formats), formats
    assert b"__global__" not in data


def test_missing_nvcc_is_a_toolchain_error_with_the_fix(monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    target = load_target("jetson-orin-nano")
    target = dataclasses.replace(
        target, toolchain=dataclasses.replace(target.toolchain, nvcc="edgert-no-such-nvcc")
    )
    with pytest.raises(ToolchainError, match=r"edgert-no-such-nvcc.*PATH.*CUDA_HOME"):
        cuda.require_nvcc(target)
    # build_cuda checks the toolchain before any TVM work.
    with pytest.raises(ToolchainError, match="CUDA toolkit"):
        cuda.build_cuda(None, target)
