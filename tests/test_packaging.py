"""A plain (non-editable) install must carry the target TOMLs and the native sources."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_targets_and_native_sources(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("edgert-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for board in ("host", "generic-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "android-arm64"):
        assert f"edgert/targets/{board}.toml" in names
    for src in ("edgert.h", "edgert.cc", "edgert_run.cc"):
        assert f"edgert/runtime/native/{src}" in names
    assert "edgert/cli.py" in names
