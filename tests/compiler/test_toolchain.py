"""Toolchain: runtime libraries and native builds for the host and for aarch64."""
from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import pytest

from edgert.compiler import toolchain
from edgert.compiler.targets import load_target
from edgert.errors import BundleError, ToolchainError

HOST = platform.machine()


@pytest.mark.parametrize("name, arch", [("host", HOST), ("generic-aarch64", "aarch64")])
def test_runtime_libs_match_the_target(name, arch):
    libs = toolchain.runtime_libs(load_target(name))
    assert set(libs.files) == {"lib/libtvm_runtime.so", "lib/libtvm_ffi.so"}
    for path in libs.files.values():
        assert path.parent == libs.dir
        assert toolchain.elf_machine(path) == arch


@pytest.mark.parametrize("name, arch", [("host", HOST), ("generic-aarch64", "aarch64")])
def test_build_native_gives_binaries_for_the_target(name, arch):
    build = toolchain.build_native(load_target(name))
    assert toolchain.elf_machine(build.libedgert) == arch
    assert toolchain.elf_machine(build.runner) == arch
    assert "edgert_open" in build.header.read_text()


def test_native_build_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))
    first = toolchain.build_native(load_target("host"))
    assert first.runner.is_relative_to(tmp_path)
    assert toolchain.build_native(load_target("host")) == first


def test_missing_compiler_names_the_apt_package():
    tgt = load_target("generic-aarch64")
    broken = dataclasses.replace(tgt, toolchain=dataclasses.replace(tgt.toolchain, cxx="no-such-g++"))
    with pytest.raises(ToolchainError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        toolchain.find_cxx(broken)


def test_compiler_errors_are_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(toolchain, "_CXXFLAGS", ("-std=c++17", "-include", "/nonexistent.h"))
    with pytest.raises(ToolchainError, match="nonexistent.h"):
        toolchain.build_native(load_target("host"))
    assert not list(Path(tmp_path, "native").glob("*/lib/libedgert.so"))


def test_android_without_runtime_explains(monkeypatch):
    monkeypatch.delenv("EDGERT_ANDROID_TVM_RUNTIME", raising=False)
    with pytest.raises(ToolchainError, match="no official TVM runtime wheel exists for Android"):
        toolchain.runtime_libs(load_target("android-arm64"))


def test_elf_machine_rejects_non_elf(tmp_path):
    text = tmp_path / "x.so"
    text.write_text("not a library")
    with pytest.raises(BundleError, match="not an ELF"):
        toolchain.elf_machine(text)
