"""Devices on this machine: native execution, and aarch64 under qemu-user."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgert.errors import EdgertError, RunError, ToolchainError


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class LocalDevice:
    """Runs commands natively on this machine."""

    name = "local"

    def __init__(self) -> None:
        self.arch = platform.machine()

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        cmd = self.wrap([str(a) for a in argv])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise RunError(f"'{Path(cmd[0]).name}' on {self.name} did not finish within {timeout:.0f} s; "
                           "raise the timeout or check the device is not overloaded") from None
        except OSError as exc:
            raise RunError(f"cannot start {cmd[0]} on {self.name}: {exc.strerror}") from None
        return Completed(p.returncode, p.stdout, p.stderr)


class QemuDevice(LocalDevice):
    """Runs aarch64 Linux binaries through qemu-user with the cross sysroot."""

    name = "qemu"

    def __init__(self) -> None:
        self.arch = "aarch64"
        self.qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
        if not self.qemu:
            raise ToolchainError("qemu-aarch64-static not found; install it with: apt-get install qemu-user-static")
        self.sysroot = os.environ.get("EDGERT_QEMU_SYSROOT", "/usr/aarch64-linux-gnu")
        if not Path(self.sysroot, "lib").is_dir():
            raise ToolchainError(
                f"aarch64 sysroot {self.sysroot} not found; install it with: apt-get install g++-aarch64-linux-gnu "
                "(or set EDGERT_QEMU_SYSROOT)"
            )

    def wrap(self, argv: list[str]) -> list[str]:
        return [self.qemu, "-L", self.sysroot, *argv]


def open_device(spec: str) -> LocalDevice:
    if spec == "local":
        return LocalDevice()
    if spec == "qemu":
        return QemuDevice()
    raise EdgertError(f"unknown device '{spec}'; this version runs bundles on: local, qemu")
