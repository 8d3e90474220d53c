import dataclasses
import platform

import pytest

from edgert.compiler.targets import list_targets, load_target
from edgert.errors import TargetError

REQUIRED = {"host", "generic-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "android-arm64"}


def test_required_boards_present_and_valid():
    targets = {t.name: t for t in list_targets()}
    assert REQUIRED <= set(targets)
    for t in targets.values():
        assert t.vector_bits in (128, 256, 512)
        t.tvm_target()  # TVM accepts every target dict


def test_board_features():
    assert load_target("rpi4").tvm["mcpu"] == "cortex-a72"
    rpi5 = load_target("rpi5")
    assert rpi5.tvm["mcpu"] == "cortex-a76" and "+dotprod" in rpi5.tvm["mattr"]
    # TVM derives the dot-product feature from the TOML's mattr (rpi4's A72 has none).
    assert bool(rpi5.tvm_target().attrs["feature.has_dotprod"])
    assert not bool(load_target("rpi4").tvm_target().attrs["feature.has_dotprod"])
    for name in ("jetson-orin-nano", "jetson-agx-orin"):
        t = load_target(name)
        assert t.is_cuda and t.tvm["arch"] == "sm_87"
        assert t.host_llvm["mtriple"] == "aarch64-linux-gnu" and t.host_llvm["mcpu"] == "cortex-a78ae"
        assert t.power_rails, "Jetson boards list their INA3221 power rails"
    android = load_target("android-arm64")
    assert android.tvm["mtriple"] == "aarch64-linux-android"
    assert android.toolchain.requires_env == "ANDROID_NDK_HOME"


def test_host_resolves_native_values():
    host = load_target("host")
    assert host.arch == platform.machine()
    assert host.tvm["mcpu"] not in ("native", "")


def test_unknown_target_lists_valid_names():
    with pytest.raises(TargetError) as exc:
        load_target("rpi9")
    msg = str(exc.value)
    assert "rpi9" in msg and all(name in msg for name in REQUIRED)


def test_target_from_file_and_validation(tmp_path):
    good = tmp_path / "myboard.toml"
    good.write_text('name = "myboard"\narch = "aarch64"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n'
                    '[toolchain]\ncxx = "aarch64-linux-gnu-g++"\n')
    t = load_target(good)
    assert t.name == "myboard" and t.vector_bits == 128
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\narch = "mips"\n[tvm]\nkind = "llvm"\n[toolchain]\ncxx = "g++"\n')
    with pytest.raises(TargetError, match="arch 'mips'"):
        load_target(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    with pytest.raises(TargetError, match="cannot read"):
        load_target(broken)


def test_targets_path_env_adds_boards(tmp_path, monkeypatch):
    (tmp_path / "lab-board.toml").write_text(
        'name = "lab-board"\narch = "aarch64"\n[tvm]\nkind = "llvm"\nmtriple = "aarch64-linux-gnu"\n[toolchain]\ncxx = "g++"\n')
    monkeypatch.setenv("EDGERT_TARGETS_PATH", str(tmp_path))
    assert load_target("lab-board").source.endswith("lab-board.toml")
    assert dataclasses.replace(load_target("lab-board"), name="x").name == "x"
