"""The bundle format: a directory (or its .tar.gz) that runs on the target with no Python.

Opening a bundle checks the format version and the sha256 of every file
before anything native is loaded.
"""
from __future__ import annotations

import json
import platform
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import ArchMismatchError, BundleError, BundleIntegrityError
from edgert.fsutil import atomic_dir, cache_dir, sha256_file
from edgert.model import TensorSpec

FORMAT = "edgert-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        """Open a bundle directory or ``.tar.gz``; verifies every file's hash."""
        path = Path(path)
        if not path.exists():
            raise BundleError(f"bundle not found: {path}; build one with 'edgert compile MODEL --target NAME -o {path}'")
        if path.is_file():
            path = _unpack(path)
        mpath = path / MANIFEST
        try:
            manifest = json.loads(mpath.read_text())
        except FileNotFoundError:
            raise BundleError(f"{path} is not an edgert bundle (no {MANIFEST}); point at the directory 'edgert compile' wrote") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {mpath}: {exc}; rebuild the bundle with 'edgert compile'") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{mpath} is not an edgert bundle manifest; rebuild the bundle with 'edgert compile'")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {version} is newer than this edgert supports ({FORMAT_VERSION}); "
                "upgrade edgert (pip install -U edgert) or rebuild the bundle with this version"
            )
        bundle = cls(path, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        """Raise BundleIntegrityError naming every file whose hash does not match."""
        files = self.manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise BundleError(f"{self.path}/{MANIFEST} lists no files; rebuild the bundle with 'edgert compile'")
        root = self.path.resolve()
        bad = []
        for rel, digest in sorted(files.items()):
            p = (root / rel).resolve()
            if not p.is_relative_to(root):
                raise BundleIntegrityError(f"bundle file '{rel}' points outside the bundle; refusing to use {self.path}")
            if not p.is_file():
                bad.append(f"{rel} (missing)")
            elif sha256_file(p) != digest:
                bad.append(f"{rel} (modified)")
        # A stray library in lib/ could be picked up through the runner's $ORIGIN search path.
        listed = {(root / rel).resolve() for rel in files}
        for sub in ("lib", "bin"):
            for p in sorted((root / sub).glob("*")):
                if p.resolve() not in listed:
                    bad.append(f"{p.relative_to(root)} (not in the manifest)")
        if bad:
            raise BundleIntegrityError(
                f"bundle {self.path} failed its integrity check: {', '.join(bad)}; "
                "rebuild it with 'edgert compile' or copy it again"
            )

    # -- description -------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(d) for d in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_json(d) for d in self.manifest["outputs"]]

    @property
    def target(self) -> dict[str, Any]:
        return self.manifest["target"]

    @property
    def arch(self) -> str:
        return self.target["arch"]

    @property
    def device_kind(self) -> str:
        return self.target.get("device", "cpu")

    @property
    def stream(self) -> dict[str, Any] | None:
        """A continual step model's states and timing (``edgert continual``); None for other bundles."""
        return self.manifest.get("stream")

    def image_config(self, name: str) -> dict[str, Any] | None:
        for d in self.manifest["inputs"]:
            if d["name"] == name:
                return d.get("image")
        return None

    def golden_inputs(self) -> dict[str, np.ndarray]:
        g = self.manifest["golden"]
        return {spec.name: np.load(self.path / rel) for spec, rel in zip(self.inputs, g["inputs"], strict=True)}

    def golden_outputs(self) -> dict[str, np.ndarray]:
        g = self.manifest["golden"]
        return {spec.name: np.load(self.path / rel) for spec, rel in zip(self.outputs, g["outputs"], strict=True)}

    def sizes(self) -> dict[str, int]:
        """Bytes per bundle file, manifest included."""
        out = {rel: (self.path / rel).stat().st_size for rel in sorted(self.manifest["files"])}
        out[MANIFEST] = (self.path / MANIFEST).stat().st_size
        return out

    # -- running in-process ------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run in this process through TVM's runtime (bundle arch must match the host)."""
        from edgert.runtime.session import run_in_process

        return run_in_process(self, feeds)

    def check_arch(self, machine: str | None = None) -> None:
        machine = machine or platform.machine()
        if self.arch != machine:
            raise ArchMismatchError(
                f"bundle {self.path.name} is built for {self.arch} (target {self.target['name']}) and cannot run on "
                f"this {machine} machine; use --device qemu for aarch64 bundles, or rebuild with --target host"
            )

    # -- packing -----------------------------------------------------------
    def pack(self, out: str | Path) -> Path:
        """Write the bundle as a .tar.gz (atomically)."""
        import io

        from edgert.fsutil import atomic_write_bytes

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for rel in [MANIFEST, *sorted(self.manifest["files"])]:
                tar.add(self.path / rel, arcname=rel, recursive=False)
        out = Path(out)
        atomic_write_bytes(out, buf.getvalue())
        return out


def _unpack(archive: Path) -> Path:
    """Unpack a .tar.gz bundle into the cache, refusing entries that could escape it."""
    if not tarfile.is_tarfile(archive):
        raise BundleError(f"{archive} is neither a bundle directory nor a .tar.gz bundle")
    dest = cache_dir("bundles") / sha256_file(archive)[:32]
    if (dest / MANIFEST).is_file():
        return dest
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                p = Path(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    raise BundleError(
                        f"{archive} contains an unsafe entry '{m.name}' (absolute path, '..', link or device); refusing to unpack"
                    )
            with atomic_dir(dest) as tmp:
                tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"cannot unpack {archive}: {exc}; copy the bundle again") from None
    return dest
