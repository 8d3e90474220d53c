"""Devices on this machine: native execution, and aarch64 under qemu-user.

Both see this machine's files (``host_files``): push and pull are plain copies, and callers
may run a bundle where it already lies instead of deploying a copy.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from edgert.device.transport import Completed, TransportError, TransportTimeout
from edgert.errors import ToolchainError

_ELF_AARCH64 = 183  # e_machine of an aarch64 ELF file


class LocalDevice:
    """Runs commands natively on this machine; its work folder is in edgert's cache."""

    name = "local"
    host_files = True

    def __init__(self, workdir: str | Path | None = None) -> None:
        self.arch = platform.machine()
        self._workdir = Path(workdir) if workdir else None

    def workdir(self) -> str:
        if self._workdir is None:
            from edgert.fsutil import cache_dir

            self._workdir = cache_dir("device", self.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        return str(self._workdir)

    def wrap(self, argv: list[str]) -> list[str]:
        return argv

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        cmd = self.wrap([str(a) for a in argv])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TransportTimeout(f"'{Path(argv[0]).name}' on {self.name} did not finish within {timeout:.0f} s; "
                                   "raise the timeout or check the device is not overloaded") from None
        except OSError as exc:
            raise TransportError(f"cannot start {argv[0]} on {self.name}: {exc.strerror}") from None
        return Completed(p.returncode, p.stdout, p.stderr)

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        _copy(Path(local), Path(remote), self.name)

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        src = Path(remote)
        if not src.is_file():
            raise TransportError(f"cannot pull {remote} from {self.name}: no such file")
        from edgert.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(local), src.read_bytes())

    def close(self) -> None:
        pass


class QemuDevice(LocalDevice):
    """This machine as an aarch64 board: aarch64 programs run through qemu-user with the cross
    sysroot, everything else (sh, sha256sum, mkdir) natively, as binfmt_misc would do it."""

    name = "qemu"
    emulated = True  # every CPU feature emulated, no GPU (edgert.device.compat)

    def __init__(self, workdir: str | Path | None = None) -> None:
        super().__init__(workdir)
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
        return [self.qemu, "-L", self.sysroot, *argv] if _is_aarch64_elf(argv[0]) else argv


def _is_aarch64_elf(program: str) -> bool:
    path = program if os.sep in program else shutil.which(program)
    try:
        with open(path or program, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little" if head[5] == 1 else "big") == _ELF_AARCH64


def _copy(src: Path, dst: Path, where: str) -> None:
    try:
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    except OSError as exc:
        raise TransportError(f"cannot copy {src} to {dst} on {where}: {exc.strerror or exc}") from None
