"""deploy() on this machine's devices (local, qemu): content addressing, incremental sends,
repairs, and interrupted transfers that never leave a bundle passing for good."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cut_transfer import assert_cut_leaves_nothing_good

from edgert.bundle import Bundle
from edgert.device.deploy import bundle_digest, deploy
from edgert.device.local import LocalDevice, QemuDevice
from edgert.device.transport import TransportTimeout
from edgert.errors import BundleError, BundleIntegrityError
from edgert.runtime.session import run_deployed, run_on_device


@pytest.fixture
def host_bundle(tiny_bundle) -> Bundle:
    return Bundle.open(tiny_bundle("host"))


def test_local_deploy_is_content_addressed_and_incremental(host_bundle, tmp_path):
    dev = LocalDevice(tmp_path / "dev")
    first = deploy(host_bundle, dev)
    files = sorted([*host_bundle.manifest["files"], "manifest.json"])
    assert first.checked and sorted(first.sent) == files and first.skipped == () and first.damaged == ()
    assert first.remote_dir == str(tmp_path / "dev" / "bundles" / bundle_digest(host_bundle))
    assert first.bytes_sent == sum(host_bundle.sizes().values())
    assert Bundle.open(first.remote_dir).manifest == host_bundle.manifest  # a complete, verified copy
    second = deploy(host_bundle, dev)
    assert second.sent == () and sorted(second.skipped) == files and second.checked
    assert sorted(p.name for p in (tmp_path / "dev" / "bundles").iterdir()) == [bundle_digest(host_bundle)]


def test_changed_and_stray_files_on_the_device_are_repaired(host_bundle, tmp_path):
    dev = LocalDevice(tmp_path / "dev")
    dep = deploy(host_bundle, dev, check=False)
    model = Path(dep.remote_dir, "lib", "model.so")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="model.so"):
        run_deployed(host_bundle, dev, dep.remote_dir)  # the runner notices by itself
    Path(dep.remote_dir, "lib", "libevil.so").write_bytes(b"x")
    fixed = deploy(host_bundle, dev)
    assert fixed.damaged == ("lib/model.so",) and fixed.sent == ("lib/model.so",) and fixed.checked
    assert not Path(dep.remote_dir, "lib", "libevil.so").exists()


def test_interrupted_local_deploy(host_bundle, tmp_path):
    assert_cut_leaves_nothing_good(host_bundle, LocalDevice(tmp_path / "dev"), tmp_path)


def test_unsafe_manifest_names_are_refused(host_bundle, tmp_path):
    copy = Path(shutil.copytree(host_bundle.path, tmp_path / "b"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"]["../escape; rm -rf ~"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="unsafe file names"):
        deploy(Bundle(copy, manifest), LocalDevice(tmp_path / "dev"))


def test_qemu_deploy_and_run(tiny_bundle, qemu, tmp_path):
    bundle = Bundle.open(tiny_bundle("generic-aarch64"))
    dev = QemuDevice(tmp_path / "dev")
    dep = deploy(bundle, dev)
    assert dep.checked and dep.remote_dir.startswith(str(tmp_path))
    x = np.random.default_rng(1).standard_normal(bundle.inputs[0].shape).astype(np.float32)
    there = run_deployed(bundle, dev, dep.remote_dir, {"input": x}).outputs
    here = run_on_device(bundle, dev, {"input": x}).outputs  # in place: qemu sees this machine's files
    for name in here:
        np.testing.assert_array_equal(there[name], here[name])


def test_local_timeout_is_typed(tmp_path):
    with pytest.raises(TransportTimeout, match="did not finish within"):
        LocalDevice(tmp_path).run(["sleep", "5"], timeout=0.3)
