"""Native toolchain for a target: its C++ compiler, the TVM runtime libraries, and the
bundle's native parts (libedgert.so, edgert-run) built from edgert/runtime/native.

Runtime libraries always come from the official apache-tvm / apache-tvm-ffi wheels at
the pinned versions, because the bundle's model.so and the C++ headers must match them.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgert.compiler.targets import Target
from edgert.errors import BundleError, MissingDependencyError, ToolchainError
from edgert.fsutil import atomic_dir, cache_dir, sha256_file

TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"

_NATIVE_SOURCES = ("edgert.h", "edgert.cc", "edgert_run.cc", "rpc_server.cc")
_CXXFLAGS = ("-std=c++17", "-O2", "-Wall", "-Wextra")
# The test-only build under AddressSanitizer/UBSan: any report aborts the process (no recovery),
# frame pointers and line tables keep the reports readable.
_SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g1")
_ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}


@dataclass(frozen=True)
class RuntimeLibs:
    dir: Path  # cache folder holding the libs
    files: dict[str, Path]  # bundle-relative name ("lib/libtvm_runtime.so") -> file


@dataclass(frozen=True)
class NativeBuild:
    libedgert: Path
    runner: Path
    header: Path


# ------------------------------------------------------------------ compiler


def find_cxx(target: Target) -> str:
    """Absolute path of the target's C++ compiler; ToolchainError saying how to install it."""
    tc = target.toolchain
    if target.os == "android":
        return _android_cxx(target)
    found = shutil.which(tc.cxx)
    if found:
        # Not resolved: wrappers such as ccache dispatch on the name they are called by.
        return str(Path(found).absolute())
    if tc.debian_packages:
        how = f"install it with 'sudo apt-get install {' '.join(tc.debian_packages)}'"
    else:
        how = f"install a C++ compiler that provides '{tc.cxx}' (e.g. 'sudo apt-get install g++') or put it on PATH"
    raise ToolchainError(f"C++ compiler '{tc.cxx}' for target '{target.name}' not found; {how}")


def _android_cxx(target: Target) -> str:
    env = target.toolchain.requires_env or "ANDROID_NDK_HOME"
    ndk = os.environ.get(env)
    if not ndk:
        raise ToolchainError(
            f"target '{target.name}' needs the Android NDK: download it from "
            f"https://developer.android.com/ndk/downloads and set {env} to its folder"
        )
    cxx = Path(ndk, "toolchains", "llvm", "prebuilt", "linux-x86_64", "bin", target.toolchain.cxx)
    if not os.access(cxx, os.X_OK):
        raise ToolchainError(f"{cxx} not found; check that {env}={ndk} points at an NDK r23 or newer")
    return str(cxx)


# ------------------------------------------------------------------ runtime libraries


def _lib_names(target: Target) -> dict[str, str]:
    """Bundle-relative name -> file name of the runtime libraries a target needs."""
    names = ["libtvm_runtime.so", "libtvm_ffi.so"] + (["libtvm_runtime_cuda.so"] if target.is_cuda else [])
    return {f"lib/{n}": n for n in names}


def runtime_libs(target: Target) -> RuntimeLibs:
    """The official TVM runtime libraries for the target, cached per platform and version."""
    if target.os == "android":
        return _android_runtime(target)
    needed = _lib_names(target)
    cache = cache_dir("runtime", target.wheel_platform, f"tvm-{TVM_VERSION}_ffi-{TVM_FFI_VERSION}")
    if not all((cache / n).is_file() for n in needed.values()):
        with atomic_dir(cache) as tmp:
            if target.arch == platform.machine() and target.os == "linux":
                _copy_installed(tmp)
            else:
                _download_wheels(target.wheel_platform, tmp)
    if target.is_cuda and not (cache / "libtvm_runtime_cuda.so").is_file():
        raise ToolchainError(
            f"the apache-tvm {TVM_VERSION} wheel for {target.wheel_platform} has no libtvm_runtime_cuda.so, "
            f"so CUDA bundles for '{target.name}' cannot be built; use a CPU target for this platform"
        )
    return RuntimeLibs(cache, {rel: cache / n for rel, n in needed.items()})


def _android_runtime(target: Target) -> RuntimeLibs:
    env = target.toolchain.runtime_dir_env or "EDGERT_ANDROID_TVM_RUNTIME"
    folder = os.environ.get(env)
    if not folder:
        raise ToolchainError(
            f"no official TVM runtime wheel exists for Android; build libtvm_runtime.so and "
            f"libtvm_ffi.so (TVM {TVM_VERSION}, tvm-ffi {TVM_FFI_VERSION}) with the NDK "
            f"(cmake -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK_HOME/build/cmake/android.toolchain.cmake "
            f"-DANDROID_ABI=arm64-v8a) and set {env} to the folder holding them"
        )
    files = {rel: Path(folder, n) for rel, n in _lib_names(target).items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ToolchainError(f"{env}={folder} lacks {', '.join(missing)}; point it at the NDK-built TVM runtime")
    return RuntimeLibs(Path(folder), files)


def _package_dir(dist: str, module: str, version: str) -> Path:
    """Folder of an installed package, checked to be the pinned version."""
    from importlib import metadata, util

    try:
        installed = metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(f"{dist} is not installed; run: pip install {dist}=={version}") from None
    if installed != version:
        raise ToolchainError(
            f"{dist} {installed} is installed but bundles need {version}; run: pip install {dist}=={version}"
        )
    spec = util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"cannot locate the '{module}' package; reinstall {dist}=={version}")
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_installed(dest: Path) -> None:
    """This machine's platform: the libraries of the installed (pinned) packages."""
    tvm_lib = _package_dir("apache-tvm", "tvm", TVM_VERSION) / "lib"
    ffi_lib = _package_dir("apache-tvm-ffi", "tvm_ffi", TVM_FFI_VERSION) / "lib"
    for src in (tvm_lib / "libtvm_runtime.so", tvm_lib / "libtvm_runtime_cuda.so", ffi_lib / "libtvm_ffi.so"):
        if src.is_file():  # a wheel without CUDA support simply has no cuda runtime
            shutil.copy2(src, dest / src.name)
    _require_core_libs(dest, f"the installed apache-tvm {TVM_VERSION}")


def _download_wheels(wheel_platform: str, dest: Path) -> None:
    """Another platform: pip downloads its wheels; only the runtime .so files are kept."""
    import zipfile

    args = [
        "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--platform", wheel_platform,
        f"apache-tvm=={TVM_VERSION}", f"apache-tvm-ffi=={TVM_FFI_VERSION}",
    ]
    with tempfile.TemporaryDirectory(prefix="edgert-wheels-", dir=dest.parent) as wheels:
        cmd = [sys.executable, "-m", "pip", *args, "--dest", wheels]
        print(f"[edgert] downloading the TVM runtime for {wheel_platform} (once)", file=sys.stderr, flush=True)
        # pip's progress goes to the process's stderr (fd 2): stdout may carry machine-readable output.
        if subprocess.run(cmd, check=False, stdout=2).returncode != 0:
            raise ToolchainError(
                f"could not download the TVM runtime wheels for {wheel_platform}; check the network "
                f"(or a pip index/proxy setting) and retry: pip {' '.join(args)}"
            )
        wanted = {"libtvm_runtime.so", "libtvm_runtime_cuda.so", "libtvm_ffi.so"}
        for wheel in Path(wheels).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    name = member.rsplit("/", 1)[-1]
                    if name in wanted and member.endswith(f"/lib/{name}"):
                        with zf.open(member) as src, open(dest / name, "wb") as out:
                            shutil.copyfileobj(src, out)
                        os.chmod(dest / name, 0o755)
    _require_core_libs(dest, f"the apache-tvm {TVM_VERSION} wheels for {wheel_platform}")


def _require_core_libs(folder: Path, source: str) -> None:
    for name in ("libtvm_runtime.so", "libtvm_ffi.so"):
        if not (folder / name).is_file():
            raise ToolchainError(f"{source} contain no {name}; reinstall apache-tvm=={TVM_VERSION}")


# ------------------------------------------------------------------ native build


def _native_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "runtime" / "native"


def _ffi_include() -> Path:
    include = _package_dir("apache-tvm-ffi", "tvm_ffi", TVM_FFI_VERSION) / "include"
    if not (include / "tvm" / "ffi" / "function.h").is_file():
        raise MissingDependencyError(f"{include} lacks the tvm-ffi C++ headers; reinstall apache-tvm-ffi=={TVM_FFI_VERSION}")
    return include


def build_native(target: Target, sanitize: bool = False) -> NativeBuild:
    """libedgert.so and edgert-run for the target, cached by sources, compiler, flags and libs.

    ``sanitize``: a separate build under AddressSanitizer/UBSan for tests on this machine, never
    shipped in a bundle; it finds the TVM runtime libraries in edgert's cache (RUNPATH), so it runs
    against any host bundle from its own folder."""
    if sanitize and (target.arch != platform.machine() or target.os != "linux"):
        raise ToolchainError(
            f"the sanitizer build runs on this machine only; use a host target, not '{target.name}' ({target.arch})"
        )
    cxx = find_cxx(target)
    libs = runtime_libs(target)
    include = _ffi_include()
    sources = _native_dir()
    flags = _CXXFLAGS + (_SANITIZE_FLAGS if sanitize else ())
    key = hashlib.sha256()
    for part in (cxx, target.arch, target.os, str(include), *flags):
        key.update(part.encode() + b"\0")
    for name in _NATIVE_SOURCES:
        key.update((sources / name).read_bytes())
    for lib in libs.files.values():  # Android libs live in a user folder and may be rebuilt
        key.update(sha256_file(lib).encode())
    out = cache_dir("native-sanitized" if sanitize else "native", key.hexdigest()[:32])
    result = NativeBuild(out / "lib" / "libedgert.so", out / "bin" / "edgert-run", out / "include" / "edgert.h")
    if not all(p.is_file() for p in (result.libedgert, result.runner, result.header)):
        with atomic_dir(out) as tmp:
            _compile(cxx, sources, include, libs, tmp, target, flags, sanitize)
    return result


def _compile(cxx: str, sources: Path, include: Path, libs: RuntimeLibs, out: Path, target: Target,
             flags: tuple[str, ...] = _CXXFLAGS, sanitize: bool = False) -> None:
    for sub in ("lib", "bin", "include"):
        (out / sub).mkdir()
    shutil.copy2(sources / "edgert.h", out / "include" / "edgert.h")
    lib, runner = out / "lib" / "libedgert.so", out / "bin" / "edgert-run"
    # The sanitizer build lives outside a bundle: it finds the runtime libraries where they are cached.
    cache_rpath = [f"-Wl,-rpath,{libs.dir}"] if sanitize else []
    _run_cxx(target, [
        cxx, *flags, "-fPIC", "-shared", "-isystem", str(include), str(sources / "edgert.cc"),
        "-o", str(lib), f"-L{libs.dir}", "-Wl,-soname,libedgert.so",
        # libedgert calls only tvm-ffi symbols; keep libtvm_runtime as a dependency anyway,
        # since loading it is what registers the VM and the .so module loader.
        "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed", "-ldl",
        "-Wl,-rpath,$ORIGIN", *cache_rpath,
    ])
    # rpc_server.cc (edgert-run --rpc-server) calls tvm-ffi directly and needs libtvm_runtime's
    # RPC server registered, hence the direct runtime libraries on the runner.
    _run_cxx(target, [
        cxx, *flags, "-isystem", str(include), str(sources / "edgert_run.cc"), str(sources / "rpc_server.cc"),
        "-o", str(runner), f"-L{lib.parent}", f"-L{libs.dir}", "-ledgert",
        "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed",
        f"-Wl,-rpath-link,{libs.dir}", "-Wl,-rpath,$ORIGIN/../lib", *cache_rpath,
    ])


def _run_cxx(target: Target, cmd: list[str]) -> None:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.splitlines()
        errors = [ln for ln in lines if "error" in ln.lower()] or lines
        raise ToolchainError(
            f"building the edgert runtime for '{target.name}' with {cmd[0]} failed:\n"
            + "\n".join(errors[:8])
            + "\ncheck that the cross compiler and its C++ standard library are installed"
        )


# ------------------------------------------------------------------ ELF


def elf_machine(path: Path) -> str:
    """Architecture of an ELF file ("x86_64", "aarch64", ...) read from its header."""
    try:
        with Path(path).open("rb") as f:
            header = f.read(20)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise BundleError(f"{path} is not an ELF binary (a shared library or executable was expected)")
    order = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    return _ELF_MACHINES.get(machine, f"unknown-{machine:#x}")
