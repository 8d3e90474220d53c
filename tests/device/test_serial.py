"""The serial transport against a real shell behind a pseudo-terminal line (tests/device/conftest.py)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from cut_transfer import assert_cut_leaves_nothing_good

from edgert.bundle import Bundle
from edgert.device import open_device
from edgert.device.deploy import deploy
from edgert.device.local import LocalDevice
from edgert.device.serial import SerialConfig, SerialTransport
from edgert.device.transport import Transport, TransportError, TransportTimeout
from edgert.runtime.session import run_on_device


def open_console(port: str, tmp_path, **kw) -> SerialTransport:
    return SerialTransport(SerialConfig(port=port, workdir=str(tmp_path / "device")), **kw)


def test_commands_are_framed_with_exit_codes(serial_console, tmp_path):
    dev = open_device(f"serial://{serial_console}?baud=115200&workdir={tmp_path / 'device'}")
    assert isinstance(dev, Transport) and dev.arch == os.uname().machine
    done = dev.run(["sh", "-c", 'printf "%s|" "$@"; printf "no newline"; echo oops >&2; exit 3', "sh",
                    "a b", "$HOME", "it's; echo @@E:x:0"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "a b|$HOME|it's; echo @@E:x:0|no newline", "oops")
    assert dev.run(["true"]).returncode == 0 and dev.run(["false"]).returncode == 1
    assert dev.run(["cat"]).stdout == ""  # stdin is not the console: a reader cannot swallow what follows
    dev.close()


def test_files_round_trip_in_checked_chunks(serial_console, tmp_path):
    dev = SerialTransport(SerialConfig(port=serial_console, workdir=str(tmp_path / "device"), chunk_bytes=4096),
                          corrupt_chunk=2)
    data = os.urandom(5 * 4096 + 123)
    (tmp_path / "x.bin").write_bytes(data)
    remote = f"{dev.workdir()}/sub/it's x.bin"
    dev.push(tmp_path / "x.bin", remote)
    assert (tmp_path / "device" / "sub" / "it's x.bin").read_bytes() == data
    assert dev.chunks_resent == 1 and dev.chunks_sent == 7  # chunk 2 arrived damaged, was caught and re-sent
    dev.pull(remote, tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data
    (tmp_path / "empty").write_bytes(b"")
    dev.push(tmp_path / "empty", f"{dev.workdir()}/empty")
    dev.pull(f"{dev.workdir()}/empty", tmp_path / "empty.back")
    assert (tmp_path / "empty.back").read_bytes() == b""
    with pytest.raises(TransportError, match="reading"):
        dev.pull(f"{dev.workdir()}/missing", tmp_path / "missing")
    dev.close()


def test_deploy_and_run_over_serial_with_a_damaged_chunk(serial_console, tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle("host"))
    dev = open_console(serial_console, tmp_path, corrupt_chunk=5)
    dep = deploy(bundle, dev)
    assert dep.checked and dev.chunks_resent == 1
    assert Bundle.open(dep.remote_dir).manifest == bundle.manifest  # every file arrived whole
    assert deploy(bundle, dev, check=False).sent == ()
    x = np.random.default_rng(3).standard_normal(bundle.inputs[0].shape).astype(np.float32)
    there = run_on_device(bundle, dev, {"input": x}).outputs
    here = run_on_device(bundle, LocalDevice(), {"input": x}).outputs
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])
    dev.close()


def test_interrupted_serial_deploy(serial_console, tiny_bundle, tmp_path):
    dev = open_console(serial_console, tmp_path)
    assert_cut_leaves_nothing_good(Bundle.open(tiny_bundle("host")), dev, tmp_path, k=4)
    dev.close()


def test_timeout_interrupts_and_resynchronises(serial_console, tmp_path):
    dev = open_console(serial_console, tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(TransportTimeout, match="did not finish within"):
        dev.run(["sleep", "30"], timeout=0.5)
    assert dev.run(["echo", "still here"]).stdout == "still here\n"
    assert time.perf_counter() - t0 < 10
    dev.close()
