"""Names that are shell code: file names, folders, workdirs, arguments and tensor names travel
as data over every transport (local, ssh, serial), never as commands."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_serial import open_console

from edgert.bundle import Bundle
from edgert.device import open_device
from edgert.device.deploy import deploy
from edgert.device.local import LocalDevice
from edgert.device.transport import TransportError
from edgert.runtime.session import run_on_device

HOSTILE = ["a b;touch PWNED", "$(touch PWNED)", "`touch PWNED`", "x\ntouch PWNED", "-rf", "--help",
           "'; touch PWNED; '", '"$(touch PWNED)"', "*", "~"]


def pwned(root: Path) -> list[Path]:
    """PWNED files anywhere under ``root``, or in the folders a remote shell starts in (home, this process's)."""
    return [*root.rglob("PWNED"), *(p for p in (Path.home() / "PWNED", Path.cwd() / "PWNED") if p.exists())]


@pytest.fixture(params=["local", "ssh", "serial"])
def dev(request, tmp_path):
    if request.param == "local":
        d = LocalDevice(tmp_path / "work dir")
    elif request.param == "ssh":
        d = open_device(request.getfixturevalue("sshd").spec(tmp_path / "work dir"))
    else:
        d = open_console(request.getfixturevalue("serial_console"), tmp_path)
    yield d
    d.close()
    assert not pwned(tmp_path)


def test_hostile_file_and_folder_names(dev, tmp_path):
    src = tmp_path / "payload.bin"
    data = os.urandom(3000)
    src.write_bytes(data)
    base = dev.workdir()
    for k, name in enumerate(HOSTILE):
        remote = f"{base}/{name}/{name}.bin"
        dev.push(src, remote)
        back = tmp_path / f"back{k}"
        dev.pull(remote, back)
        assert back.read_bytes() == data, name
        done = dev.run(["sh", "-c", 'printf "%s|" "$@"', "sh", name, remote])
        assert done.returncode == 0 and done.stdout == f"{name}|{remote}|", name
    assert not pwned(tmp_path)


def test_leading_dash_relative_paths(sshd, serial_console, tmp_path):
    # A relative remote path "-n" reaches `cat` as ./-n: a missing file is an error, not an empty pull.
    ssh = open_device(sshd.spec(tmp_path / "device"))
    try:
        with pytest.raises(TransportError, match="cannot read -n"):
            ssh.pull("-n", tmp_path / "n")
        assert not (tmp_path / "n").exists()
    finally:
        ssh.close()
    serial = open_console(serial_console, tmp_path)  # its shell's folder is tmp_path
    try:
        (tmp_path / "x").write_bytes(b"dash")
        serial.push(tmp_path / "x", "-rf")
        assert (tmp_path / "-rf").read_bytes() == b"dash"
        serial.pull("-rf", tmp_path / "back")
        assert (tmp_path / "back").read_bytes() == b"dash"
    finally:
        serial.close()


@pytest.fixture
def hostile_bundle(tiny_bundle, tmp_path) -> Bundle:
    """The tiny bundle with shell code for tensor names (the manifest is not in its own hash list)."""
    copy = Path(shutil.copytree(tiny_bundle("host"), tmp_path / "$(touch PWNED); b.edgert"))
    m = json.loads((copy / "manifest.json").read_text())
    m["inputs"][0]["name"] = "in $(touch PWNED)`touch PWNED`;x"
    m["outputs"][0]["name"] = "out;touch PWNED"
    m["outputs"][1]["name"] = "-rf $(touch PWNED)"
    (copy / "manifest.json").write_text(json.dumps(m))
    return Bundle.open(copy)


def test_hostile_tensor_and_bundle_names_deploy_and_run(dev, hostile_bundle, tiny_bundle, tmp_path):
    x = np.random.default_rng(5).standard_normal(hostile_bundle.inputs[0].shape).astype(np.float32)
    ref = run_on_device(Bundle.open(tiny_bundle("host")), LocalDevice(tmp_path / "ref"), {"input": x}).outputs
    dep = deploy(hostile_bundle, dev)
    assert dep.checked
    got = run_on_device(hostile_bundle, dev, {hostile_bundle.inputs[0].name: x}).outputs
    assert sorted(got) == sorted(s.name for s in hostile_bundle.outputs)
    for (name, arr), want in zip(got.items(), ref.values(), strict=True):
        np.testing.assert_array_equal(arr, want, err_msg=name)
    assert not pwned(tmp_path)
