"""The bundle format: a directory (or its .tar.gz) that runs on the target with no Python.

Opening a bundle checks the format version and the sha256 of every file
before anything native is loaded.
"""
from __future__ import annotations

import json
import platform
import posixpath
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
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

    @contextmanager
    def verified_copy(self, rel: str) -> Iterator[Path]:
        """A private copy of bundle file ``rel``, made from bytes hashed as they were read.

        Loading native code from the bundle folder itself would leave a window between the
        hash check and dlopen in which the file could be swapped; the copy (in a fresh 0700
        temp folder, removed afterwards) is the very bytes that were checked.
        """
        import hashlib
        import shutil
        import tempfile

        digest = self.manifest.get("files", {}).get(rel)
        try:
            data = (self.path / rel).read_bytes()
        except OSError as exc:
            raise BundleIntegrityError(f"cannot read {rel} of bundle {self.path} ({exc.strerror}); copy the bundle again") from None
        if digest is None or hashlib.sha256(data).hexdigest() != digest:
            raise BundleIntegrityError(
                f"bundle {self.path} failed its integrity check: {rel} ({'not in the manifest' if digest is None else 'modified'} "
                "since the bundle was opened); rebuild it with 'edgert compile' or copy it again"
            )
        tmp = Path(tempfile.mkdtemp(prefix="edgert-load-"))
        try:
            out = tmp / Path(rel).name
            out.write_bytes(data)
            yield out
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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


# Unpacked bytes allowed per byte of archive (a real bundle compresses about 3:1; gzip tops out
# near 1000:1, so a decompression bomb needs far more), with a floor for tiny archives.
UNPACK_RATIO = 100
UNPACK_FLOOR = 64 << 20
MAX_ENTRIES = 10_000
MAX_MANIFEST_BYTES = 16 << 20


def _unpack(archive: Path) -> Path:
    """Unpack a .tar.gz bundle into the cache, refusing any archive that could write outside it,
    shadow a file, or unpack to far more than its own size; nothing is written unless every entry passes."""
    if not tarfile.is_tarfile(archive):
        raise BundleError(f"{archive} is neither a bundle directory nor a .tar.gz bundle")
    dest = cache_dir("bundles") / sha256_file(archive)[:32]
    if (dest / MANIFEST).is_file() and _cache_matches(dest, archive):
        return dest
    # Absent, or a cached copy changed since it was unpacked: unpacked afresh (atomically replacing
    # it), so one damaged cache entry is not reused, and refused, forever.
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, archive)
            with atomic_dir(dest) as tmp:
                tar.extractall(tmp, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"cannot unpack {archive}: {exc}; copy the bundle again") from None
    return dest


def _cache_matches(dest: Path, archive: Path) -> bool:
    """Whether the cached copy ``dest`` still holds what ``archive`` unpacks to: the same manifest
    bytes (so a manifest rewritten to match changed files does not pass) and every file listed
    with its hash, nothing else in lib/ or bin/."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar:  # pack() writes the manifest first, so this rarely reads further
                if posixpath.normpath(m.name) == MANIFEST:
                    if not m.isreg() or m.size > MAX_MANIFEST_BYTES:
                        return False
                    packed = tar.extractfile(m).read()
                    break
            else:
                return False
        cached = (dest / MANIFEST).read_bytes()
        if cached != packed:
            return False
        Bundle(dest, json.loads(cached)).verify()
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, AttributeError, BundleError):
        return False
    return True


def _checked_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Every entry, checked before anything is written: plain files and folders with relative
    names only, each name once, no more bytes than the cap, and only files the manifest lists."""
    def refuse(why: str) -> BundleError:
        return BundleError(f"{archive} {why}; refusing to unpack it (rebuild the bundle with 'edgert compile' "
                           "and 'Bundle.pack', or copy it again)")

    cap = max(UNPACK_FLOOR, UNPACK_RATIO * archive.stat().st_size)
    members, seen, total = [], set(), 0
    # tar.next() reads one header at a time, so an entry over the cap is refused before its data is inflated.
    while (m := tar.next()) is not None:
        if len(members) >= MAX_ENTRIES:
            raise refuse(f"has more than {MAX_ENTRIES} entries")
        name = posixpath.normpath(m.name)
        if m.name.startswith("/") or ".." in m.name.split("/"):
            raise refuse(f"contains an unsafe entry '{m.name}' (absolute path or '..')")
        if not (m.isreg() or m.isdir()):
            raise refuse(f"contains an unsafe entry '{m.name}' (a link, device or fifo; bundles hold plain files only)")
        if name in seen:
            raise refuse(f"contains '{name}' twice (a later copy would shadow the first)")
        seen.add(name)
        total += m.size
        if total > cap:
            raise refuse(f"unpacks to more than {cap >> 20} MiB ({UNPACK_RATIO}x its own size): a decompression bomb "
                         "or a damaged archive")
        members.append(m)
    by_name = {posixpath.normpath(m.name): m for m in members}
    man = by_name.get(MANIFEST)
    if man is None or not man.isreg():
        raise refuse(f"has no {MANIFEST}")
    if man.size > MAX_MANIFEST_BYTES:
        raise refuse(f"has a {MANIFEST} over {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        listed = json.loads(tar.extractfile(man).read()).get("files")
    except (ValueError, AttributeError):
        listed = None
    if not isinstance(listed, dict):
        raise refuse(f"has no readable {MANIFEST} listing its files")
    wanted = {posixpath.normpath(rel) for rel in listed} | {MANIFEST}
    folders = {"."}
    for rel in wanted:
        while (rel := posixpath.dirname(rel)):
            folders.add(rel)
    for name, m in by_name.items():
        if m.isreg() and name not in wanted:
            raise refuse(f"contains '{name}', which its {MANIFEST} does not list")
        if m.isdir() and name not in folders:
            raise refuse(f"contains a folder '{name}' holding no listed file")
    return members
