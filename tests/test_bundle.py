import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgert.bundle import Bundle
from edgert.errors import ArchMismatchError, BundleError, BundleIntegrityError


@pytest.fixture()
def host_bundle(compiled, tmp_path):
    b = compiled("convnet_tiny.onnx", "host")
    copy = tmp_path / "b.edgert"
    shutil.copytree(b.path, copy)
    return Bundle.open(copy)


def test_manifest_describes_everything(host_bundle):
    m = host_bundle.manifest
    assert m["format_version"] == 1
    assert [i["name"] for i in m["inputs"]] == ["input"] and m["inputs"][0]["shape"] == [1, 3, 32, 32]
    assert m["outputs"][0]["shape"] == [1, 10]
    for rel in ("lib/model.so", "lib/libtvm_runtime.so", "lib/libtvm_ffi.so", "lib/libedgert.so",
                "bin/edgert-run", "include/edgert.h", "golden/input_0.npy", "golden/output_0.npy"):
        assert rel in m["files"] and len(m["files"][rel]) == 64
    assert m["versions"]["tvm"] == "0.27.0.post1" and m["versions"]["tvm_ffi"] == "0.1.14.post1"
    assert m["golden"]["reference"].startswith("onnxruntime")
    assert m["inputs"][0]["image"]["layout"] == "NCHW"
    assert not list(host_bundle.path.parent.glob(".*tmp")), "no temp dir left behind"


def test_tampered_file_is_refused_before_loading(host_bundle):
    lib = host_bundle.path / "lib" / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"lib/model.so \(modified\)"):
        Bundle.open(host_bundle.path)


def test_missing_file_and_newer_format(host_bundle):
    (host_bundle.path / "golden" / "output_0.npy").unlink()
    with pytest.raises(BundleIntegrityError, match="missing"):
        Bundle.open(host_bundle.path)
    mpath = host_bundle.path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["format_version"] = 99
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer than this edgert supports"):
        Bundle.open(host_bundle.path)


def test_wrong_arch_refused(host_bundle):
    with pytest.raises(ArchMismatchError, match="--device qemu"):
        host_bundle.check_arch("riscv64")


def test_in_process_run_matches_golden(host_bundle):
    out = host_bundle.run(host_bundle.golden_inputs())
    ref = host_bundle.golden_outputs()["output"]
    assert np.max(np.abs(out["output"] - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_tar_gz_round_trip(host_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "cache"))
    archive = host_bundle.pack(tmp_path / "b.tar.gz")
    opened = Bundle.open(archive)
    assert opened.manifest["files"] == host_bundle.manifest["files"]


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "lib/link"])
def test_unsafe_archive_entries_refused(tmp_path, monkeypatch, name):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if name == "lib/link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(BundleError, match="unsafe entry"):
        Bundle.open(archive)
    assert not (tmp_path / "evil").exists()


def test_unlisted_library_refused(host_bundle):
    (host_bundle.path / "lib" / "libevil.so").write_bytes(b"\x7fELF")
    with pytest.raises(BundleIntegrityError, match=r"lib/libevil.so \(not in the manifest\)"):
        Bundle.open(host_bundle.path)


def test_model_swapped_after_open_is_refused_before_loading(host_bundle, monkeypatch):
    import tvm

    loaded = []
    monkeypatch.setattr(tvm.runtime, "load_module", lambda path: loaded.append(path))
    lib = host_bundle.path / "lib" / "model.so"
    data = bytearray(lib.read_bytes())
    data[len(data) // 3] ^= 0x01
    lib.write_bytes(bytes(data))  # after Bundle.open checked every hash
    with pytest.raises(BundleIntegrityError, match=r"lib/model.so \(modified since the bundle was opened\)"):
        host_bundle.run(host_bundle.golden_inputs())
    assert loaded == []


def test_model_swapped_while_loading_cannot_get_unchecked_code_in(host_bundle, monkeypatch):
    # The file in the bundle is replaced between the hash check and dlopen: what is loaded is the
    # private copy of the checked bytes, so the results are still the golden ones.
    import tvm

    real = tvm.runtime.load_module
    lib = host_bundle.path / "lib" / "model.so"
    seen = []

    def swap_then_load(path):
        lib.write_bytes(b"\x7fELF swapped in")
        seen.append(path)
        return real(path)

    monkeypatch.setattr(tvm.runtime, "load_module", swap_then_load)
    out = host_bundle.run(host_bundle.golden_inputs())["output"]
    ref = host_bundle.golden_outputs()["output"]
    assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref))
    assert len(seen) == 1 and not seen[0].startswith(str(host_bundle.path))
    assert not Path(seen[0]).exists()  # the private copy is removed after loading
