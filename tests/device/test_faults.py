"""Faults mid-operation over a real ssh link: a runner killed mid-profile (the board rebooting),
the connection dropping mid-profile or mid-push. Each is a typed error; nothing half-done is
kept as if complete (no report, no results entry, no bundle under its final name)."""
from __future__ import annotations

import os
import posixpath
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cut_transfer import CutAfter, snapshot

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device import open_device
from edgert.device.deploy import bundle_digest, deploy
from edgert.device.transport import TransportClosed


def _pids_matching(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (a path unique to this test)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmd:
                out.append(int(d.name))
    return out


def _master_pid(dev) -> int:
    done = subprocess.run([*dev.ssh_args("-O", "check"), "--", dev.config.destination], capture_output=True, text=True,
                          timeout=10)
    return int(re.search(r"pid=(\d+)", done.stderr + done.stdout).group(1))


class KillWhen(threading.Thread):
    """Kills the process(es) ``pick()`` returns once ``ready()`` is true (within ``wait`` s)."""

    def __init__(self, ready, pick, wait: float = 30.0):
        super().__init__(daemon=True)
        self.ready, self.pick, self.wait, self.killed = ready, pick, wait, []

    def run(self):
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            if self.ready():
                time.sleep(0.3)  # well inside the work
                for pid in self.pick():
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                return
            time.sleep(0.05)


@pytest.fixture
def deployed(sshd, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_DATA_DIR", str(tmp_path / "data"))
    bundle = Bundle.open(tiny_bundle("host"))
    spec = sshd.spec(tmp_path / "device")
    dev = open_device(spec)
    deploy(bundle, dev, check=False)
    dev.close()
    return bundle, spec, str(tmp_path / "device" / "bundles" / bundle_digest(bundle))


def _profile(bundle, spec, tmp_path):
    return CliRunner().invoke(main, ["profile", str(bundle.path), "--device", spec, "--warmup", "1000000", "--repeat", "1000000",
                                     "--json", str(tmp_path / "report.json"), "--timeout", "60"])


def test_runner_killed_mid_profile(deployed, tmp_path):
    """The board 'reboots': its runner dies mid-measurement. A clear error, exit 6, no report."""
    bundle, spec, remote = deployed
    runner = posixpath.join(remote, "bin", "edgert-run")
    killer = KillWhen(lambda: _pids_matching(f"{runner} {remote} --golden --profile"),
                      lambda: _pids_matching(f"{runner} {remote} --golden --profile"))
    before = snapshot(tmp_path / "data")
    killer.start()
    res = _profile(bundle, spec, tmp_path)
    killer.join()
    assert killer.killed, res.output
    assert res.exit_code == 6 and "failed without a report" in res.output, res.output
    assert not (tmp_path / "report.json").exists() and not list(tmp_path.glob(".report.json*"))
    assert snapshot(tmp_path / "data") == before  # nothing recorded in the results history
    assert Bundle.open(remote).manifest == bundle.manifest  # the deployed bundle is intact


def test_connection_dropped_mid_profile(deployed, sshd, tmp_path):
    """The link drops (the ssh master connection is killed) mid-measurement: TransportClosed
    (exit 6) naming the fix, no report; the next profile on a new connection works."""
    bundle, spec, remote = deployed
    runner = posixpath.join(remote, "bin", "edgert-run")
    running = lambda: _pids_matching(f"{runner} {remote} --golden --profile")  # noqa: E731
    # This test's profile holds the only master connection to this sshd (the fixture closed its own).
    masters = lambda: [p for p in _pids_matching("ControlMaster=yes") if p in _pids_matching(f"-p {sshd.port} ")]  # noqa: E731
    killer = KillWhen(running, masters)
    before = snapshot(tmp_path / "data")
    killer.start()
    res = _profile(bundle, spec, tmp_path)
    killer.join()
    assert killer.killed, "the ssh master was never seen"
    assert res.exit_code == 6 and "dropped during" in res.output and "it may have rebooted" in res.output, res.output
    assert not (tmp_path / "report.json").exists() and snapshot(tmp_path / "data") == before
    # Without a terminal, sshd does not signal the command of a dropped session: the orphaned runner
    # goes on until its runs are done (a known limit, see the ssh module). Ended here so the next
    # profile has the machine to itself.
    for pid in running():
        os.kill(pid, signal.SIGKILL)
    again = CliRunner().invoke(main, ["profile", str(bundle.path), "--device", spec, "--warmup", "1", "--repeat", "3",
                                      "--json", str(tmp_path / "report.json")])
    assert again.exit_code == 0 and (tmp_path / "report.json").is_file(), again.output


class MasterKilledMidFile(CutAfter):
    """The k-th push goes through the real transport, fed from a pipe: half the file is written,
    then the ssh master connection is killed while the transfer waits for the rest."""

    def push(self, local, remote, timeout=600.0):
        self.pushes += 1
        if self.pushes != self.k:
            return self.inner.push(local, remote, timeout)
        fifo = self.tmp / "fifo"
        os.mkfifo(fifo)
        data = Path(local).read_bytes()
        master = _master_pid(self.inner)

        def feed():
            with open(fifo, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(0.5)
                os.kill(master, signal.SIGKILL)
                time.sleep(0.5)
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        try:
            self.inner.push(fifo, remote, timeout)
        finally:
            writer.join()
            fifo.unlink()


def test_master_connection_killed_mid_push(sshd, tiny_bundle, tmp_path):
    """A deploy whose ssh master connection dies during a real push: TransportClosed naming the
    drop, no bundle under its final name; the next deploy (a new connection) completes it."""
    bundle = Bundle.open(tiny_bundle("host"))
    dev = open_device(sshd.spec(tmp_path / "device"))
    try:
        dev.run(["true"])
        with pytest.raises(TransportClosed, match="dropped during pushing"):
            deploy(bundle, MasterKilledMidFile(dev, 3, tmp_path), check=False)
        final = tmp_path / "device" / "bundles" / bundle_digest(bundle)
        partial = final.with_name(f".{final.name}.partial")
        assert not final.exists() and partial.is_dir()
        again = deploy(bundle, dev)  # the transport starts a new master connection by itself
        assert again.checked and Path(again.remote_dir) == final and not partial.exists()
        assert len(again.damaged) == 1 and again.damaged[0] in again.sent  # the half-sent file
    finally:
        dev.close()
