"""A device over the system's OpenSSH client, so users' keys, ~/.ssh/config and jump hosts work.

One master connection per transport (ControlMaster, socket in a private folder) carries every
call, so the many small commands of a deploy cost a round trip each, not a handshake. Files
travel as ``cat``/``tar`` streams over that connection: the device needs no sftp server (many
boards run dropbear), and file names are shell-quoted arguments, never pasted into commands.

A dropped connection (the ssh client exits 255 with the master gone) is TransportClosed. Known
limit: a command whose session drops is not signalled by sshd (no terminal is allocated), so a
runner cut off mid-profile runs on until its runs are done.
"""
from __future__ import annotations

import contextlib
import posixpath
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgert.device.transport import Completed, TransportClosed, TransportError, TransportTimeout, path_arg, remote_arch
from edgert.errors import MissingDependencyError

# Messages the ssh client prints when the connection (not the remote command) failed.
_AUTH = ("Permission denied", "Too many authentication failures")
_HOSTKEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "No ED25519 host key is known",
            "host key is known")
_UNREACHABLE = ("Connection refused", "Connection timed out", "Could not resolve hostname", "No route to host",
                "Connection closed", "Connection reset", "connect to host", "Broken pipe", "kex_exchange_identification",
                "Network is unreachable", "Operation timed out", "port forwarding failed", "Timeout, server")


@dataclass(frozen=True)
class SSHConfig:
    host: str
    user: str | None = None
    port: int | None = None
    workdir: str | None = None  # on the device; default ~/.cache/edgert (relative: under the home folder)
    config_file: Path | None = None  # an ssh_config for this device only (ssh -F), instead of ~/.ssh/config
    connect_timeout: float = 15.0
    keepalive: int = 300  # seconds the master connection outlives its last use (if close() is never called)
    target: str | None = None  # the board it is (?target=NAME): bundles for other boards are refused

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def spec(self) -> str:
        return f"ssh://{self.destination}" + (f":{self.port}" if self.port else "")


class SSHTransport:
    def __init__(self, config: SSHConfig) -> None:
        if shutil.which("ssh") is None:
            raise MissingDependencyError("the ssh client is not installed; install OpenSSH (apt-get install openssh-client)")
        self.config = config
        self.name = config.spec
        self.target = config.target
        self._ctl_dir: str | None = tempfile.mkdtemp(prefix="edgert-ssh-")
        self._master_started = False
        self._arch: str | None = None
        self._home: str | None = None
        self._workdir: str | None = None

    # -- the ssh command line ------------------------------------------
    def ssh_args(self, *extra: str) -> list[str]:
        """ssh and its options up to (not including) the destination."""
        if self._ctl_dir is None:
            raise TransportClosed(f"the connection to {self.name} was closed; open the device again")
        c = self.config
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(c.connect_timeout)}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", f"ControlPath={self._ctl_dir}/%C", *extra]
        if c.config_file:
            args[1:1] = ["-F", str(c.config_file)]
        if c.port:
            args += ["-p", str(c.port)]
        return args

    def _ensure_master(self) -> None:
        # Started explicitly, backgrounded (-f) with its output in a file: a master started by
        # ControlMaster=auto inside a call would keep that call's pipes open until it exits.
        if self._ctl_dir is None:
            raise TransportClosed(f"the connection to {self.name} was closed; open the device again")
        if self._master_started:
            return
        log = Path(self._ctl_dir, "master.log")
        cmd = [*self.ssh_args("-o", "ControlMaster=yes", "-o", f"ControlPersist={self.config.keepalive}",
                              "-N", "-f"), "--", self.config.destination]
        with open(log, "wb") as out:
            try:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
                                   timeout=self.config.connect_timeout + 15)
            except subprocess.TimeoutExpired:
                raise TransportTimeout(
                    f"ssh to {self.name} did not connect within {self.config.connect_timeout + 15:.0f} s; "
                    f"check that '{self._hint()} true' works"
                ) from None
        if p.returncode != 0:
            raise self._connection_error(log.read_text(errors="replace"))
        self._master_started = True

    def _hint(self) -> str:
        c = self.config
        return "ssh" + (f" -F {c.config_file}" if c.config_file else "") + (f" -p {c.port}" if c.port else "") + f" {c.destination}"

    def _connection_error(self, stderr: str) -> TransportError:
        lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("Warning:")]
        msg = lines[-1] if lines else "ssh failed"
        if any(s in stderr for s in _AUTH):
            return TransportError(
                f"ssh to {self.name} refused the login ({msg}); set up key login "
                f"(ssh-copy-id{' -p ' + str(self.config.port) if self.config.port else ''} {self.config.destination}) "
                f"and check that '{self._hint()} true' runs without a password prompt"
            )
        if any(s in stderr for s in _HOSTKEY):
            return TransportError(
                f"ssh to {self.name}: the host key is unknown or changed ({msg}); connect once with '{self._hint()}' "
                "to accept it, or fix ~/.ssh/known_hosts"
            )
        return TransportClosed(f"cannot reach {self.name} over ssh ({msg}); check the host, the port and that sshd runs there")

    def _call(self, remote_cmd: str, timeout: float, stdin=None, stdout=None, what: str = "the command"):
        """Runs one remote shell command line; returns (returncode, stdout bytes, stderr text)."""
        self._ensure_master()
        cmd = [*self.ssh_args("-o", "ControlMaster=no"), "--", self.config.destination, remote_cmd]
        try:
            p = subprocess.run(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                               stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TransportTimeout(f"{what} on {self.name} did not finish within {timeout:.0f} s; "
                                   "raise the timeout or check the device and the network") from None
        err = p.stderr.decode(errors="replace")
        # 255 is ssh's own failure; a remote command exiting 255 prints none of these.
        if p.returncode == 255 and any(s in err for s in (*_AUTH, *_HOSTKEY, *_UNREACHABLE)):
            self._master_started = False  # the master may be what died: the next call starts a new one
            raise self._connection_error(err)
        if p.returncode == 255 and not self._master_alive():
            # The master connection died under the call (link dropped, sshd killed, board rebooted):
            # the client exits 255, often silently. The command may or may not have run.
            self._master_started = False
            raise TransportClosed(f"the connection to {self.name} dropped during {what}; check the network and the "
                                  "device (it may have rebooted), then run the command again")
        return p.returncode, p.stdout, err

    def _master_alive(self) -> bool:
        try:
            p = subprocess.run([*self.ssh_args("-O", "check"), "--", self.config.destination], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            return False
        return p.returncode == 0

    # -- Transport -----------------------------------------------------
    @property
    def arch(self) -> str:
        if self._arch is None:
            self._arch = remote_arch(self)
        return self._arch

    def workdir(self) -> str:
        if self._workdir is None:
            wd = self.config.workdir or ".cache/edgert"
            if not wd.startswith("/"):
                if self._home is None:
                    rc, out, err = self._call('printf %s "$HOME"', 60, what="reading $HOME")
                    self._home = out.decode().strip() or "/"
                wd = posixpath.join(self._home, wd)
            rc, _, err = self._call(f"mkdir -p {path_arg(wd)}", 60, what="mkdir")
            if rc != 0:
                raise TransportError(f"cannot create the folder {wd} on {self.name}: {err.strip()}; "
                                     "choose another with ?workdir=DIR")
            self._workdir = wd
        return self._workdir

    def run(self, argv: list[str], timeout: float = 600.0) -> Completed:
        rc, out, err = self._call(shlex.join(str(a) for a in argv), timeout, what=f"'{posixpath.basename(str(argv[0]))}'")
        return Completed(rc, out.decode(errors="replace"), err)

    def push(self, local: Path, remote: str, timeout: float = 600.0) -> None:
        local = Path(local)
        q = path_arg(remote)
        if local.is_dir():
            tar = subprocess.Popen(["tar", "-C", str(local), "-cf", "-", "."], stdout=subprocess.PIPE)
            try:
                rc, _, err = self._call(f"mkdir -p {q} && tar -C {q} -xf -", timeout, stdin=tar.stdout, what="push")
            finally:
                tar.stdout.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    tar.wait(timeout=5)
                if tar.poll() is None:
                    tar.kill()
        else:
            mode = " && chmod 755 " + q if local.stat().st_mode & 0o111 else ""
            parent = path_arg(posixpath.dirname(remote) or ".")
            with open(local, "rb") as f:
                rc, _, err = self._call(f"mkdir -p {parent} && cat > {q}{mode}", timeout, stdin=f, what=f"pushing {local.name}")
        if rc != 0:
            raise TransportError(f"cannot write {remote} on {self.name}: {err.strip() or f'exit code {rc}'}")

    def pull(self, remote: str, local: Path, timeout: float = 600.0) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        try:
            with open(fd, "wb") as f:
                rc, _, err = self._call(f"cat {path_arg(remote)}", timeout, stdout=f, what=f"pulling {remote}")
            if rc != 0:
                raise TransportError(f"cannot read {remote} on {self.name}: {err.strip() or f'exit code {rc}'}")
            Path(tmp).replace(local)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def close(self) -> None:
        if self._ctl_dir is None:
            return
        if self._master_started:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run([*self.ssh_args("-O", "exit"), "--", self.config.destination],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        shutil.rmtree(self._ctl_dir, ignore_errors=True)
        self._ctl_dir = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
