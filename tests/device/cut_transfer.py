"""Transfers cut mid-deploy, shared by every transport's tests."""
from __future__ import annotations

import posixpath
from pathlib import Path

import pytest

from edgert.bundle import Bundle
from edgert.device.deploy import bundle_digest, deploy
from edgert.device.transport import Transport, TransportClosed
from edgert.errors import EdgertError
from edgert.runtime.session import run_deployed


class CutAfter:
    """A real transport whose connection is cut during the k-th push: half the file reaches the
    device, then TransportClosed, as when a cable is pulled mid-transfer."""

    def __init__(self, inner, k: int, tmp: Path):
        self.inner, self.k, self.tmp, self.pushes = inner, k, tmp, 0
        self.name, self.arch = inner.name, inner.arch

    def workdir(self):
        return self.inner.workdir()

    def run(self, argv, timeout=600.0):
        return self.inner.run(argv, timeout)

    def pull(self, remote, local, timeout=600.0):
        return self.inner.pull(remote, local, timeout)

    def push(self, local, remote, timeout=600.0):
        self.pushes += 1
        if self.pushes == self.k:
            half = self.tmp / "half"
            half.write_bytes(Path(local).read_bytes()[: Path(local).stat().st_size // 2])
            self.inner.push(half, remote, timeout)
            raise TransportClosed("connection cut")
        return self.inner.push(local, remote, timeout)

    def close(self):
        self.inner.close()


def assert_cut_leaves_nothing_good(bundle: Bundle, dev: Transport, tmp: Path, k: int = 6, cut_with=CutAfter) -> None:
    """A deploy cut at the k-th file leaves nothing that passes for the bundle; the next deploy completes it."""
    assert isinstance(dev, Transport)
    cut = cut_with(dev, k, tmp)
    with pytest.raises(TransportClosed):
        deploy(bundle, cut, check=False)
    root = posixpath.join(dev.workdir(), "bundles")
    final = posixpath.join(root, bundle_digest(bundle))
    partial = posixpath.join(root, f".{bundle_digest(bundle)}.partial")
    assert dev.run(["test", "-e", final]).returncode == 1  # nothing under the final name
    assert dev.run(["test", "-d", partial]).returncode == 0
    # Even run directly, the partial folder fails: the runner's hash check refuses it (or, when the
    # cut file is a library it links, the loader does).
    with pytest.raises(EdgertError):
        run_deployed(bundle, dev, partial)
    again = deploy(bundle, dev)
    files = set(bundle.manifest["files"]) | {"manifest.json"}
    assert again.checked and again.remote_dir == final
    assert len(again.skipped) == k - 1 and set(again.sent) | set(again.skipped) == files
    assert len(again.damaged) == 1 and again.damaged[0] in again.sent  # the half-sent file
    assert dev.run(["test", "-e", partial]).returncode == 1


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones too): "dir", "link", or a file's sha256; {} if absent."""
    import hashlib
    import os

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = ("link" if p.is_symlink() else "dir" if p.is_dir() else
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out
