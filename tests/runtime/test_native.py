"""The native runtime (libedgert.so + edgert-run) on a hand-made bundle, natively and under qemu."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

QEMU = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]


def run_runner(bundle: Path, *args: str, prefix: list[str] = ()) -> tuple[int, dict, str]:
    """Run bundle/bin/edgert-run; returns exit code, the parsed EDGERT report, stderr."""
    cmd = [*prefix, str(bundle / "bin" / "edgert-run"), str(bundle), *map(str, args)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("EDGERT "), proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0][len("EDGERT "):]), proc.stderr


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def assert_matches_golden(bundle: Path, report: dict, out_dir: Path) -> None:
    assert report["status"] == "ok", report
    assert [o["name"] for o in report["outputs"]] == [o["name"] for o in manifest(bundle)["outputs"]]
    for i, out in enumerate(report["outputs"]):
        assert Path(out["file"]) == out_dir / (out["name"].replace("/", "_") + ".npy")
        got, ref = np.load(out["file"]), np.load(bundle / "golden" / f"output_{i}.npy")
        assert got.shape == ref.shape and got.dtype == ref.dtype
        assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))


@pytest.fixture
def host_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of the host bundle, free to be broken."""
    return Path(shutil.copytree(tiny_bundle("host"), tmp_path / "bundle"))


def edit_manifest(bundle: Path, **changes) -> None:
    """Change top-level keys, or keys of a section written as section__key."""
    data = manifest(bundle)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        (data[section] if field else data)[field or key] = value
    (bundle / "manifest.json").write_text(json.dumps(data))


def test_host_runner_matches_onnxruntime(tiny_bundle, tmp_path):
    bundle = tiny_bundle("host")
    code, report, _ = run_runner(bundle, "--golden", "--output-dir", tmp_path / "out", "--warmup", 1, "--repeat", 3)
    assert code == 0
    assert len(report["run_ms"]) == 3 and report["load_ms"] > 0
    assert report["outputs"][0]["shape"] == [1, 4, 8, 8] and report["outputs"][0]["dtype"] == "float32"
    assert_matches_golden(bundle, report, tmp_path / "out")


def test_explicit_input_file(tiny_bundle, tmp_path):
    bundle = tiny_bundle("host")
    x = tmp_path / "x.npy"
    shutil.copy(bundle / "golden" / "input_0.npy", x)
    code, report, _ = run_runner(bundle, "--input", f"input={x}", "--output-dir", tmp_path / "out")
    assert code == 0
    assert_matches_golden(bundle, report, tmp_path / "out")


@pytest.mark.qemu
def test_aarch64_runner_under_qemu(tiny_bundle, tmp_path):
    if not shutil.which(QEMU[0]) or not Path(QEMU[2], "lib").is_dir():
        pytest.skip("needs qemu-aarch64-static and the aarch64 sysroot (apt-get install qemu-user-static g++-aarch64-linux-gnu)")
    bundle = tiny_bundle("generic-aarch64")
    code, report, err = run_runner(bundle, "--golden", "--output-dir", tmp_path / "out", prefix=QEMU)
    assert code == 0, err
    assert_matches_golden(bundle, report, tmp_path / "out")


def test_tampered_model_is_refused(host_copy):
    with (host_copy / "lib" / "model.so").open("ab") as f:
        f.write(b"\0")
    code, report, _ = run_runner(host_copy, "--golden")
    assert (code, report["status"], report["code"]) == (5, "error", "integrity")
    assert "lib/model.so (modified)" in report["message"]


def test_missing_file_is_refused(host_copy):
    (host_copy / "golden" / "output_1.npy").unlink()
    code, report, _ = run_runner(host_copy, "--golden")
    assert (code, report["code"]) == (5, "integrity")
    assert "golden/output_1.npy (missing)" in report["message"]


def test_unlisted_library_is_refused(host_copy):
    (host_copy / "lib" / "libextra.so").write_bytes(b"\x7fELF")
    code, report, _ = run_runner(host_copy, "--golden")
    assert (code, report["code"]) == (5, "integrity")
    assert "lib/libextra.so (not in the manifest)" in report["message"]


def test_wrong_input_shape_names_the_input(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((1, 3, 4, 4), np.float32))
    code, report, _ = run_runner(tiny_bundle("host"), "--input", f"input={bad}")
    assert (code, report["code"]) == (2, "input")
    assert "'input'" in report["message"] and "[1,3,8,8]" in report["message"]


def test_wrong_input_dtype(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(manifest(tiny_bundle("host"))["inputs"][0]["shape"], np.float64))
    code, report, _ = run_runner(tiny_bundle("host"), "--input", f"input={bad}")
    assert (code, report["code"]) == (2, "input")
    assert "<f8" in report["message"] and "float32" in report["message"]


def test_missing_input_and_usage(tiny_bundle):
    code, report, _ = run_runner(tiny_bundle("host"))
    assert (code, report["code"]) == (2, "input") and "--golden" in report["message"]
    code, report, _ = run_runner(tiny_bundle("host"), "--repeat", "0")
    assert (code, report["code"]) == (2, "usage")


def test_newer_format_version_is_refused(host_copy):
    edit_manifest(host_copy, format_version=2)
    code, report, _ = run_runner(host_copy, "--golden")
    assert (code, report["code"]) == (5, "bundle")
    assert "format version 2 is newer" in report["message"]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="checks an x86_64 runner")
def test_x86_runner_refuses_aarch64_manifest(host_copy):
    edit_manifest(host_copy, target__arch="aarch64")
    code, report, _ = run_runner(host_copy, "--golden")
    assert (code, report["code"]) == (5, "arch")
    assert "aarch64" in report["message"] and "x86_64" in report["message"]
