"""An Android device through the ``adb`` command (platform-tools).

Commands run through ``adb shell`` (the device's sh parses one quoted command line; adb >= 7
passes the exit status back); files go with ``adb push``/``adb pull``. /data/local/tmp is the
one place an app-less shell may write and execute.
"""
from __future__ import annotations

import os
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgert.device.transport import Completed, TransportClosed, TransportError, TransportTimeout, path_arg, remote_arch
from edgert.errors import MissingDependencyError

# What adb itself prints when it cannot reach the phone (old adb: "error: ...", new: "adb: ...").
_UNREACHABLE = re.compile(r"^(adb: )?(error: )?(no devices/emulators found|device '.*' not found|device offline|"
                          r"device unauthorized|device still authorizing|more than one device|cannot connect to daemon|"
                          r"closed)", re.M)


@dataclass(frozen=True)
class ADBConfig:
    serial: str | None = None  # None: the only device adb sees
    workdir: str = "/data/local/tmp/edgert"
    adb: str = "adb"  # the adb program (a name on PATH or a path)
    target: str | None = None  # the board it is (?target=NAME): bundles for other boards are refused

    @property
    def spec(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"


class ADBTransport:
    def __init__(self, config: ADBConfig) -> None:
        self.config = config
        self.name = config.spec
        self.target = config.target
        self._adb = shutil.which(config.adb)
        if self._adb is None:
            raise MissingDependencyError(
                "the adb command is not installed; install Android platform-tools (apt-get install adb) "
                "or put adb on PATH"
            )
        self._arch: str | None = None
        self._made_workdir = False
        self._closed = False

    def _call(self, args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        if self._closed:
            raise TransportClosed(f"the connection to {self.name} was closed; open the device again")
        cmd = [self._adb, *(["-s", self.config.serial] if self.config.serial else []), *args]
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TransportTimeout(f"{what} on {self.name} did not finish within {timeout:.0f} s; "
                                   "raise the timeout or check the phone (adb devices)") from None
        err = p.stderr.decode(errors="replace")
        m = _UNREACHABLE.search(err) if p.returncode != 0 else None
        if m:
            line = err[m.start():].splitlines()[0]
            raise TransportClosed(
                f"adb cannot reach {self.name} ({line}); connect the phone with USB debugging enabled and "
                "check that 'adb devices' lists it" + ("" if self.config.serial else " (or name it: adb:SERIAL)")
            )
        return p

    @property
    def arch(self) -> str:
        if self._arch is None:
            self._arch = remote_arch(self)
        return self._arch

    def workdir(self) -> str:
        if not self._made_workdir:
            p = self._call(["shell", f"mkdir -p {path_arg(self.config.workdir)}"], 60, "mkdir")
            if p.returncode != 0:
                raise TransportError(f"cannot create {self.config.workdir} on {self.name}: "
                                     f"{p.stderr.decode(errors='replace').strip()}; choose another with ?workdir=DIR")
            self._made_workdir = True
        return self.config.workdir

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        p = self._call(["shell", shlex.join(str(a) for a in argv)], timeout, f"'{posixpath.basename(str(argv[0]))}'")
        return Completed(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        local = Path(local)
        # adb push of a folder onto an existing one nests it; files one by one mean the same everywhere.
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for f in files:
            dest = posixpath.join(remote, f.relative_to(local).as_posix()) if local.is_dir() else remote
            mk = self._call(["shell", f"mkdir -p {path_arg(posixpath.dirname(dest) or '.')}"], timeout, "mkdir")
            p = mk if mk.returncode != 0 else self._call(["push", str(f), _dash_safe(dest)], timeout, f"pushing {f.name}")
            if p.returncode != 0:
                msg = (p.stderr or p.stdout).decode(errors="replace").strip()
                raise TransportError(f"cannot write {dest} on {self.name}: {msg or f'exit code {p.returncode}'}")

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        os.close(fd)
        try:
            p = self._call(["pull", _dash_safe(remote), tmp], timeout, f"pulling {remote}")
            if p.returncode != 0:
                msg = (p.stderr or p.stdout).decode(errors="replace").strip()
                raise TransportError(f"cannot read {remote} on {self.name}: {msg or f'exit code {p.returncode}'}")
            Path(tmp).replace(local)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def close(self) -> None:
        self._closed = True


def _dash_safe(path: str) -> str:
    # adb push/pull take their paths as words (not through a shell), but a leading '-' reads as an option.
    return "./" + path if path.startswith("-") else path
