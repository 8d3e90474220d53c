"""Real far ends for the transports: an OpenSSH server on 127.0.0.1, and a shell behind a
pseudo-terminal serial line."""
from __future__ import annotations

import contextlib
import fcntl
import getpass
import os
import select
import shutil
import socket
import subprocess
import termios
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from noisy_line import Relay

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    ssh_config: Path  # client config: the test's key and known_hosts, nothing from ~/.ssh
    root: Path

    def spec(self, workdir: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}?config={self.ssh_config}&workdir={workdir}"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """An OpenSSH server on 127.0.0.1 (a free port) as the current user, with host and client
    keys made for the test; openssh-server is installed by 'make install'."""
    if not Path(SSHD).is_file() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.fail("the ssh tests need OpenSSH; run 'make install' as root (apt-get install openssh-server openssh-client)")
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nMaxStartups 50\nMaxSessions 50\n"
    )
    host_pub = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (root / "ssh_config").write_text(
        f"Host *\n  IdentityFile {root / 'client_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {root / 'known_hosts'}\n  StrictHostKeyChecking yes\n  LogLevel ERROR\n"
    )
    # sshd started by root insists on its privilege-separation folder, which the service unit
    # normally creates at boot.
    made_privsep = os.geteuid() == 0 and not Path("/run/sshd").exists()
    if made_privsep:
        Path("/run/sshd").mkdir(mode=0o755)
    log = open(root / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-f", str(root / "sshd_config"), "-D", "-e"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(root / 'sshd.log').read_text()}")
            time.sleep(0.05)
        yield SSHServer(port, getpass.getuser(), root / "ssh_config", root)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        log.close()
        if made_privsep:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()


def _make_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def serial_console(tmp_path):
    """A serial line whose far end is a real shell, as on a board's console: /bin/sh runs with a
    pseudo-terminal as its controlling terminal, joined by a relay to a second pseudo-terminal
    whose path pyserial opens. Yields that path."""
    near_master, near_slave = os.openpty()
    far_master, far_slave = os.openpty()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "TERM": "dumb"}
    shell = subprocess.Popen(["/bin/sh", "-i"], stdin=far_slave, stdout=far_slave, stderr=far_slave, cwd=tmp_path,
                             env=env, start_new_session=True, preexec_fn=_make_controlling_tty)
    os.close(far_slave)
    # Wait for the shell's first prompt: a Ctrl-C sent (by SerialTransport's start) before the shell
    # has set up its signal handling would kill it, which no real board's login shell risks.
    deadline = time.monotonic() + 20
    while not select.select([far_master], [], [], 0.1)[0]:
        if shell.poll() is not None or time.monotonic() > deadline:
            shell.kill()
            pytest.fail("the serial console's shell did not start")
    os.read(far_master, 4096)
    cable = Relay(near_master, far_master)  # a null-modem cable
    cable.start()
    try:
        yield os.ttyname(near_slave)
    finally:
        shell.kill()
        shell.wait(timeout=10)
        cable.stop()
        for fd in (near_master, near_slave, far_master):
            os.close(fd)
