"""The one small interface every device connection implements.

A transport moves files to and from a device and runs commands there. Everything above it
(deploy, run, profile, tuning over RPC) is written against this interface only, so local,
qemu, ssh, adb and serial devices behave the same to the rest of edgert.

Paths on the device are POSIX strings (``remote``); paths here are :class:`pathlib.Path`.

Faults and retries. Every call has a timeout (TransportTimeout); a connection that is gone is
TransportClosed; a line that keeps damaging data is TransportCorrupted. Retried, because
repeating them cannot do harm: on a serial line, any command the device reports as arrived
damaged (its checksum failed there, so it never started; ``run`` included), and the transport's
own idempotent steps whose command or reply was damaged (a file chunk, written at its offset and
checked there; reading, listing, hashing), each up to ``retries`` times; a deploy file that
arrives with the wrong hash (re-sent once); an interrupted deploy (resumed from its ``.partial``
folder, whose files are hash-checked on the device before it is renamed into place); and an ssh
master connection that died (a new one on the next call). Never retried: ``run`` once the device
may have started it (the command may not be safe to repeat, e.g. it appends to a file or
drives hardware, and a profile cut short cannot be resumed), so a device that drops or reboots
mid-run, or a run whose reply arrives damaged, is an error that says to run the command again;
nothing it measured is kept as if complete.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgert.errors import RunError


class TransportError(RunError):
    """A device connection failed (the command on the device may not have run)."""


class TransportTimeout(TransportError):
    """A call to the device did not finish within its timeout."""


class TransportClosed(TransportError):
    """The connection to the device is gone (closed, dropped, or the device rebooted)."""


class TransportCorrupted(TransportError):
    """Data on the link kept arriving damaged (a noisy serial line): more damaged sends than the
    retry bound allows, or the damaged reply of a command that is not repeated."""


@dataclass(frozen=True)
class Completed:
    """A finished command on the device."""

    returncode: int
    stdout: str
    stderr: str


@runtime_checkable
class Transport(Protocol):
    name: str  # how the user named it: "local", "qemu", "ssh://pi@board:22", "adb:SERIAL", "serial:///dev/ttyUSB0"
    arch: str  # the device's CPU architecture as `uname -m` prints it ("aarch64", "x86_64")

    def workdir(self) -> str:
        """The device folder edgert keeps its files in (created on first use)."""

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        """Copies a file or a directory tree to ``remote`` on the device (parent folders are created)."""

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        """Runs argv on the device (no shell: arguments are passed as they are)."""

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        """Copies the device file ``remote`` to ``local`` here (atomically: all of it or nothing)."""

    def close(self) -> None:
        """Ends the connection; safe to call twice."""


# Transports whose device sees this machine's files (local, qemu) also set ``host_files = True``;
# callers may then use host paths directly instead of pushing and pulling. It is optional and
# not part of the protocol, so read it with :func:`shares_host_files`.
def shares_host_files(transport: Transport) -> bool:
    return bool(getattr(transport, "host_files", False))


def sh(script: str, *args: str) -> list[str]:
    """argv that runs a POSIX sh ``script`` with ``args`` as $1, $2, ... on the device: file names
    travel as arguments, never pasted into the script text."""
    return ["sh", "-c", script, "sh", *args]


def path_arg(path: str) -> str:
    """``path`` as a shell-quoted command argument that no command takes for an option
    (a relative name such as ``-rf`` becomes ``./-rf``)."""
    import shlex

    return shlex.quote("./" + path if path.startswith("-") else path)


def check_run(transport: Transport, argv: list[str], what: str, timeout: float = 600.0) -> Completed:
    """run() that raises TransportError naming ``what`` failed, with the command's stderr, on a non-zero exit."""
    done = transport.run(argv, timeout=timeout)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:]) or f"exit code {done.returncode}"
        raise TransportError(f"{what} failed on {transport.name}: {tail}")
    return done


def remote_arch(transport: Transport, timeout: float = 60.0) -> str:
    """The device's `uname -m`."""
    arch = check_run(transport, ["uname", "-m"], "uname -m", timeout).stdout.strip()
    if not arch:
        raise TransportError(f"'uname -m' printed nothing on {transport.name}; is it a Linux shell?")
    return arch
