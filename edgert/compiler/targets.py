"""Targets are data: one TOML file per board, validated when loaded."""
from __future__ import annotations

import copy
import os
import platform
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgert.errors import TargetError

_ARCHES = ("x86_64", "aarch64")
_OSES = ("linux", "android")
_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Toolchain:
    """How to build native code for a target."""

    cxx: str
    sysroot: str | None = None
    nvcc: str | None = None
    requires_env: str | None = None
    runtime_dir_env: str | None = None
    debian_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class PowerRail:
    name: str
    voltage: str
    current: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str
    os: str
    device: str
    vector_bits: int
    tvm: dict[str, Any]
    toolchain: Toolchain
    cores: int | None = None
    cpu_freq_path: str | None = None
    power_rails: tuple[PowerRail, ...] = ()
    power_command: str | None = None
    source: str = ""

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def wheel_platform(self) -> str:
        """pip platform tag of the official TVM wheels for this target's runtime."""
        return f"manylinux_2_28_{self.arch}"

    @property
    def host_llvm(self) -> dict[str, Any]:
        """The LLVM (CPU) part of the TVM target."""
        return self.tvm["host"] if self.is_cuda else self.tvm

    def tvm_target(self):
        import tvm

        return tvm.target.Target(copy.deepcopy(self.tvm))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "os": self.os,
            "device": self.device,
            "vector_bits": self.vector_bits,
            "tvm": self.tvm,
        }


def targets_dirs() -> list[Path]:
    """Where target TOMLs are looked up: $EDGERT_TARGETS_PATH, then the installed set."""
    dirs = [Path(p) for p in os.environ.get("EDGERT_TARGETS_PATH", "").split(os.pathsep) if p]
    try:
        dirs.append(Path(str(resources.files("edgert.targets"))))
    except ModuleNotFoundError:
        pass
    # A source checkout used without installing: targets/ beside the package.
    dirs.append(Path(__file__).resolve().parents[2] / "targets")
    return list(dict.fromkeys(d.resolve() for d in dirs))


def available_targets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in targets_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def list_targets() -> list[Target]:
    return [load_target(name) for name in available_targets()]


def load_target(name_or_path: str | Path) -> Target:
    """Load a target by board name (``rpi4``) or from a TOML file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return _parse(path)
    known = available_targets()
    if str(name_or_path) not in known:
        raise TargetError(
            f"unknown target '{name_or_path}'; valid targets: {', '.join(sorted(known))} "
            "(or give the path of a board .toml file)"
        )
    return _parse(known[str(name_or_path)])


def _require(data: dict, key: str, kind: type, path: Path):
    if key not in data:
        raise TargetError(f"{path}: missing required key '{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise TargetError(f"{path}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _parse(path: Path) -> Target:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"cannot read target file {path}: {exc}") from None
    name = _require(data, "name", str, path)
    arch = _require(data, "arch", str, path)
    os_name = data.get("os", "linux")
    device = data.get("device", "cpu")
    tvm_dict = copy.deepcopy(_require(data, "tvm", dict, path))
    tc = _require(data, "toolchain", dict, path)
    if arch == "native":
        arch = platform.machine()
    for key, value, allowed in (("arch", arch, _ARCHES), ("os", os_name, _OSES), ("device", device, _DEVICES)):
        if value not in allowed:
            raise TargetError(f"{path}: {key} '{value}' is not one of {', '.join(allowed)}")
    if device == "cuda" and "host" not in tvm_dict:
        raise TargetError(f"{path}: a cuda target needs a [tvm.host] table (the CPU side)")
    llvm = tvm_dict["host"] if device == "cuda" else tvm_dict
    if llvm.get("mcpu") == "native":
        llvm["mcpu"] = _host_cpu()
    vector_bits = int(data.get("vector_bits", 128))
    if vector_bits == 0:
        vector_bits = _host_vector_bits(arch)
    power = data.get("power", {})
    rails = tuple(PowerRail(**r) for r in power.get("rails", []))
    return Target(
        name=name,
        description=data.get("description", ""),
        arch=arch,
        os=os_name,
        device=device,
        vector_bits=vector_bits,
        tvm=tvm_dict,
        toolchain=Toolchain(
            cxx=_require(tc, "cxx", str, path),
            sysroot=tc.get("sysroot"),
            nvcc=tc.get("nvcc"),
            requires_env=tc.get("requires_env"),
            runtime_dir_env=tc.get("runtime_dir_env"),
            debian_packages=tuple(tc.get("debian_packages", ())),
        ),
        cores=data.get("cores"),
        cpu_freq_path=data.get("cpu_freq_path"),
        power_rails=rails,
        power_command=power.get("command"),
        source=str(path),
    )


def _host_cpu() -> str:
    import tvm

    return str(tvm.target.codegen.llvm_get_system_cpu())


def _host_vector_bits(arch: str) -> int:
    if arch == "x86_64":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return 128
        if " avx512f" in flags:
            return 512
        if " avx2" in flags:
            return 256
    return 128
