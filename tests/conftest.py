"""Shared fixtures: the test models and bundles compiled once per session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def qemu():
    """qemu-user and the aarch64 sysroot are installed by 'make install'; their absence is a failure."""
    if not shutil.which("qemu-aarch64-static") or not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        pytest.fail("qemu-aarch64-static and the aarch64 sysroot are required; run 'make install' as root")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """compiled(model_file, target) -> Bundle, built once per session."""
    import edgert

    cache: dict[tuple[str, str], object] = {}
    root = tmp_path_factory.mktemp("bundles")

    def get(model: str, target: str, **kw):
        key = (model, target)
        if key not in cache:
            cache[key] = edgert.compile(DATA / model, target=target, output=root / f"{model}.{target}.edgert", **kw)
        return cache[key]

    return get
