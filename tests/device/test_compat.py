"""Bundles a device cannot run are refused before anything is sent, run or loaded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from cut_transfer import snapshot

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.compiler.targets import load_target
from edgert.device import open_device
from edgert.device.compat import GPU_NODES, missing_cpu_flags
from edgert.device.deploy import deploy
from edgert.device.local import LocalDevice, QemuDevice
from edgert.errors import ArchMismatchError, TargetMismatchError
from edgert.runtime.session import run_on_device

# /proc/cpuinfo "Features" of a Raspberry Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76), as their kernels print them.
RPI4_CPUINFO = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
RPI5_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU part\t: 0xd0b\n")


class Recording:
    """A real transport that records each command it is asked to run."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name, self.arch = inner.name, inner.arch
        self.emulated = getattr(inner, "emulated", False)
        self.host_files = getattr(inner, "host_files", False)

    def workdir(self):
        return self.inner.workdir()

    def run(self, argv, timeout=600.0):
        self.calls.append([str(a) for a in argv])
        return self.inner.run(argv, timeout)

    def push(self, local, remote, timeout=600.0):
        self.calls.append(["push", str(local), remote])
        return self.inner.push(local, remote, timeout)

    def pull(self, remote, local, timeout=600.0):
        return self.inner.pull(remote, local, timeout)

    def close(self):
        self.inner.close()


def retargeted(src: Path, dest: Path, target: dict) -> Bundle:
    """A copy of a bundle whose manifest says another target (the manifest is not in its own hash list)."""
    copy = Path(shutil.copytree(src, dest))
    m = json.loads((copy / "manifest.json").read_text())
    m["target"] = target
    (copy / "manifest.json").write_text(json.dumps(m))
    return Bundle.open(copy)


def cuda_version_of(bundle_dir: Path, dest: Path) -> Bundle:
    m = json.loads((bundle_dir / "manifest.json").read_text())
    t = dict(m["target"], device="cuda", name="jetson-orin-nano",
             tvm={"kind": "cuda", "arch": "sm_87", "host": m["target"]["tvm"]})
    return retargeted(bundle_dir, dest, t)


def test_cuda_bundle_on_a_cpu_host_is_refused_before_loading(tiny_bundle, tmp_path, monkeypatch):
    if any(Path(p).exists() for p in GPU_NODES):
        pytest.skip("this host has an NVIDIA GPU; the test needs one without")
    import tvm

    bundle = cuda_version_of(tiny_bundle("host"), tmp_path / "cuda.edgert")
    dev = Recording(LocalDevice(tmp_path / "dev"))
    with pytest.raises(TargetMismatchError, match="no NVIDIA GPU"):
        run_on_device(bundle, dev)
    with pytest.raises(TargetMismatchError, match="no NVIDIA GPU"):
        deploy(bundle, dev)
    assert not any("edgert-run" in " ".join(c) or c[0] == "push" for c in dev.calls), dev.calls
    assert snapshot(tmp_path / "dev") == {}  # nothing written on the device
    loaded = []
    monkeypatch.setattr(tvm.runtime, "load_module", lambda path: loaded.append(path))
    with pytest.raises(TargetMismatchError, match="this machine has no NVIDIA GPU"):
        bundle.run(bundle.golden_inputs())  # in-process too
    assert loaded == []


def test_cuda_bundle_under_qemu_is_refused(tiny_bundle, qemu, tmp_path):
    bundle = cuda_version_of(tiny_bundle("generic-aarch64"), tmp_path / "cuda.edgert")
    dev = Recording(QemuDevice(tmp_path / "dev"))
    with pytest.raises(TargetMismatchError, match="qemu has no NVIDIA GPU"):
        run_on_device(bundle, dev)
    assert dev.calls == [] and snapshot(tmp_path / "dev") == {}


def test_device_declared_another_board_refuses_the_bundle(sshd, tiny_bundle, tmp_path):
    rpi4 = retargeted(tiny_bundle("generic-aarch64"), tmp_path / "rpi4.edgert", load_target("rpi4").to_json())
    dev = open_device(sshd.spec(tmp_path / "device") + "&target=jetson-orin-nano")
    try:
        with pytest.raises(TargetMismatchError, match="built for target rpi4 .* declared a jetson-orin-nano .* "
                                                      "--target jetson-orin-nano"):
            deploy(rpi4, dev)
        with pytest.raises(TargetMismatchError, match="declared a jetson-orin-nano"):
            run_on_device(rpi4, dev)
    finally:
        dev.close()
    assert snapshot(tmp_path / "device") == {}
    # The CLI: exit code 5 (a bundle this device will not run) and one line naming the fix.
    spec = sshd.spec(tmp_path / "device") + "&target=jetson-orin-nano"
    for cmd in (["deploy", str(rpi4.path)], ["run", str(rpi4.path)], ["profile", str(rpi4.path), "--no-record"]):
        res = CliRunner().invoke(main, [*cmd, "--device", spec])
        assert res.exit_code == 5 and "compile the model with --target jetson-orin-nano" in res.output, res.output
    assert snapshot(tmp_path / "device") == {}


def test_declared_board_accepts_a_generic_bundle_then_checks_the_real_arch(sshd, tiny_bundle, tmp_path):
    generic = Bundle.open(tiny_bundle("generic-aarch64"))
    dev = open_device(sshd.spec(tmp_path / "device") + "&target=rpi4")
    try:
        # generic-aarch64 code runs on any aarch64 board: the declared-target check lets it through,
        # and the device itself (x86_64 here) is what refuses it.
        with pytest.raises(ArchMismatchError) as err:
            deploy(generic, dev)
        assert type(err.value) is ArchMismatchError and "x86_64" in str(err.value)
    finally:
        dev.close()


def test_unknown_declared_target_is_a_spec_error(sshd, tmp_path):
    from edgert.errors import TargetError

    with pytest.raises(TargetError, match="rpi4"):  # the message lists the known boards
        open_device(sshd.spec(tmp_path / "device") + "&target=rpi9")


@pytest.mark.parametrize(("target", "cpuinfo", "missing"), [
    ("rpi5", RPI4_CPUINFO, ["+dotprod", "+fullfp16"]),  # a Pi 5 bundle on a Pi 4: dot-product instructions
    ("rpi5", RPI5_CPUINFO, []),
    ("rpi4", RPI4_CPUINFO, []),
    ("jetson-orin-nano", RPI4_CPUINFO, ["+dotprod", "+fullfp16"]),  # -mcpu cortex-a78ae implies them
    ("generic-aarch64", RPI4_CPUINFO, []),
    ("rpi5", "processor\t: 0\n", []),  # a kernel that shows no features: nothing to refuse on
])
def test_cpu_features_a_bundle_needs(target, cpuinfo, missing):
    assert missing_cpu_flags(load_target(target).to_json(), cpuinfo) == missing
