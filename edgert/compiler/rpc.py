"""Measuring on the device over TVM RPC: the bundle runner in RPC server mode, and
MetaSchedule's builder/runner pointed at it.

ARM timings only come from ARM hardware, so tuning uploads each candidate library to the
device and times it there. The device runs ``edgert-run --rpc-server`` (TVM's own RPC
protocol, served by libtvm_runtime); it listens on the device's 127.0.0.1 only and is reached
through a transport's port forward, or through a TVM RPC tracker for a device farm.

    with rpc_server("generic-aarch64", "qemu") as endpoint:
        builder, runner = ms_builder_runner("generic-aarch64", endpoint)
        ...                                  # MetaSchedule tuning with builder/runner
        runner.check()                       # TuningError if nothing could be measured

or, all in one (what ``edgert tune --device/--tracker`` uses)::

    with remote_measurement(tgt, device="qemu") as (builder, runner):
        ...

A transport (ssh, adb) plugs in by implementing :class:`RPCTransport`: push the runner and
its runtime libraries, run a command in the background, forward ports.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import posixpath
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgert.compiler.targets import Target, load_target
from edgert.errors import MissingDependencyError, RunError, TargetError, TuningError

RPC_MAGIC = 0xFF271
_PROBE_KEY = b"client:edgert-probe"  # the runner answers it with a quiet "mismatch"
_ARTIFACT_PREFIX = "edgert-ms-"


# ------------------------------------------------------------------ endpoint


@dataclass(frozen=True)
class RPCEndpoint:
    """Where MetaSchedule reaches a device's RPC server from this machine.

    Direct: ``host``/``port`` (a local forward of the device's port) and the match ``key``
    ("" by default). Tracker: ``tracker_host``/``tracker_port`` and the device ``key``.
    ``session_timeout`` bounds one session on the server (it kills longer ones).
    """

    host: str | None = None
    port: int | None = None
    key: str = ""
    tracker_host: str | None = None
    tracker_port: int | None = None
    session_timeout: int = 60
    server_pid: int | None = None  # the server's process id on the device (None: not started by edgert)

    @property
    def via_tracker(self) -> bool:
        return self.tracker_host is not None

    def describe(self) -> str:
        if self.via_tracker:
            return f"key '{self.key}' at the RPC tracker {self.tracker_host}:{self.tracker_port}"
        return f"the RPC server at {self.host}:{self.port}"

    def connect(self):
        """A ``tvm.rpc.RPCSession`` on the device (for checks and tests; MetaSchedule opens its own)."""
        if self.via_tracker:
            return _tracker_session(self.session_timeout, _rpc_config(self))
        return _direct_session(self.host, self.port, self.key, self.session_timeout, None)


def _rpc_config(endpoint: RPCEndpoint):
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    if endpoint.via_tracker:
        host, port, key = endpoint.tracker_host, endpoint.tracker_port, endpoint.key
    else:
        # RPCConfig insists on tracker fields; direct sessions never use them (f_create_session does).
        host, port, key = endpoint.host, endpoint.port, endpoint.key or "direct"
    return RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key, session_timeout_sec=endpoint.session_timeout)


# Module-level so MetaSchedule's worker processes unpickle them by reference.
def _direct_session(host, port, key, timeout, _rpc_config):
    from tvm import rpc

    return rpc.connect(host, port, key=key, session_timeout=timeout)


def _tracker_session(timeout, rpc_config):
    from tvm import rpc

    host, port, key = rpc_config.tracker_host, rpc_config.tracker_port, rpc_config.tracker_key
    tracker = rpc.connect_tracker(host, port)
    # A key no server registered would make the request wait forever: say so at once.
    queues = tracker.summary().get("queue_info", {})
    if key not in queues:
        known = ", ".join(sorted(queues)) or "none"
        raise RuntimeError(
            f"the RPC tracker at {host}:{port} has no device registered under key '{key}' (keys there: {known}); "
            f"start the device's server with --key {key} or fix the key"
        )
    tracker._sock.settimeout(timeout)  # a busy or vanished device: give up after one session's time
    return tracker.request(key, priority=rpc_config.session_priority, session_timeout=timeout, max_retry=1)


def _upload_module(session, local_path, remote_path):
    session.upload(local_path, remote_path)
    return session.load_module(remote_path)


def _build(mod, target, _params):
    """MetaSchedule's default build minus its `import tvm.s_tir.tensor_intrin`: that parses every
    GPU intrinsic (~10 s per builder process, and LocalBuilder starts new ones for each batch);
    tensorized candidates already carry their intrinsic bodies, inlined when scheduled."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from edgert.compiler import tir_lowering
    from edgert.compiler.schedules.base import enable_vector_rounding

    enable_vector_rounding()  # a builder worker process: as the compile does
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target, pipeline=tir_lowering.register())


def _export_shared(cxx: str, parent: str, mod) -> str:
    """MetaSchedule export: a shared library linked by the target's compiler (the device has none).
    One folder per candidate (MetaSchedule removes it after measuring), all under ``parent``."""
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="candidate-", dir=parent)
    path = os.path.join(folder, "tvm_tmp_mod.so")
    try:
        mod.export_library(path, cc=cxx)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


# ------------------------------------------------------------------ transports


class BackgroundCommand(Protocol):
    """A command a transport runs in the background on the device."""

    def readline(self, timeout: float) -> str | None:
        """Next line of its stdout, or None if none came within ``timeout`` seconds or it ended."""

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""

    def stop(self) -> None:
        """Ends it and everything it started; safe to call twice."""

    def log_tail(self) -> str:
        """The last lines of its stderr, for error messages."""


class RPCTransport(Protocol):
    """What a device connection gives RPC tuning. ssh and adb implement it with scp/push,
    a background shell command, and ``ssh -L``/``-R`` or ``adb forward``/``reverse``."""

    name: str
    arch: str
    shares_network: bool  # True: the device's 127.0.0.1 is this machine's (local, qemu-user)

    def push_runner(self, target: Target) -> str:
        """Puts bin/edgert-run and its lib/ (libedgert, libtvm_runtime, libtvm_ffi) in a private
        folder on the device; returns the runner's path there. The server keeps its work files
        in that folder too; close() removes it."""

    def spawn(self, argv: list[str]) -> BackgroundCommand:
        """Runs argv on the device in the background."""

    def forward(self, device_port: int, local_port: int | None = None) -> int:
        """Makes the device's 127.0.0.1:device_port reachable at this machine's 127.0.0.1; returns
        the local port (``local_port`` if given and the transport can choose)."""

    def reverse(self, host_port: int) -> int:
        """Makes this machine's 127.0.0.1:host_port reachable on the device; returns the device port."""

    def close(self) -> None:
        """Removes the forwards and what push_runner put on the device."""


def _die_with_parent() -> None:
    # Runs in the child before exec: the server gets SIGTERM if this Python process dies
    # (even by SIGKILL), so no orphan servers are left behind.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _LocalProcess:
    """A background process on this machine, in its own process group."""

    def __init__(self, argv: list[str], log_path: Path):
        self._log_path = log_path
        with open(log_path, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                    start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            except OSError as exc:
                raise RunError(f"cannot start {argv[0]}: {exc.strerror}") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self._proc.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    def readline(self, timeout: float) -> str | None:
        try:
            return self._lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def poll(self) -> int | None:
        return self._proc.poll()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)  # the server removes its work folder on SIGTERM
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)  # whatever is left of the group (session children)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        if self._proc.stdout:
            self._proc.stdout.close()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class LocalTransport:
    """This machine as the device: natively, or aarch64 under qemu-user (which shares the host's
    network, so no forwarding is needed)."""

    shares_network = True

    def __init__(self, device=None):
        from edgert.device.local import LocalDevice

        self.device = device or LocalDevice()
        self.name = self.device.name
        self.arch = self.device.arch
        self._dir = Path(tempfile.mkdtemp(prefix="edgert-rpc-device-"))

    def push_runner(self, target: Target) -> str:
        from edgert.compiler import toolchain

        native = toolchain.build_native(target)
        libs = toolchain.runtime_libs(target)
        (self._dir / "bin").mkdir(exist_ok=True)
        (self._dir / "lib").mkdir(exist_ok=True)
        # Copies, laid out as in a bundle: the runner finds lib/ through its $ORIGIN/../lib rpath.
        shutil.copy2(native.runner, self._dir / "bin" / "edgert-run")
        shutil.copy2(native.libedgert, self._dir / "lib" / "libedgert.so")
        for rel, src in libs.files.items():
            shutil.copy2(src, self._dir / rel)
        return str(self._dir / "bin" / "edgert-run")

    def spawn(self, argv: list[str]) -> BackgroundCommand:
        log = Path(tempfile.mkstemp(prefix="server-", suffix=".log", dir=self._dir)[1])
        return _LocalProcess(self.device.wrap([str(a) for a in argv]), log)

    def forward(self, device_port: int, local_port: int | None = None) -> int:
        return device_port

    def reverse(self, host_port: int) -> int:
        return host_port

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class _SSHProcess(_LocalProcess):
    """A command on an ssh device with its output streamed back. sshd starts each command as a
    session leader, so its process id is also the group of everything it forks; stop() signals
    that group on the device (ending the local ssh client alone would leave it running there)."""

    def __init__(self, ssh, argv: list[str], log_path: Path):
        import shlex

        remote = f"echo EDGERT_PID $$; exec {shlex.join(str(a) for a in argv)}"
        super().__init__([*ssh.ssh_args("-o", "ControlMaster=no"), "--", ssh.config.destination, remote], log_path)
        self._ssh = ssh
        self._pid = None
        deadline = time.monotonic() + 60
        while self._pid is None and time.monotonic() < deadline:  # skips what login scripts print first
            line = self.readline(deadline - time.monotonic())
            if line is None:
                break
            if line.startswith("EDGERT_PID "):
                self._pid = int(line.split()[1])

    def stop(self) -> None:
        from edgert.device.transport import sh
        from edgert.errors import EdgertError

        if self._pid is not None:
            for sig in ("TERM", "KILL"):  # TERM first: the server removes its work folder
                with contextlib.suppress(EdgertError):
                    self._ssh.run(sh(f'kill -{sig} -"$1" 2>/dev/null', str(self._pid)), timeout=15)
                deadline = time.monotonic() + 10
                while self.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self.poll() is not None:
                    break
            self._pid = None
        super().stop()


class SSHRPCTransport:
    """A board over ssh (an :class:`edgert.device.ssh.SSHTransport`): the runner goes to a private
    folder in its workdir, the server runs as a background ssh command, and ports are forwarded
    through the ssh master connection (``ssh -O forward -L/-R``)."""

    shares_network = False

    def __init__(self, ssh):
        self.ssh = ssh
        self.name = ssh.name
        self.arch = ssh.arch
        self._dir: str | None = None
        self._logs = Path(tempfile.mkdtemp(prefix="edgert-rpc-ssh-"))

    def push_runner(self, target: Target) -> str:
        import uuid

        from edgert.compiler import toolchain

        native = toolchain.build_native(target)
        libs = toolchain.runtime_libs(target)
        stage = self._logs / "runner"
        (stage / "bin").mkdir(parents=True, exist_ok=True)
        (stage / "lib").mkdir(exist_ok=True)
        shutil.copy2(native.runner, stage / "bin" / "edgert-run")
        shutil.copy2(native.libedgert, stage / "lib" / "libedgert.so")
        for rel, src in libs.files.items():
            shutil.copy2(src, stage / rel)
        self._dir = posixpath.join(self.ssh.workdir(), f"rpc-{uuid.uuid4().hex[:12]}")
        self.ssh.push(stage, self._dir)
        return posixpath.join(self._dir, "bin", "edgert-run")

    def spawn(self, argv: list[str]) -> BackgroundCommand:
        log = Path(tempfile.mkstemp(prefix="server-", suffix=".log", dir=self._logs)[1])
        return _SSHProcess(self.ssh, argv, log)

    def _mux(self, *args: str) -> str:
        try:
            p = subprocess.run([*self.ssh.ssh_args(*args), "--", self.ssh.config.destination],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise TuningError(f"port forwarding on {self.name} did not answer within 30 s") from None
        if p.returncode != 0:
            raise TuningError(f"port forwarding on {self.name} failed: {p.stderr.strip()}; check that its sshd "
                              "allows forwarding (AllowTcpForwarding)")
        return p.stdout

    def forward(self, device_port: int, local_port: int | None = None) -> int:
        local_port = local_port or _free_port()
        self._mux("-O", "forward", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{device_port}")
        return local_port

    def reverse(self, host_port: int) -> int:
        out = self._mux("-O", "forward", "-R", f"127.0.0.1:0:127.0.0.1:{host_port}")
        try:
            return int(out.strip().split()[-1])  # ssh prints the port the device side got
        except (ValueError, IndexError):
            raise TuningError(f"port forwarding on {self.name} gave no port ({out.strip()!r})") from None

    def close(self) -> None:
        from edgert.errors import EdgertError

        if self._dir is not None:
            with contextlib.suppress(EdgertError):
                self.ssh.run(["rm", "-rf", self._dir], timeout=30)
            self._dir = None
        self.ssh.close()  # ends the master connection and with it every forward
        shutil.rmtree(self._logs, ignore_errors=True)


def open_transport(device: str | RPCTransport) -> RPCTransport:
    """A transport for a device spec (``local``, ``qemu``, ``ssh://...``) or an :class:`RPCTransport` object."""
    if not isinstance(device, str):
        return device
    from edgert.device import open_device

    if device in ("local", "qemu"):
        return LocalTransport(open_device(device))
    if device.startswith("ssh://"):
        return SSHRPCTransport(open_device(device))
    if device.startswith("adb"):
        raise TuningError(
            f"tuning over RPC on '{device}' needs adb port forwarding, which this edgert version lacks; "
            "start 'edgert-run --rpc-server --tracker HOST:PORT --key KEY' on the phone and pass --tracker/--key"
        )
    raise TuningError(f"unknown device '{device}'; RPC tuning runs on: local, qemu, ssh://USER@HOST "
                      "(or --tracker HOST:PORT --key KEY)")


# ------------------------------------------------------------------ the server on the device


def parse_hostport(text: str | tuple[str, int], what: str = "--tracker") -> tuple[str, int]:
    """("host", port) from "HOST:PORT" or a tuple; TuningError on a bad value."""
    if isinstance(text, tuple):
        return str(text[0]), int(text[1])
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TuningError(f"{what} takes HOST:PORT (e.g. 127.0.0.1:9190), got '{text}'")
    return host, int(port)


@contextlib.contextmanager
def rpc_server(
    target: str | Target,
    device: str | RPCTransport = "qemu",
    *,
    key: str | None = None,
    tracker: str | tuple[str, int] | None = None,
    session_timeout: int = 60,
    start_timeout: float = 60.0,
) -> Iterator[RPCEndpoint]:
    """Runs ``edgert-run --rpc-server`` on the device for the duration of the block.

    ``device``: "qemu", "local" or a transport. The server binds the device's 127.0.0.1 on a free
    port; this machine reaches it through the transport's forward. With ``tracker`` ("HOST:PORT"
    of a TVM RPC tracker this machine reaches) it registers there under ``key`` (default: the
    target's name) and the endpoint goes through the tracker; otherwise it is direct, with match
    key ``key`` (default ""). The server is stopped on exit, whatever ends the block.
    """
    tgt = target if isinstance(target, Target) else load_target(target)
    if tgt.is_cuda:
        raise TuningError(f"{tgt.name} is a CUDA target; RPC measurement covers CPU targets only")
    tracker_addr = parse_hostport(tracker) if tracker is not None else None
    key = (key if key is not None else (tgt.name if tracker_addr else "")).strip()
    if any(c.isspace() or c in '"\\' for c in key):
        raise TuningError(f"the RPC key '{key}' must not contain spaces, quotes or backslashes")
    transport = open_transport(device)
    proc: BackgroundCommand | None = None
    try:
        if transport.arch != tgt.arch:
            raise TargetError(
                f"target '{tgt.name}' is {tgt.arch} but device '{transport.name}' runs {transport.arch}; "
                f"pick a {transport.arch} target or another device (qemu runs aarch64)"
            )
        runner = transport.push_runner(tgt)
        # The work folder sits beside the pushed runner, so close() removes it even if the server
        # could not (killed with SIGKILL, device rebooted).
        argv = [runner, "--rpc-server", "--host", "127.0.0.1", "--port", "0", "--work-dir", posixpath.dirname(posixpath.dirname(runner))]
        if key:
            argv += ["--key", key]
        local_port = None
        if tracker_addr:
            argv += ["--tracker", f"127.0.0.1:{transport.reverse(tracker_addr[1])}"]
            if not transport.shares_network:
                # The tracker hands clients the address they reach the device at: our forward.
                local_port = _free_port()
                argv += ["--custom-addr", f"127.0.0.1:{local_port}"]
        proc = transport.spawn(argv)
        device_port, pid = _wait_listening(proc, transport.name, start_timeout)
        local_port = transport.forward(device_port, local_port)
        _wait_answering("127.0.0.1", local_port, proc, transport.name, start_timeout)
        if tracker_addr:
            endpoint = RPCEndpoint(
                key=key, tracker_host=tracker_addr[0], tracker_port=tracker_addr[1], session_timeout=session_timeout,
                server_pid=pid,
            )
            _wait_registered(endpoint, proc, transport.name, start_timeout)
        else:
            endpoint = RPCEndpoint(
                host="127.0.0.1", port=local_port, key=key, session_timeout=session_timeout, server_pid=pid
            )
        yield endpoint
    finally:
        if proc is not None:
            proc.stop()
        transport.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_failed(proc: BackgroundCommand, where: str, what: str) -> TuningError:
    tail = proc.log_tail()
    return TuningError(f"the RPC server on {where} {what}" + (f"; its log ends with:\n{tail}" if tail else ""))


def _wait_listening(proc: BackgroundCommand, where: str, timeout: float) -> tuple[int, int | None]:
    """The port and pid from the runner's 'EDGERT {"status":"listening",...}' line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.readline(min(1.0, deadline - time.monotonic()))
        if line is None:
            if proc.poll() is not None:
                raise _server_failed(proc, where, f"exited with status {proc.poll()} before listening")
            continue
        if not line.startswith("EDGERT "):
            continue
        try:
            info = json.loads(line[len("EDGERT "):])
        except json.JSONDecodeError:
            continue
        if info.get("status") == "listening":
            _require_loopback(info.get("host"), where)
            return int(info["port"]), info.get("pid")
        if info.get("status") == "error":
            raise TuningError(f"the RPC server on {where} failed: {info.get('message', line)}")
    raise _server_failed(proc, where, f"did not start listening within {timeout:.0f} s")


def _require_loopback(host: object, where: str) -> None:
    """TVM RPC is unauthenticated: edgert only uses a server bound to the device's loopback and
    reaches it through the transport's forward. A server that says it bound anything else (an old
    or modified runner) is refused rather than used."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise TuningError(
            f"the RPC server on {where} listens on {host}, not on loopback; TVM RPC has no authentication, "
            "so edgert only uses a server bound to 127.0.0.1 behind an ssh/adb forward. Update the runner "
            "on the device (redeploy the bundle) and retry"
        )


def _wait_answering(host: str, port: int, proc: BackgroundCommand, where: str, timeout: float) -> None:
    """Waits until a TVM RPC server answers a handshake at host:port (through any forward)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _server_failed(proc, where, f"exited with status {proc.poll()}")
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(struct.pack("<ii", RPC_MAGIC, len(_PROBE_KEY)) + _PROBE_KEY)
                reply = s.recv(4)
            if len(reply) == 4 and RPC_MAGIC <= struct.unpack("<i", reply)[0] <= RPC_MAGIC + 2:
                return
            last = f"not a TVM RPC server (reply {reply!r})"
        except OSError as exc:
            last = exc.strerror or str(exc)
        time.sleep(0.2)
    raise _server_failed(proc, where, f"does not answer at {host}:{port} ({last})")


def _wait_registered(endpoint: RPCEndpoint, proc: BackgroundCommand, where: str, timeout: float) -> None:
    """Waits until the tracker offers a free server under the endpoint's key."""
    from tvm import rpc

    deadline = time.monotonic() + timeout
    last = "not registered"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise _server_failed(proc, where, f"exited with status {proc.poll()}")
        try:
            tracker = rpc.connect_tracker(endpoint.tracker_host, endpoint.tracker_port)
            try:
                free = tracker.summary().get("queue_info", {}).get(endpoint.key, {}).get("free", 0)
            finally:
                tracker.close()
            if free > 0:
                return
        except (OSError, RuntimeError) as exc:
            last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        time.sleep(0.3)
    raise _server_failed(proc, where, f"did not register with {endpoint.describe()} within {timeout:.0f} s ({last})")


# ------------------------------------------------------------------ MetaSchedule builder / runner


@dataclass
class MeasureStats:
    """What the builder and runner saw; shared by both."""

    where: str
    fail_fast: int
    built: int = 0
    build_failed: int = 0
    measured: int = 0
    run_failed: int = 0
    first_error: str | None = None
    errors: list[str] = field(default_factory=list)

    def failure(self, stage: str, message: str) -> None:
        line = _error_line(message)
        if self.first_error is None:
            self.first_error = f"{stage} failed: {line}"
        if len(self.errors) < 20:
            self.errors.append(f"{stage}: {line}")
        if stage == "build":
            self.build_failed += 1
            if self.built == 0 and self.build_failed >= self.fail_fast:
                raise self.error()
        else:
            self.run_failed += 1
            if self.measured == 0 and self.run_failed >= self.fail_fast:
                raise self.error()

    def error(self) -> TuningError:
        tried = self.built + self.build_failed
        return TuningError(
            f"none of the {tried} candidates tried could be measured on {self.where} "
            f"({self.build_failed} failed to build, {self.run_failed} failed to run); first error: {self.first_error}; "
            "check that the device is reachable and its server (edgert-run --rpc-server) runs, and that the "
            "target matches the device"
        )

    def check(self) -> None:
        """TuningError if candidates were tried and none was measured."""
        if self.measured == 0 and (self.build_failed or self.run_failed):
            raise self.error()


def _error_line(message: str) -> str:
    """The informative line of a MetaSchedule error (they wrap tracebacks)."""
    lines = [ln.strip() for ln in str(message).strip().splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("RPCRunner: An exception", "LocalBuilder: An exception"))]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) and " " not in head:
            return ln
    return lines[-1] if lines else "unknown error"


def tuning_target(target: str | Target, num_cores: int | None = None):
    """The target's tvm Target with the "num-cores" MetaSchedule needs (default: the target's cores, else 1)."""
    import tvm

    tgt = target if isinstance(target, Target) else load_target(target)
    config = dict(tgt.tvm_target().export())
    config["num-cores"] = int(num_cores or config.get("num-cores") or tgt.cores or 1)
    return tvm.target.Target(config)


def ms_builder_runner(
    target: str | Target,
    endpoint: RPCEndpoint,
    *,
    evaluator_config: Any = None,
    build_timeout: float = 60.0,
    max_workers: int | None = None,
    fail_fast: int = 8,
):
    """MetaSchedule ``(builder, runner)`` that build for ``target`` here and measure at ``endpoint``.

    The builder links each candidate with the target's cross compiler into a .so (the device
    needs no compiler); the runner is MetaSchedule's RPCRunner, direct or through the tracker.
    Both count outcomes in ``runner.stats`` (a :class:`MeasureStats`); once ``fail_fast``
    candidates failed to build (or to run) and none succeeded, they raise TuningError naming
    the first error, and ``runner.check()`` raises it after tuning if nothing was measured.
    ``runner.close()`` removes the built libraries MetaSchedule left (also done at garbage collection).
    ``evaluator_config``: a ``meta_schedule.runner.EvaluatorConfig`` (default: number=3,
    repeat=1, min_repeat_ms=100).
    """
    import tvm_ffi
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import LocalBuilder, PyBuilder
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner, PyRunnerFuture, RPCRunner, RunnerResult

    from edgert.compiler.toolchain import find_cxx

    # Our futures' result() is called through TVM's FFI; registered, TuningError comes out as itself.
    tvm_ffi.register_error("edgert.TuningError", TuningError)
    tgt = target if isinstance(target, Target) else load_target(target)
    stats = MeasureStats(where=endpoint.describe(), fail_fast=max(1, fail_fast))
    cxx = find_cxx(tgt)
    # Built candidates live here until close() (or garbage collection) removes what is left.
    artifacts = tempfile.mkdtemp(prefix=_ARTIFACT_PREFIX)
    remove_artifacts = weakref.finalize(stats, shutil.rmtree, artifacts, True)
    local_builder = LocalBuilder(
        max_workers=max_workers or 1, timeout_sec=build_timeout, f_build=_build,
        f_export=functools.partial(_export_shared, cxx, artifacts),
    )
    if endpoint.via_tracker:
        create = functools.partial(_tracker_session, endpoint.session_timeout)
    else:
        create = functools.partial(_direct_session, endpoint.host, endpoint.port, endpoint.key, endpoint.session_timeout)
    rpc_runner = RPCRunner(
        rpc_config=_rpc_config(endpoint),
        evaluator_config=evaluator_config or EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100),
        f_create_session=create,
        f_upload_module=_upload_module,
        max_workers=1,  # one session at a time: timings on a shared device would disturb each other
    )

    @derived_object
    class _Builder(PyBuilder):
        def __init__(self):
            super().__init__()
            self.stats = stats

        def build(self, build_inputs):
            results = local_builder.build(build_inputs)
            for r in results:
                if r.error_msg:
                    stats.failure("build", r.error_msg)
                else:
                    stats.built += 1
            return results

    @derived_object
    class _Future(PyRunnerFuture):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.outcome = inner, None

        def done(self):
            return self.inner.done()

        def result(self):
            if self.outcome is None:
                r = self.inner.result()
                if r.error_msg is None and not (r.run_secs and all(0 < float(t) < 1e9 for t in r.run_secs)):
                    r = RunnerResult(None, f"implausible run times {[float(t) for t in r.run_secs or []]}")
                self.outcome = r
                if r.error_msg is not None:
                    stats.failure("run", r.error_msg)
                else:
                    stats.measured += 1
            return self.outcome

    @derived_object
    class _Runner(PyRunner):
        def __init__(self):
            super().__init__()
            self.stats = stats

        def run(self, runner_inputs):
            futures = rpc_runner.run(runner_inputs)
            return [_Future(f) for f in futures]

        def check(self):
            stats.check()

        def close(self):
            remove_artifacts()

    return _Builder(), _Runner()


@contextlib.contextmanager
def remote_measurement(
    target: str | Target,
    device: str | RPCTransport | None = None,
    *,
    tracker: str | tuple[str, int] | None = None,
    key: str | None = None,
    evaluator_config: Any = None,
    session_timeout: int = 60,
):
    """``(builder, runner)`` measuring on a device, for the block's duration.

    - ``device`` only: starts the device's RPC server and measures there directly;
    - ``device`` and ``tracker``: the device's server registers at the tracker under ``key``
      and the runner goes through the tracker;
    - ``tracker`` and ``key`` only: boards already registered at a tracker (a device farm).
    On a normal exit, raises TuningError if candidates were tried and none could be measured.
    """
    tgt = target if isinstance(target, Target) else load_target(target)
    if device is None and tracker is None:
        raise TuningError("measuring remotely needs --device or --tracker HOST:PORT --key KEY")
    with contextlib.ExitStack() as stack:
        if device is not None:
            endpoint = stack.enter_context(
                rpc_server(tgt, device, key=key, tracker=tracker, session_timeout=session_timeout)
            )
        else:
            if not key:
                raise TuningError("--tracker needs --key (the device key the boards registered with)")
            host, port = parse_hostport(tracker)
            endpoint = RPCEndpoint(key=key, tracker_host=host, tracker_port=port, session_timeout=session_timeout)
        builder, runner = ms_builder_runner(tgt, endpoint, evaluator_config=evaluator_config)
        stack.callback(runner.close)
        yield builder, runner
        runner.check()


@contextlib.contextmanager
def local_tracker(host: str = "127.0.0.1") -> Iterator[tuple[str, int]]:
    """A TVM RPC tracker on this machine (its own process) for the block; yields (host, port)."""
    try:
        from tvm.rpc.tracker import Tracker
    except ImportError:
        raise MissingDependencyError("TVM's RPC tracker needs tornado; run: pip install tornado") from None

    tracker = Tracker(host=host, port=9190, port_end=9290, silent=True)
    try:
        yield tracker.host, tracker.port
    finally:
        tracker.terminate()


__all__ = [
    "RPCEndpoint",
    "RPCTransport",
    "BackgroundCommand",
    "LocalTransport",
    "SSHRPCTransport",
    "MeasureStats",
    "open_transport",
    "rpc_server",
    "ms_builder_runner",
    "remote_measurement",
    "local_tracker",
    "tuning_target",
]
