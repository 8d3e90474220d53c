"""A board reached only through a shell on its serial console (pyserial).

Slow but dependable, also over a line that damages bytes:
- at the start one shell function is defined on the console; every command then travels through
  it as base64 lines together with its sha256. The far end decodes and checks the command before
  running it, so a command damaged on the way is never run: the device answers "arrived damaged"
  and it is sent again (base64 lines are inert if the shell itself ever reads them).
- the far end acknowledges a checked command before running it, then frames its reply with a
  fresh token, its exit status and the sha256 of its stdout and stderr; a reply damaged on the
  way back is caught here. The transport's own steps are idempotent and repeated when damaged
  (a file chunk is written at its offset with ``dd conv=notrunc`` and checked there; reads,
  listings and hashes); ``run`` is not repeated once it may have started (see transport.py).
- after a timeout or a lost acknowledgement the console is interrupted (Ctrl-C) and
  re-synchronised. The far end needs sh, base64, sha256sum, dd, head, tail and wc (coreutils or
  busybox). The console must be at a shell prompt (logged in); edgert does not log in.
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

from edgert.device.transport import (
    Completed,
    TransportClosed,
    TransportCorrupted,
    TransportError,
    TransportTimeout,
    path_arg,
)
from edgert.errors import MissingDependencyError

_TOOLS = ("base64", "sha256sum", "dd", "wc", "mkdir", "mv", "head", "tail", "cat", "rm", "grep")

# __edgert_x TOKEN SHA256 NLINES reads NLINES base64 lines from the console. Decoded they are
# "<n>\n", n bytes of data (the file "$__data" for the command) and the command. It runs only if
# the sha256 matches (its token noted in .edgert-ran, then "@@A:" lines: it started); otherwise
# the exit status is X (it never ran).
# The reply: "@@B:", stdout, "@@M:", stderr, then three "@@E:TOKEN:STATUS:SHA(out):SHA(err)" lines
# (three, so one damaged copy does not lose the end of the reply).
_FUNCTION = " ".join("""
__edgert_x() {
 __d="${TMPDIR:-/tmp}/.edgert-x-$1";
 head -n "$3" > "$__d.b";
 if base64 -d < "$__d.b" > "$__d.p" 2>/dev/null && case $(sha256sum < "$__d.p") in "$2"*) true;; *) false;; esac; then
  __n=$(head -n 1 "$__d.p");
  tail -n +2 "$__d.p" | head -c "$__n" > "$__d.in";
  tail -n +2 "$__d.p" | tail -c +$((__n + 1)) > "$__d.s";
  echo "$1" >> "${TMPDIR:-/tmp}/.edgert-ran";
  printf '@@A:%s\\n@@A:%s\\n' "$1" "$1";
  ( __data="$__d.in"; . "$__d.s" ) < /dev/null > "$__d.o" 2> "$__d.e"; __r=$?;
 else __r=X; : > "$__d.o"; : > "$__d.e"; fi;
 __ho=$(sha256sum < "$__d.o"); __he=$(sha256sum < "$__d.e");
 printf '@@B:%s\\n' "$1"; cat "$__d.o"; printf '\\n@@M:%s\\n' "$1"; cat "$__d.e";
 for __i in 1 2 3; do printf '\\n@@E:%s:%s:%s:%s\\n' "$1" "$__r" "${__ho%% *}" "${__he%% *}"; done;
 rm -f "$__d.b" "$__d.p" "$__d.in" "$__d.s" "$__d.o" "$__d.e";
}""".split())


@dataclass(frozen=True)
class SerialConfig:
    port: str
    baud: int = 115200
    workdir: str = "/tmp/edgert"
    chunk_bytes: int = 32768  # raw bytes per checked chunk
    retries: int = 4  # sends of one damaged command or chunk before giving up
    sync_timeout: float = 10.0  # seconds to find the shell at the start and after a timeout
    ack_timeout: float = 5.0  # seconds (beyond the time the bytes take at this baud) for a command to be acknowledged
    target: str | None = None  # the board it is (?target=NAME): bundles for other boards are refused

    @property
    def spec(self) -> str:
        return f"serial://{self.port}" + (f"?baud={self.baud}" if self.baud != 115200 else "")


class _Damaged(Exception):
    """One exchange went wrong on the line; ``ran``: whether the command may have started."""

    def __init__(self, why: str, ran: bool):
        super().__init__(why)
        self.why, self.ran = why, ran


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
        self.target = config.target
        self.corrupt_chunk = corrupt_chunk
        self.chunks_sent = 0  # chunks sent, re-sends included
        self.chunks_resent = 0
        self.damaged = 0  # exchanges that went wrong on the line and were repeated (chunks included)
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
    def _write(self, data: str | bytes) -> None:
        import serial

        try:
            self._port.write(data.encode() if isinstance(data, str) else data)
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
        # Ctrl-C abandons whatever half-typed line the console held; then quiet the echo and prompts,
        # and take away the control characters a damaged byte could turn into: end-of-file (which
        # would log the shell out) and suspend. Ctrl-C stays: it is how a stuck command is interrupted.
        self._write("\x03\n")
        self._write("stty -echo 2>/dev/null; stty eof undef susp undef dsusp undef 2>/dev/null || "
                    "stty eof undef susp undef 2>/dev/null; PS1=''; PS2=''\n")
        try:
            self._sync()
        except TransportTimeout:
            raise TransportClosed(
                f"no shell answers on {self.config.port} at {self.config.baud} baud; check the baud rate "
                "(?baud=...) and that the console is logged in at a shell prompt"
            ) from None
        for _ in range(self.config.retries):
            # The definition is the one line not checked on arrival: it is tried out before use.
            self._write(_FUNCTION + "\n")
            try:
                probe = self._exchange('echo edgert; : > "${TMPDIR:-/tmp}/.edgert-ran"', b"", 30.0, "starting")
            except _Damaged:
                self._resync()
                continue
            if probe[0] == 0 and probe[1] == "edgert\n":
                break
        else:
            raise TransportCorrupted(f"the shell on {self.name} did not take edgert's command function {self.config.retries} "
                                     f"times; {_FIX}")
        missing = self._exec(f"for t in {' '.join(_TOOLS)}; do command -v $t >/dev/null || printf '%s ' $t; done", 30,
                             "checking the tools", retry=True)[1]
        if missing.strip():
            raise TransportError(f"the shell on {self.name} lacks {missing.strip()}; install coreutils or busybox there")

    def _sync(self) -> None:
        """Finds the shell's output stream again (an unchecked printf; retried, as noise may eat it)."""
        tries = max(1, self.config.retries)
        per = max(self.config.sync_timeout / tries, 1.0)
        for attempt in range(tries):
            if attempt:
                self._write("\x03\n")
            token = secrets.token_hex(6)
            self._write(f"printf '@@%s:%s\\n' S {token}\n")
            try:
                m = self._read_until(re.compile(rb"@@S:" + token.encode() + rb"\r?\n"), time.monotonic() + per)
            except TransportTimeout:
                continue
            self._buf = self._buf[m.end():]
            self._desynced = False
            return
        raise TransportTimeout("no answer")

    def _resync(self) -> None:
        self._write("\x03\n")  # interrupt whatever the console was doing
        self._desynced = True
        try:
            self._sync()
        except TransportTimeout:
            raise TransportClosed(f"the shell on {self.name} stopped answering; reset the board or reopen the port") from None

    def _exchange(self, script: str, data: bytes, timeout: float, what: str, flip: bool = False,
                  ask: bool = True) -> tuple[int, str, str]:
        """One command through the checked function; raises _Damaged when the line damaged it
        (``ask``: if its acknowledgement is lost, ask the device whether it started)."""
        if self._port is None:
            raise TransportClosed(f"the connection to {self.name} was closed; open the device again")
        if self._desynced:
            self._resync()
        t = secrets.token_hex(6)
        payload = f"{len(data)}\n".encode() + data + script.encode()
        lines = base64.encodebytes(payload)
        if flip:
            lines = _flip(lines)
        started = time.monotonic()
        nlines = lines.count(b"\n")
        self._write(f"__edgert_x {t} {hashlib.sha256(payload).hexdigest()} {nlines}\n".encode() + lines)
        tok = t.encode()
        end_re = re.compile(rb"\r?\n@@E:" + tok + rb":(\d+|X):([0-9a-f]{64}):([0-9a-f]{64})\r?\n")
        # Acknowledged within the time the bytes take at this baud (twice), plus ack_timeout.
        ack_by = started + self.config.ack_timeout + 2 * 10 * (len(lines) + 60) / self.config.baud
        try:
            self._read_until(re.compile(rb"@@A:" + tok + rb"\r?\n|" + end_re.pattern), min(ack_by, started + timeout))
            end = self._read_until(end_re, started + timeout)
        except TransportTimeout:
            acked = re.search(rb"@@A:" + tok, self._buf) is not None
            self._resync()  # also interrupts the function if it still waits for lost lines: it cannot start later
            if acked or time.monotonic() < ack_by:
                raise TransportTimeout(f"{what} on {self.name} did not finish within {timeout:.0f} s; "
                                       "raise the timeout or check the board") from None
            raise _Damaged("was not acknowledged (the command or its acknowledgement was damaged)",
                           ran=not ask or self._started(t)) from None
        text, self._buf = self._buf[:end.start()], self._buf[end.end():]
        if end.group(1) == b"X":
            raise _Damaged("arrived damaged (its checksum failed on the device, so it did not run)", ran=False)
        text = text.replace(b"\r\n", b"\n")  # the tty turns each newline into CR LF
        begin = text.rfind(b"@@B:" + tok + b"\n")
        mid = text.rfind(b"\n@@M:" + tok + b"\n")
        if begin < 0 or mid < begin:
            raise _Damaged("came back garbled (its frame was damaged)", ran=True)
        out = text[begin + len(tok) + 5:mid]  # the newline printed before the M marker is not the command's
        err = text[mid + len(tok) + 6:]
        if hashlib.sha256(out).hexdigest().encode() != end.group(2) or hashlib.sha256(err).hexdigest().encode() != end.group(3):
            raise _Damaged("came back damaged (its output does not match the device's checksum)", ran=True)
        return int(end.group(1)), out.decode(errors="replace"), err.decode(errors="replace").strip("\n")

    def _started(self, token: str) -> bool:
        """Whether the command with ``token`` started (asked after its acknowledgement was lost);
        True when the answer cannot be had."""
        for _ in range(self.config.retries):
            try:
                rc, out, _ = self._exchange(f'grep -c {token} "${{TMPDIR:-/tmp}}/.edgert-ran"', b"", 30.0, "asking", ask=False)
            except _Damaged:
                continue
            except TransportTimeout:
                return True
            return out.strip() != "0"
        return True

    def _exec(self, script: str, timeout: float, what: str = "the command", *, data: bytes = b"",
              retry: bool = False, chunk: bool = False) -> tuple[int, str, str]:
        """Runs a shell snippet (any length, may span lines) with the file "$__data" holding ``data``;
        returns (status, stdout, stderr). A command damaged on the way out is always sent again (it
        did not run); one that may have run only when ``retry`` says repeating it is harmless."""
        deadline = time.monotonic() + timeout
        for attempt in range(self.config.retries):
            flip = False
            if chunk:
                flip = self.chunks_sent == self.corrupt_chunk and attempt == 0
                self.chunks_sent += 1
                self.chunks_resent += attempt > 0
            try:
                return self._exchange(script, data, max(deadline - time.monotonic(), 1.0), what, flip)
            except _Damaged as exc:
                if exc.ran and not retry:
                    raise TransportCorrupted(
                        f"the reply of {what} on {self.name} {exc.why}; it may have run and is not run again "
                        f"(it may not be safe to repeat): run it again once the line is fixed; {_FIX}") from None
                self.damaged += 1
                last = exc.why
        raise TransportCorrupted(f"{what} on {self.name} {last}, {self.config.retries} times in a row; {_FIX}")

    # -- Transport -----------------------------------------------------
    @property
    def arch(self) -> str:
        if self._arch is None:
            rc, out, err = self._exec("uname -m", 30, "uname -m", retry=True)
            if rc != 0 or not out.strip():
                raise TransportError(f"'uname -m' failed on {self.name}: {err.strip()}; is it a Linux shell?")
            self._arch = out.strip()
        return self._arch

    def workdir(self) -> str:
        if not self._made_workdir:
            rc, _, err = self._exec(f"mkdir -p {path_arg(self.config.workdir)}", 30, "mkdir", retry=True)
            if rc != 0:
                raise TransportError(f"cannot create {self.config.workdir} on {self.name}: {err}; choose another with ?workdir=DIR")
            self._made_workdir = True
        return self.config.workdir

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        # Not retried once it may have started: see the module docstring of edgert.device.transport.
        rc, out, err = self._exec(shlex.join(str(a) for a in argv), timeout, f"'{posixpath.basename(str(argv[0]))}'")
        return Completed(rc, out, err)

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        local = Path(local)
        if local.is_dir():
            for f in sorted(p for p in local.rglob("*") if p.is_file()):
                self.push(f, posixpath.join(remote, f.relative_to(local).as_posix()), timeout)
            return
        deadline = time.monotonic() + timeout
        data = local.read_bytes()
        q, part = path_arg(remote), path_arg(remote + ".edgert-part")
        what = f"pushing {local.name}"
        self._checked(f"mkdir -p {path_arg(posixpath.dirname(remote) or '.')} && : > {part}", deadline, what)
        step = self.config.chunk_bytes
        for k, offset in enumerate(range(0, max(len(data), 1), step)):
            chunk = data[offset:offset + step]
            # Written at its offset and read back: doing it twice leaves the same file.
            out = self._checked(
                f'dd if="$__data" of={part} bs={step} seek={k} conv=notrunc 2>/dev/null && '
                f"dd if={part} bs={step} skip={k} count=1 2>/dev/null | sha256sum", deadline, what, data=chunk, chunk=True)
            if not out.startswith(hashlib.sha256(chunk).hexdigest()):
                raise TransportError(f"a chunk of {local.name} did not stick in {remote} on {self.name}; "
                                     "check the device's free space and storage")
        mode = f"chmod 755 {q}; " if local.stat().st_mode & 0o111 else ""
        whole = hashlib.sha256(data).hexdigest()
        # Done twice (a damaged reply), the second finds the part already moved and the file right.
        out = self._checked(
            f"case $(sha256sum < {q} 2>/dev/null) in {whole}*) rm -f {part};; *) case $(sha256sum < {part}) in "
            f"{whole}*) mv -f {part} {q};; *) echo BAD; exit 0;; esac;; esac; {mode}echo OK", deadline, what)
        if out.strip() != "OK":
            raise TransportError(f"{remote} on {self.name} does not match {local.name} after sending; "
                                 "check the device's free space and storage")

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        q = path_arg(remote)
        what = f"reading {remote}"
        size_text = self._checked(f"wc -c < {q}", deadline, what)
        try:
            size = int(size_text.split()[0])
        except (ValueError, IndexError):
            raise TransportError(f"cannot read the size of {remote} on {self.name}: {size_text!r}") from None
        step = self.config.chunk_bytes
        parts = []
        for k in range(max(1, -(-size // step))):
            out = self._checked(f"dd if={q} bs={step} skip={k} count=1 2>/dev/null | base64", deadline, f"pulling {remote}")
            try:
                parts.append(base64.b64decode("".join(out.split()), validate=True))
            except ValueError:
                raise TransportError(f"{remote} on {self.name} came back as no base64; is base64 there coreutils or busybox?") from None
        data = b"".join(parts)
        there = self._checked(f"sha256sum < {q}", deadline, what)
        if len(data) != size or not there.startswith(hashlib.sha256(data).hexdigest()):
            raise TransportError(f"{remote} on {self.name} changed while it was being read; pull it again")
        from edgert.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(local), data)

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None

    # -- helpers -------------------------------------------------------
    def _checked(self, script: str, deadline: float, what: str, **kw) -> str:
        """An idempotent step of the transport's own (repeated if damaged); TransportError if it fails."""
        rc, out, err = self._exec(script, max(deadline - time.monotonic(), 1.0), what, retry=True, **kw)
        if rc != 0:
            raise TransportError(f"{what} failed on {self.name}: {err.strip() or f'exit code {rc}'}")
        return out


_FIX = ("the serial line is damaging data: lower the baud rate (?baud=...), use a shorter or shielded cable, "
        "and check its ground connection")


def _flip(b64_lines: bytes) -> bytes:
    """One base64 character changed (still valid base64, so only the checksum can catch it)."""
    i = min(10, len(b64_lines.split(b"\n", 1)[0]) - 1)
    return b64_lines[:i] + (b"A" if b64_lines[i:i + 1] != b"A" else b"B") + b64_lines[i + 1:]
