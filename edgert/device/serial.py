"""A board reached only through a shell on its serial console (pyserial).

Slow but dependable:
- every command is framed by markers carrying a fresh token and its exit status, so prompts,
  kernel messages and echoed input around it are ignored (the markers are printed with
  ``printf '@@%s:%s'``, so the echoed command text never contains them);
- files go in chunks of base64 lines through a here-document; the far end's shell decodes each
  chunk, checks its sha256 and appends it only if it matches, otherwise the chunk is re-sent.
  Pulled files come back the same way, checked here. The far end needs sh, base64, sha256sum,
  dd and wc (coreutils or busybox).
- after a timeout the running command is interrupted (Ctrl-C) and the console re-synchronised.
The console must be at a shell prompt (logged in); edgert does not log in.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import posixpath
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from edgert.device.transport import Completed, TransportClosed, TransportError, TransportTimeout
from edgert.errors import MissingDependencyError

_MAX_LINE = 3000  # a tty in canonical mode drops input beyond 4095 characters per line
_TOOLS = ("base64", "sha256sum", "dd", "wc", "mkdir", "mv")


@dataclass(frozen=True)
class SerialConfig:
    port: str
    baud: int = 115200
    workdir: str = "/tmp/edgert"
    chunk_bytes: int = 32768  # raw bytes per checked chunk
    retries: int = 4  # sends of one chunk before giving up
    sync_timeout: float = 10.0  # seconds to find the shell at the start and after a timeout

    @property
    def spec(self) -> str:
        return f"serial://{self.port}" + (f"?baud={self.baud}" if self.baud != 115200 else "")


class SerialTransport:
    def __init__(self, config: SerialConfig, *, corrupt_chunk: int | None = None) -> None:
        """``corrupt_chunk``: a test hook; the N-th chunk sent (0-based, counted over the transport's
        life) has one base64 character changed on its first send, as line noise would."""
        try:
            import serial
        except ImportError:
            raise MissingDependencyError("serial devices need pyserial; run: pip install pyserial (or 'edgert[device]')") from None
        self.config = config
        self.name = config.spec
        self.corrupt_chunk = corrupt_chunk
        self.chunks_sent = 0  # chunks sent, re-sends included
        self.chunks_resent = 0
        self._buf = b""
        self._arch: str | None = None
        self._made_workdir = False
        self._desynced = False
        try:
            self._port = serial.Serial(config.port, baudrate=config.baud, timeout=0.05, write_timeout=30)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise TransportClosed(
                f"cannot open the serial port {config.port} ({exc}); check the port name (ls /dev/ttyUSB* /dev/ttyACM*), "
                "that nothing else holds it, and that you may open it (the dialout group)"
            ) from None
        try:
            self._start()
        except BaseException:
            self._port.close()
            raise

    # -- the console ---------------------------------------------------
    def _write(self, text: str) -> None:
        import serial

        try:
            self._port.write(text.encode())
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise TransportClosed(f"the serial port {self.config.port} failed ({exc}); check the cable and the board") from None

    def _read_until(self, pattern: re.Pattern[bytes], deadline: float) -> re.Match[bytes]:
        import serial

        while True:
            m = pattern.search(self._buf)
            if m:
                return m
            if time.monotonic() > deadline:
                raise TransportTimeout("timeout")
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                raise TransportClosed(f"the serial port {self.config.port} failed ({exc}); check the cable and the board") from None
            self._buf += data

    def _start(self) -> None:
        # Ctrl-C abandons whatever half-typed line the console held; then quiet the echo and prompts.
        self._write("\x03\n")
        self._write("stty -echo 2>/dev/null; PS1=''; PS2=''\n")
        try:
            self._sync()
        except TransportTimeout:
            raise TransportClosed(
                f"no shell answers on {self.config.port} at {self.config.baud} baud; check the baud rate "
                "(?baud=...) and that the console is logged in at a shell prompt"
            ) from None
        missing = self._exec(f"for t in {' '.join(_TOOLS)}; do command -v $t >/dev/null || printf '%s ' $t; done", 30)[1]
        if missing.strip():
            raise TransportError(f"the shell on {self.name} lacks {missing.strip()}; install coreutils or busybox there")

    def _sync(self) -> None:
        token = secrets.token_hex(6)
        self._write(f"printf '@@%s:%s\\n' S {token}\n")
        m = self._read_until(re.compile(rb"@@S:" + token.encode() + rb"\r?\n"), time.monotonic() + self.config.sync_timeout)
        self._buf = self._buf[m.end():]
        self._desynced = False

    def _exec(self, body: str, timeout: float, what: str = "the command") -> tuple[int, str, str]:
        """Runs a shell snippet (may span lines, e.g. here-documents); returns (status, stdout, stderr)."""
        if self._port is None:
            raise TransportClosed(f"the connection to {self.name} was closed; open the device again")
        if self._desynced:
            try:
                self._sync()
            except TransportTimeout:
                raise TransportClosed(f"the shell on {self.name} stopped answering; reset the board or reopen the port") from None
        t = secrets.token_hex(6)
        err = f'"${{TMPDIR:-/tmp}}/.edgert-err-{t}"'
        script = (
            f"printf '@@%s:%s\\n' B {t}; {{ {body}\n}} 2>{err}; __r=$?; printf '\\n@@%s:%s\\n' M {t}; "
            f"cat {err} 2>/dev/null; rm -f {err}; printf '\\n@@%s:%s:%d\\n' E {t} \"$__r\"\n"
        )
        if any(len(line) > _MAX_LINE for line in script.splitlines()):
            raise TransportError(f"a command line for {self.name} is longer than a serial console takes; use shorter paths")
        self._write(script)
        tok = t.encode()
        try:
            end = self._read_until(re.compile(rb"\r?\n@@E:" + tok + rb":(\d+)\r?\n"), time.monotonic() + timeout)
        except TransportTimeout:
            self._write("\x03\n")  # interrupt it; the next call re-synchronises first
            self._desynced = True
            raise TransportTimeout(f"{what} on {self.name} did not finish within {timeout:.0f} s; "
                                   "raise the timeout or check the board") from None
        text, self._buf = self._buf[:end.start()], self._buf[end.end():]
        text = text.replace(b"\r\n", b"\n")  # the tty turns each newline into CR LF
        begin = text.rfind(b"@@B:" + tok + b"\n")
        mid = text.rfind(b"\n@@M:" + tok + b"\n")
        if begin < 0 or mid < begin:
            self._desynced = True
            raise TransportError(f"garbled answer from {self.name}; check the baud rate and the cable")
        out = text[begin + len(tok) + 5:mid]  # the newline printed before the M marker is not the command's
        errtext = text[mid + len(tok) + 6:]
        return int(end.group(1)), out.decode(errors="replace"), errtext.decode(errors="replace").strip("\n")

    # -- Transport -----------------------------------------------------
    @property
    def arch(self) -> str:
        if self._arch is None:
            rc, out, err = self._exec("uname -m", 30, "uname -m")
            if rc != 0 or not out.strip():
                raise TransportError(f"'uname -m' failed on {self.name}: {err.strip()}; is it a Linux shell?")
            self._arch = out.strip()
        return self._arch

    def workdir(self) -> str:
        if not self._made_workdir:
            rc, _, err = self._exec(f"mkdir -p {shlex.quote(self.config.workdir)}", 30, "mkdir")
            if rc != 0:
                raise TransportError(f"cannot create {self.config.workdir} on {self.name}: {err}; choose another with ?workdir=DIR")
            self._made_workdir = True
        return self.config.workdir

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        # stdin from /dev/null: a command reading the console would swallow what comes next.
        rc, out, err = self._exec(shlex.join(str(a) for a in argv) + " </dev/null", timeout,
                                  f"'{posixpath.basename(str(argv[0]))}'")
        return Completed(rc, out, err)

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        local = Path(local)
        if local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                self.push(f, posixpath.join(remote, f.relative_to(local).as_posix()), timeout)
            return
        deadline = time.monotonic() + timeout
        data = local.read_bytes()
        q, part = shlex.quote(remote), shlex.quote(remote + ".edgert-part")
        chunk_file = shlex.quote(remote + ".edgert-chunk")
        self._checked(f"mkdir -p {shlex.quote(posixpath.dirname(remote) or '.')} && : > {part}", deadline, "push")
        step = self.config.chunk_bytes
        for offset in range(0, max(len(data), 1), step):
            chunk = data[offset:offset + step]
            digest = hashlib.sha256(chunk).hexdigest()
            for attempt in range(self.config.retries):
                lines = base64.encodebytes(chunk).decode()
                if self.chunks_sent == self.corrupt_chunk and attempt == 0:
                    lines = _flip(lines)
                self.chunks_sent += 1
                eof = f"EDGERT_{secrets.token_hex(4)}"
                body = (f"base64 -d > {chunk_file} <<'{eof}'\n{lines}{eof}\n"
                        f"case $(sha256sum < {chunk_file}) in {digest}*) cat {chunk_file} >> {part} && echo OK;; "
                        f"*) echo BAD;; esac; rm -f {chunk_file}")
                rc, out, _ = self._exec_until(body, deadline, f"pushing {local.name}")
                if rc == 0 and out.strip() == "OK":
                    break
                self.chunks_resent += 1
            else:
                raise TransportError(
                    f"a chunk of {local.name} arrived damaged {self.config.retries} times on {self.name}; "
                    "lower the baud rate or check the cable"
                )
        mode = f" && chmod 755 {q}" if local.stat().st_mode & 0o111 else ""
        whole = hashlib.sha256(data).hexdigest()
        rc, out, err = self._exec_until(
            f"case $(sha256sum < {part}) in {whole}*) mv {part} {q}{mode} && echo OK;; *) echo BAD;; esac", deadline, "push")
        if out.strip() != "OK":
            raise TransportError(f"{remote} on {self.name} does not match {local.name} after sending ({err or 'hash differs'})")

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        q = shlex.quote(remote)
        size_text = self._checked(f"wc -c < {q}", deadline, f"reading {remote}")
        try:
            size = int(size_text.split()[0])
        except (ValueError, IndexError):
            raise TransportError(f"cannot read the size of {remote} on {self.name}: {size_text!r}") from None
        step = self.config.chunk_bytes
        parts = []
        for k in range(max(1, -(-size // step))):
            dd = f"dd if={q} bs={step} skip={k} count=1 2>/dev/null"
            for _ in range(self.config.retries):
                out = self._checked(f"{dd} | base64; {dd} | sha256sum", deadline, f"pulling {remote}")
                lines = out.strip().splitlines()
                try:
                    chunk = base64.b64decode("".join(lines[:-1]), validate=True)
                except ValueError:
                    continue
                if lines and lines[-1].split()[0] == hashlib.sha256(chunk).hexdigest():
                    parts.append(chunk)
                    break
            else:
                raise TransportError(f"{remote} arrived damaged {self.config.retries} times from {self.name}; "
                                     "lower the baud rate or check the cable")
        from edgert.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(local), b"".join(parts))

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None

    # -- helpers -------------------------------------------------------
    def _exec_until(self, body: str, deadline: float, what: str) -> tuple[int, str, str]:
        return self._exec(body, max(deadline - time.monotonic(), 1.0), what)

    def _checked(self, body: str, deadline: float, what: str) -> str:
        rc, out, err = self._exec_until(body, deadline, what)
        if rc != 0:
            raise TransportError(f"{what} failed on {self.name}: {err.strip() or f'exit code {rc}'}")
        return out


def _flip(b64_lines: str) -> str:
    """One base64 character changed (still valid base64, so only the checksum can catch it)."""
    i = min(10, len(b64_lines.split("\n", 1)[0]) - 1)
    c = b64_lines[i]
    return b64_lines[:i] + ("A" if c != "A" else "B") + b64_lines[i + 1:]
