"""Jetson (CUDA) builds carry sm_87 machine code, never CUDA source that needs nvcc on the device."""
import dataclasses
import shutil
import struct

import pytest

from edgert.compiler import cuda
from edgert.compiler.targets import load_target
from edgert.errors import ToolchainError

pytestmark = pytest.mark.cuda


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
def test_jetson_library_holds_sm87_machine_code(tmp_path, data_dir):
    import onnx
    import tvm_ffi
    from tvm.relax.frontend.onnx import from_onnx

    target = load_target("jetson-orin-nano")
    mod = from_onnx(onnx.load(data_dir / "convnet_tiny.onnx"), keep_params_in_input=False)
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
