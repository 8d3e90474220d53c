"""CUDA targets (Jetson): kernels compiled to sm_XX machine code with nvcc at compile time.

TVM 0.27's CUDA codegen hands its CUDA C++ source to the factory registered as
``ffi.Module.create.cuda`` (in ``libtvm_runtime_cuda.so``). Where that library
is loaded (a machine with a GPU driver), the factory compiles the source right
away through the global ``tvm_callback_cuda_compile``; build_cuda points that
callback at nvcc for the target's arch while it builds. Where it is not (no
``libcuda.so.1``, as on a CPU-only build host), codegen keeps a fallback module
with fmt "cuda" that stores only the source, and loading such a library later
needs a compile callback that only TVM's Python registers, so a Jetson running
edgert's C++ runner could not load it. For that case the returned executable's
``export_library`` packs the imports itself and swaps each source-only CUDA
module for the fatbin nvcc made from the same source (fmt "fatbin"), which the
device's ``ffi.Module.load_from_bytes.cuda`` loads with ``cuModuleLoadData``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from edgert.compiler.targets import Target
from edgert.errors import CompileError, ToolchainError

_COMPILE_CALLBACK = "tvm_callback_cuda_compile"
# Flags TVM's own nvcc path (tvm.support.nvcc) uses, minus --use_fast_math:
# fast exp/div would move outputs away from the onnxruntime golden check.
_NVCC_FLAGS = (
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
)
_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)


def require_nvcc(target: Target) -> str:
    """Path of the nvcc that builds ``target``'s kernels; ToolchainError if there is none."""
    name = target.toolchain.nvcc or "nvcc"
    found = shutil.which(name)
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not found and cuda_home and os.sep not in name:
        found = shutil.which(name, path=str(Path(cuda_home) / "bin"))
    if not found:
        raise ToolchainError(
            f"target {target.name} compiles CUDA kernels at build time, which needs the CUDA "
            f"toolkit's nvcc ('{name}' was not found): install the CUDA toolkit and put its bin/ "
            "on PATH (e.g. export PATH=/usr/local/cuda/bin:$PATH), or set CUDA_HOME to its root"
        )
    return found


def nvcc_version(nvcc: str) -> str:
    """'13.0' from `nvcc --version`: the CUDA runtime the device needs (recorded in the manifest)."""
    import re
    import subprocess

    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def build_cuda(mod, target: Target):
    """Compile a Relax module for a CUDA target; the result exports with sm_XX fatbins only."""
    nvcc = require_nvcc(target)
    arch = _sm_arch(target)
    import tvm
    import tvm_ffi

    fatbins: dict[str, bytes] = {}  # CUDA source -> its fatbin

    def compile_source(source: str) -> bytes:
        if source not in fatbins:
            fatbins[source] = _nvcc_fatbin(nvcc, source, arch)
        return fatbins[source]

    def callback(code, *_):  # TVM 0.27 passes the source only; older versions add the target
        return compile_source(str(code))

    # TVM's default CUDA pipeline legalizes and then applies the dlight GPU rules
    # (Matmul, GEMV, Reduction, GeneralReduction, Fallback), so every kernel has
    # thread bindings; nothing else is needed for correctness.
    previous = tvm_ffi.get_global_func(_COMPILE_CALLBACK, allow_missing=True)
    tvm_ffi.register_global_func(_COMPILE_CALLBACK, callback, override=True)
    try:
        exe = tvm.compile(mod, target=target.tvm_target())
    finally:
        if previous is not None:
            tvm_ffi.register_global_func(_COMPILE_CALLBACK, previous, override=True)
        else:
            tvm_ffi.remove_global_func(_COMPILE_CALLBACK)
    # Kernels that codegen left as source (no CUDA runtime here) are compiled now,
    # so nvcc errors surface at build time rather than at export.
    for cuda_mod in _import_tree(exe.mod):
        if cuda_mod.kind == "cuda":
            source = cuda_mod.inspect_source("cuda")
            if source:
                compile_source(str(source))
    return _executable_class()(exe.mod, fatbins)


def cuda_elf_arches(lib_path: Path) -> list[str]:
    """The sm_XX of every CUDA ELF (cubin) in the fatbins embedded in ``lib_path``.

    TVM embeds device code inside its own import blob, not in an ``.nv_fatbin``
    section, so cuobjdump cannot find it in the .so directly: each fatbin is cut
    out by its header and listed on its own.
    """
    cuobjdump = _find_cuobjdump()
    data = Path(lib_path).read_bytes()
    arches: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="edgert-cuobjdump-") as tmp:
        for i, fatbin in enumerate(_embedded_fatbins(data)):
            path = Path(tmp) / f"{i}.fatbin"
            path.write_bytes(fatbin)
            proc = subprocess.run(
                [cuobjdump, "--list-elf", str(path)], check=False, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise ToolchainError(f"cuobjdump failed on {lib_path}: {proc.stderr.strip()}")
            arches.update(re.findall(r"\.(sm_\d+[a-z]?)\.", proc.stdout))
    return sorted(arches)


def _sm_arch(target: Target) -> str:
    arch = str(target.tvm.get("arch", ""))
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise CompileError(f"target {target.name}: [tvm] arch must be like 'sm_87', got '{arch}'")
    return arch


def _nvcc_fatbin(nvcc: str, source: str, arch: str) -> bytes:
    """Compile CUDA source to a fatbin holding SASS for ``arch`` only (no PTX to JIT)."""
    num = arch.removeprefix("sm_")
    with tempfile.TemporaryDirectory(prefix="edgert-nvcc-") as tmp:
        src, out = Path(tmp) / "kernels.cu", Path(tmp) / "kernels.fatbin"
        src.write_text(source)
        cmd = [nvcc, "--fatbin", *_NVCC_FLAGS, "-gencode", f"arch=compute_{num},code={arch}",
               "-o", str(out), str(src)]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise CompileError(
                f"nvcc could not compile the generated CUDA kernels for {arch}: "
                f"{_first_error(proc.stderr + proc.stdout)}; check that this nvcc supports {arch}"
            )
        return out.read_bytes()


def _import_tree(root) -> list:
    seen, order, stack = set(), [], [root]
    while stack:
        m = stack.pop()
        if m not in seen:
            seen.add(m)
            order.append(m)
            stack.extend(m.imports)
    return order


@functools.cache
def _executable_class():
    """Made on first use: importing this module must not import TVM."""
    from tvm.relax import VMExecutable

    class CudaExecutable(VMExecutable):
        """A VM executable whose exported library carries fatbins, never CUDA source."""

        def __init__(self, mod, fatbins: dict[str, bytes]):
            super().__init__(mod)
            self.fatbins = fatbins

        def export_library(self, file_name, **kwargs):
            kwargs.setdefault("fpack_imports", self._pack_imports)
            return super().export_library(file_name, **kwargs)

        def _pack_imports(self, mod, is_system_lib, prefix, workspace_dir):
            # What export_library does by default (ModulePackImportsToLLVM), with
            # the serialized imports edited in between.
            import tvm

            blob = bytes(tvm.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy())
            blob = _replace_cuda_sources(blob, self.fatbins)
            llvm = [m for m in _import_tree(mod) if m.kind == "llvm"]
            triple = llvm[0].get_function("_get_target_string")() if llvm else ""
            obj = tvm.get_global_func("codegen.codegen_blob")(blob, is_system_lib, triple, prefix)
            path = os.path.join(workspace_dir, f"{prefix}devc.o")
            obj.write_to_file(path)
            return path

    return CudaExecutable


def _replace_cuda_sources(blob: bytes, fatbins: dict[str, bytes]) -> bytes:
    """Swap each CUDA module stored as source (fmt "cuda") for its fatbin.

    Layout (tvm_ffi library_module.cc): <nbytes u64> <indptr vec<u64>> <children
    vec<u64>> then per module <kind str> [<payload bytes>] ("_lib" has no payload);
    str/bytes/vec are a u64 count then the items. A CUDA payload is <fmt str>
    <function table> <code bytes>, the code last.
    """
    (num_indptr,) = struct.unpack_from("<Q", blob, 8)
    pos = 8 + 8 + 8 * num_indptr
    (num_children,) = struct.unpack_from("<Q", blob, pos)
    pos += 8 + 8 * num_children
    out = bytearray(blob[8:pos])
    for _ in range(num_indptr - 1):  # one entry per module
        kind, pos = _read_bytes(blob, pos)
        out += _bytes(kind)
        if kind == b"_lib":
            continue
        payload, pos = _read_bytes(blob, pos)
        if kind == b"cuda":
            payload = _fatbin_payload(payload, fatbins)
        out += _bytes(payload)
    if pos != len(blob):
        raise CompileError("unexpected TVM module blob layout; edgert does not support this TVM version")
    return struct.pack("<Q", len(out)) + bytes(out)


def _fatbin_payload(payload: bytes, fatbins: dict[str, bytes]) -> bytes:
    fmt, start = _read_bytes(payload, 0)
    if fmt != b"cuda":
        return payload  # already machine code (compiled through the callback)
    for source, fatbin in fatbins.items():
        code = source.encode()
        end = len(payload) - len(code) - 8
        if end >= start and payload.endswith(code) and struct.unpack_from("<Q", payload, end)[0] == len(code):
            return _bytes(b"fatbin") + payload[start:end] + _bytes(fatbin)
    raise CompileError("a CUDA kernel module was left as source only; the bundle could not run on the device")


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return buf[pos + 8 : pos + 8 + n], pos + 8 + n


def _bytes(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def _embedded_fatbins(data: bytes):
    """Fatbins inside ``data``, found by their header: magic u32, version u16, header size u16, body size u64."""
    pos = data.find(_FATBIN_MAGIC)
    while pos >= 0:
        version, header, body = struct.unpack_from("<HHQ", data, pos + 4) if pos + 16 <= len(data) else (0, 0, 0)
        end = pos + header + body
        if version == 1 and header == 16 and end <= len(data):
            yield data[pos:end]
        else:
            end = pos + 4
        pos = data.find(_FATBIN_MAGIC, end)


def _find_cuobjdump() -> str:
    """cuobjdump beside nvcc, in $CUDA_HOME/bin, on PATH, or from the nvidia-cuda-cuobjdump wheel."""
    dirs = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        dirs += [Path(nvcc).parent, Path(nvcc).resolve().parent]
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            dirs.append(Path(os.environ[env]) / "bin")
    for d in dirs:
        if (d / "cuobjdump").is_file():
            return str(d / "cuobjdump")
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia  # namespace package of NVIDIA's CUDA wheels

        for root in nvidia.__path__:
            for path in sorted(Path(root).glob("cu*/bin/cuobjdump")):
                return str(path)
    except ImportError:
        pass
    raise ToolchainError(
        "cuobjdump (CUDA toolkit) was not found beside nvcc, in $CUDA_HOME/bin or on PATH: "
        "install the CUDA toolkit's cuobjdump (or `pip install nvidia-cuda-cuobjdump`)"
    )


def _first_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[0]
