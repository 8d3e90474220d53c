"""The adb transport through tests/device/fake_adb.py, a TEST DOUBLE of the adb command that
works on a local folder (no phone exists here); what it checks is edgert's side: the adb
command lines, quoting, exit statuses, adb's errors, and deploy/run over them."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from cut_transfer import assert_cut_leaves_nothing_good

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device import open_device
from edgert.device.deploy import deploy
from edgert.device.local import LocalDevice
from edgert.device.transport import Transport, TransportClosed
from edgert.errors import MissingDependencyError
from edgert.runtime.session import run_on_device

SERIAL = "R58M123ABC"


@pytest.fixture
def fake_adb(tmp_path, monkeypatch) -> Path:
    """Puts the adb test double first on PATH; returns the folder that plays the phone's storage."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).with_name('fake_adb.py')} \"$@\"\n")
    adb.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_SERIAL", SERIAL)
    return tmp_path / "phone"


def test_deploy_and_run_over_adb(fake_adb, tiny_bundle, tmp_path):
    dev = open_device(f"adb:{SERIAL}?workdir={fake_adb}")
    assert isinstance(dev, Transport) and dev.arch == os.uname().machine
    done = dev.run(["sh", "-c", 'printf "%s|" "$@"; echo oops >&2; exit 3', "sh", "a b", "$HOME", "it's"])
    assert (done.returncode, done.stdout, done.stderr.strip()) == (3, "a b|$HOME|it's|", "oops")
    bundle = Bundle.open(tiny_bundle("host"))
    dep = deploy(bundle, dev)
    assert dep.checked and dep.remote_dir.startswith(str(fake_adb / "bundles"))
    assert deploy(bundle, dev, check=False).sent == ()
    x = np.random.default_rng(4).standard_normal(bundle.inputs[0].shape).astype(np.float32)
    there = run_on_device(bundle, dev, {"input": x}).outputs
    here = run_on_device(bundle, LocalDevice(), {"input": x}).outputs
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])


def test_interrupted_adb_deploy(fake_adb, tiny_bundle, tmp_path):
    assert_cut_leaves_nothing_good(Bundle.open(tiny_bundle("host")), open_device(f"adb?workdir={fake_adb}"), tmp_path)


def test_adb_errors_name_the_fix(fake_adb, tiny_bundle, monkeypatch):
    with pytest.raises(TransportClosed, match=r"'adb devices' lists it$"):
        open_device("adb:OTHER").run(["true"])
    monkeypatch.setenv("FAKE_ADB_SERIAL", "")
    result = CliRunner().invoke(main, ["deploy", str(tiny_bundle("host")), "--device", "adb"])
    assert result.exit_code == 6 and "no devices/emulators found" in result.output
    assert "USB debugging" in result.output and "(or name it: adb:SERIAL)" in result.output
    monkeypatch.setenv("PATH", str(fake_adb))  # no adb at all
    with pytest.raises(MissingDependencyError, match="apt-get install adb"):
        open_device("adb")
