"""Can this device run this bundle? Checked before anything is pushed, run or loaded.

Four refusals, in this order (each an ArchMismatchError, TargetMismatchError for all but the first
kind, so the CLI exits 5 as for any bundle it will not run):
- the device was declared to be a board (``?target=NAME`` in its spec) and the bundle was built
  for another one that is not a subset of it (a generic-aarch64 bundle runs on an rpi4; an rpi4
  one does not go to a device declared a jetson-orin-nano, whose compiler flags differ);
- the CPU architecture differs (``uname -m``);
- a CUDA bundle on a device with no NVIDIA GPU device node (under qemu-user there never is one);
- an aarch64 bundle compiled for CPU features (``+dotprod``, ``+i8mm``, ... or an ``-mcpu``
  implying them) the device's /proc/cpuinfo does not list: it would die of SIGILL mid-run.
  qemu-user emulates every feature, so it is not asked.
"""
from __future__ import annotations

from pathlib import Path

from edgert.device.transport import sh
from edgert.errors import TargetMismatchError

# Any one of these existing means an NVIDIA GPU is there: desktop/server driver, Jetson (L4T).
GPU_NODES = ("/dev/nvidiactl", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu")
_HAS_ANY = 'for p in "$@"; do [ -e "$p" ] && exit 0; done; exit 1'

# LLVM attribute -> the aarch64 /proc/cpuinfo "Features" flag of a CPU that has it.
AARCH64_FLAGS = {"+neon": "asimd", "+dotprod": "asimddp", "+i8mm": "i8mm", "+sve": "sve", "+sve2": "sve2",
                 "+fullfp16": "asimdhp", "+bf16": "bf16"}
# Attributes an -mcpu turns on beyond the base ISA (the boards in targets/ and their kin).
# An -mcpu not listed here is not checked (its features are unknown to edgert).
AARCH64_MCPU = {
    "cortex-a53": ("+neon",), "cortex-a57": ("+neon",), "cortex-a72": ("+neon",), "cortex-a73": ("+neon",),
    "cortex-a55": ("+neon", "+dotprod", "+fullfp16"), "cortex-a76": ("+neon", "+dotprod", "+fullfp16"),
    "cortex-a78": ("+neon", "+dotprod", "+fullfp16"), "cortex-a78ae": ("+neon", "+dotprod", "+fullfp16"),
    "neoverse-n1": ("+neon", "+dotprod", "+fullfp16"),
}


def _llvm(target: dict) -> dict:
    tvm = target.get("tvm") or {}
    return tvm.get("host", tvm) if target.get("device") == "cuda" else tvm


def required_attrs(target: dict) -> set[str]:
    """The LLVM CPU attributes code compiled for ``target`` (a manifest's target) may use."""
    llvm = _llvm(target)
    attrs = {a for a in llvm.get("mattr", []) if isinstance(a, str) and a.startswith("+")}
    return attrs | set(AARCH64_MCPU.get(llvm.get("mcpu", ""), ()))


def missing_cpu_flags(target: dict, cpuinfo: str) -> list[str]:
    """Attributes of an aarch64 ``target`` whose flag the "Features" lines of ``cpuinfo`` lack."""
    if target.get("arch") != "aarch64":
        return []
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Features":
            have |= set(value.split())
    if not have:
        return []  # a kernel that hides the features: nothing to go by
    return sorted(a for a in required_attrs(target) if a in AARCH64_FLAGS and AARCH64_FLAGS[a] not in have)


def check_declared_target(bundle, declared: str, where: str) -> None:
    """Refuse a bundle built for a board other than ``declared`` (or one it is not a subset of)."""
    from edgert.compiler.targets import load_target

    device = load_target(declared).to_json()
    mine = bundle.target
    if mine.get("name") == device["name"]:
        return
    why = None
    if mine.get("arch") != device["arch"]:
        why = f"it is {mine.get('arch')} code and {declared} is {device['arch']}"
    elif mine.get("device", "cpu") == "cuda" and (device["device"] != "cuda" or
                                                  mine.get("tvm", {}).get("arch") != device["tvm"].get("arch")):
        why = f"it needs a {mine.get('tvm', {}).get('arch', 'CUDA')} GPU, which {declared} does not have"
    elif _llvm(mine).get("mcpu") and _llvm(mine).get("mcpu") != _llvm(device).get("mcpu"):
        why = f"it is tuned for {_llvm(mine).get('mcpu')} and {declared} has {_llvm(device).get('mcpu', 'another CPU')}"
    elif not required_attrs(mine) <= required_attrs(device):
        why = f"it uses {', '.join(sorted(required_attrs(mine) - required_attrs(device)))}, which {declared} lacks"
    if why:
        raise TargetMismatchError(
            f"bundle {bundle.path.name} is built for target {mine.get('name')} but {where} is declared a {declared} "
            f"(?target={declared}): {why}; compile the model with --target {declared}"
        )


def check_compatible(bundle, transport, timeout: float = 60.0) -> None:
    """Refuse (before anything is pushed or run) a bundle ``transport``'s device cannot run."""
    declared = getattr(transport, "target", None)
    if declared:
        check_declared_target(bundle, declared, transport.name)
    bundle.check_arch(transport.arch)
    emulated = bool(getattr(transport, "emulated", False))
    if bundle.device_kind == "cuda":
        if emulated or transport.run(sh(_HAS_ANY, *GPU_NODES), timeout=timeout).returncode != 0:
            raise _no_gpu(bundle, transport.name)
    if not emulated and bundle.arch == "aarch64" and required_attrs(bundle.target) - {"+neon"}:
        done = transport.run(["cat", "/proc/cpuinfo"], timeout=timeout)
        _refuse_missing(bundle, transport.name, missing_cpu_flags(bundle.target, done.stdout if done.returncode == 0 else ""))


def check_here(bundle) -> None:
    """check_compatible for running in this process."""
    bundle.check_arch()
    if bundle.device_kind == "cuda" and not any(Path(p).exists() for p in GPU_NODES):
        raise _no_gpu(bundle, "this machine")
    if bundle.arch == "aarch64":
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        _refuse_missing(bundle, "this machine", missing_cpu_flags(bundle.target, cpuinfo))


def _no_gpu(bundle, where: str) -> TargetMismatchError:
    return TargetMismatchError(
        f"bundle {bundle.path.name} is built for the CUDA GPU of target {bundle.target.get('name')} but {where} has no "
        f"NVIDIA GPU (none of {', '.join(GPU_NODES)}); run it on that board, or compile for a CPU target "
        "(see 'edgert targets')"
    )


def _refuse_missing(bundle, where: str, missing: list[str]) -> None:
    if missing:
        raise TargetMismatchError(
            f"bundle {bundle.path.name} (target {bundle.target.get('name')}) uses CPU features {', '.join(missing)} that "
            f"{where} lacks (not in /proc/cpuinfo); it would crash with an illegal instruction: compile for this "
            "board's target instead (see 'edgert targets')"
        )
