"""The ssh transport against a real OpenSSH server on 127.0.0.1 (tests/device/conftest.py)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cut_transfer import CutAfter, assert_cut_leaves_nothing_good

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device import open_device
from edgert.device.deploy import deploy
from edgert.device.local import LocalDevice
from edgert.device.ssh import SSHConfig, SSHTransport
from edgert.device.transport import Transport, TransportClosed, TransportError, TransportTimeout
from edgert.errors import BundleIntegrityError
from edgert.runtime.session import run_deployed, run_on_device


@pytest.fixture
def ssh(sshd, tmp_path):
    dev = open_device(sshd.spec(tmp_path / "device"))
    yield dev
    dev.close()


def test_run_push_pull_with_awkward_names(ssh, tmp_path):
    assert isinstance(ssh, Transport) and ssh.arch == os.uname().machine
    assert ssh.workdir() == str(tmp_path / "device")
    done = ssh.run(["sh", "-c", 'printf "%s|" "$@"; echo oops >&2; exit 3', "sh", "a b", "$HOME", "it's; rm -rf x"])
    assert (done.returncode, done.stdout, done.stderr.strip()) == (3, "a b|$HOME|it's; rm -rf x|", "oops")
    src = tmp_path / "we ird 'name'.bin"
    src.write_bytes(os.urandom(100_000))
    remote = f"{ssh.workdir()}/sub dir/$(touch pwned)/{src.name}"
    ssh.push(src, remote)
    ssh.pull(remote, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    assert not list(tmp_path.rglob("pwned"))
    folder = tmp_path / "folder"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.txt").write_text("x")
    ssh.push(folder, f"{ssh.workdir()}/tree")
    assert (tmp_path / "device" / "tree" / "a" / "x.txt").read_text() == "x"
    with pytest.raises(TransportError, match="cannot read"):
        ssh.pull(f"{ssh.workdir()}/missing", tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_calls_share_one_connection(ssh, sshd):
    def logins() -> int:
        return (sshd.root / "sshd.log").read_text().count("Accepted publickey")

    ssh.run(["true"])
    before = logins()
    for _ in range(5):
        assert ssh.run(["true"]).returncode == 0
    assert logins() == before  # no new handshake: every call rides the master connection


def test_deploy_and_run_over_ssh(ssh, tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle("host"))
    dep = deploy(bundle, ssh)
    files = sorted([*bundle.manifest["files"], "manifest.json"])
    assert dep.checked and sorted(dep.sent) == files and dep.remote_dir.startswith(str(tmp_path / "device" / "bundles"))
    again = deploy(bundle, ssh)
    assert again.sent == () and sorted(again.skipped) == files and again.checked

    x = np.random.default_rng(2).standard_normal(bundle.inputs[0].shape).astype(np.float32)
    there = run_on_device(bundle, ssh, {"input": x})
    here = run_on_device(bundle, LocalDevice(), {"input": x})
    assert there.run_ms and there.load_ms > 0
    for name in here.outputs:
        np.testing.assert_array_equal(there.outputs[name], here.outputs[name])
    assert not list((tmp_path / "device" / "runs").iterdir())  # per-run folders are removed

    # A file changed on the device: the runner refuses it, the next deploy finds and replaces it.
    lib = Path(dep.remote_dir, "lib", "libtvm_runtime.so")
    data = bytearray(lib.read_bytes())
    data[1000] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="libtvm_runtime.so"):
        run_deployed(bundle, ssh, dep.remote_dir)
    fixed = deploy(bundle, ssh)
    assert fixed.damaged == ("lib/libtvm_runtime.so",) and fixed.sent == ("lib/libtvm_runtime.so",) and fixed.checked


class KilledMidFile(CutAfter):
    """The k-th push streams half the file through the real ssh connection, then that ssh process
    is killed (SIGKILL), as when the link drops mid-transfer."""

    def push(self, local, remote, timeout=600.0):
        self.pushes += 1
        if self.pushes != self.k:
            return self.inner.push(local, remote, timeout)
        import shlex

        cmd = [*self.inner.ssh_args("-o", "ControlMaster=no"), "--", self.inner.config.destination,
               f"mkdir -p {shlex.quote(os.path.dirname(remote))} && cat > {shlex.quote(remote)}"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        data = Path(local).read_bytes()
        proc.stdin.write(data[: len(data) // 2])
        proc.stdin.flush()
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        raise TransportClosed("ssh killed")


def test_killed_mid_deploy_over_ssh(ssh, tiny_bundle, tmp_path):
    assert_cut_leaves_nothing_good(Bundle.open(tiny_bundle("host")), ssh, tmp_path, k=7, cut_with=KilledMidFile)


def test_timeout_is_typed_and_the_connection_survives(ssh):
    t0 = time.perf_counter()
    with pytest.raises(TransportTimeout, match="did not finish within"):
        ssh.run(["sleep", "10"], timeout=0.5)
    assert time.perf_counter() - t0 < 5
    assert ssh.run(["echo", "ok"]).stdout == "ok\n"


def test_connection_errors_name_the_fix(sshd, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = SSHTransport(SSHConfig(host="127.0.0.1", user=sshd.user, port=port, config_file=sshd.ssh_config))
    with pytest.raises(TransportClosed, match="check the host, the port and that sshd runs there"):
        closed.run(["true"])
    closed.close()
    # No key offered: the login is refused, and the message says how to set up key login.
    nokey = tmp_path / "ssh_config"
    nokey.write_text(f"Host *\n  IdentityFile {tmp_path / 'nothing'}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                     f"  UserKnownHostsFile {sshd.root / 'known_hosts'}\n  StrictHostKeyChecking yes\n")
    refused = SSHTransport(SSHConfig(host="127.0.0.1", user=sshd.user, port=sshd.port, config_file=nokey))
    with pytest.raises(TransportError, match="ssh-copy-id"):
        refused.run(["true"])
    refused.close()
    # An unknown host key: the message says to connect once to accept it.
    (tmp_path / "empty_known_hosts").write_text("")
    unknown = tmp_path / "ssh_config2"
    unknown.write_text(sshd.ssh_config.read_text().replace(str(sshd.root / "known_hosts"), str(tmp_path / "empty_known_hosts")))
    stranger = SSHTransport(SSHConfig(host="127.0.0.1", user=sshd.user, port=sshd.port, config_file=unknown))
    with pytest.raises(TransportError, match="host key"):
        stranger.run(["true"])
    stranger.close()
    with pytest.raises(TransportClosed, match="closed"):
        stranger.run(["true"])


def test_cli_deploy_and_run_over_ssh(sshd, tiny_bundle, tmp_path):
    spec = sshd.spec(tmp_path / "device")
    bundle = tiny_bundle("host")
    runner = CliRunner()
    n = len(Bundle.open(bundle).manifest["files"]) + 1
    first = runner.invoke(main, ["deploy", str(bundle), "--device", spec])
    assert first.exit_code == 0, first.output
    assert f"deployed: {tmp_path / 'device' / 'bundles'}" in first.output and f"sent {n} file(s)" in first.output
    assert "golden check on ssh://" in first.output
    second = runner.invoke(main, ["deploy", str(bundle), "--device", spec])
    assert second.exit_code == 0 and f"sent 0 file(s), 0.0 MB; {n} unchanged" in second.output, second.output
    run = runner.invoke(main, ["run", str(bundle), "--device", spec, "--check"])
    assert run.exit_code == 0 and "check relu" in run.output and ": ok" in run.output, run.output


def test_rpc_server_over_ssh_direct_and_through_a_tracker(sshd, tmp_path):
    """edgert tune --device ssh://...: the runner's RPC server on the ssh device, reached through
    an ssh forward (-L), and registered with a tracker here through a reverse forward (-R)."""
    import tvm

    from edgert.compiler import rpc

    spec = sshd.spec(tmp_path / "device")
    with rpc.rpc_server("host", spec) as ep:
        sess = ep.connect()
        x = tvm.runtime.empty((1000,), "float32", sess.cpu())
        sess.get_function("tvm.contrib.random.random_fill_for_measure")(x)
        assert 1.0 <= x.numpy().min() and x.numpy().std() > 0.5
        work = sess.get_function("tvm.rpc.server.workpath")("")
        assert work.startswith(str(tmp_path / "device" / "rpc-"))
        pid = ep.server_pid
        del x, sess
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not list((tmp_path / "device").glob("rpc-*"))  # the pushed runner and its work folder are gone
    with rpc.local_tracker() as tracker, rpc.rpc_server("host", spec, tracker=tracker, key="sshbox") as ep:
        assert ep.via_tracker and ep.key == "sshbox"
        sess = ep.connect()
        assert sess.get_function("tvm.rpc.server.workpath")("").startswith(str(tmp_path / "device" / "rpc-"))
