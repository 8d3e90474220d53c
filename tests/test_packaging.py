"""A plain (non-editable) install must carry the target TOMLs, the native sources and the zoo."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, cwd=out,
    )
    return next(out.glob("edgert-*.whl"))


def test_wheel_contains_targets_native_sources_and_zoo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for board in ("host", "generic-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "android-arm64"):
        assert f"edgert/targets/{board}.toml" in names
    for src in ("edgert.h", "edgert.cc", "edgert_run.cc"):
        assert f"edgert/runtime/native/{src}" in names
    for model in ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws"):
        for part in ("model.onnx", "meta.json", "card.md"):
            assert f"edgert/models_zoo/{model}/{part}" in names
    assert "edgert/cli.py" in names


def test_installed_package_lists_and_exports_the_zoo(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}

    def edgert(*args):
        # cwd outside the checkout, so only the installed copy can be imported
        return subprocess.run([sys.executable, "-m", "edgert.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, check=False)

    where = subprocess.run([sys.executable, "-c", "import edgert; print(edgert.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    listing = edgert("zoo", "list")
    assert listing.returncode == 0, listing.stderr
    assert all(m in listing.stdout for m in ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws"))
    assert edgert("targets").returncode == 0
    exported = edgert("zoo", "export", "digits_cnn", "-o", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"model.onnx", "calibration.npz", "card.md", "meta.json"}
