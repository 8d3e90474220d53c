"""Hostile .tar.gz bundles: nothing is written outside (or inside) the cache unless every entry
is a plain, listed, relative file within the size cap; the refusal is a BundleError."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from edgert import bundle as bundle_mod
from edgert.bundle import Bundle
from edgert.errors import BundleError

LIB = b"\x7fELF not really a library"


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (hidden ones too) with its kind and, for files, its sha256."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root))] = "link" if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath, f)
            out[str(p.relative_to(root))] = ("link" if p.is_symlink() else
                                             hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "other")
    return out


def manifest(files: dict[str, bytes], version: int = 1) -> bytes:
    return json.dumps({"format": "edgert-bundle", "format_version": version,
                       "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}}).encode()


def entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def write_archive(path: Path, entries: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(root))
    (root / "bundles").mkdir(parents=True)
    return root


def test_a_well_formed_archive_unpacks(tmp_path, cache):
    files = {"lib/model.so": LIB}
    archive = write_archive(tmp_path / "ok.tar.gz", [entry("manifest.json", manifest(files)), entry("lib", kind=tarfile.DIRTYPE),
                                                     entry("lib/model.so", LIB)])
    b = Bundle.open(archive)
    assert b.path.parent == cache / "bundles" and (b.path / "lib" / "model.so").read_bytes() == LIB
    assert sorted(p.name for p in (cache / "bundles").iterdir()) == [b.path.name]  # no temp folder left


def _base() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [entry("manifest.json", manifest({"lib/model.so": LIB})), entry("lib/model.so", LIB)]


HOSTILE = {
    "absolute path": [entry("ABS/evil", b"x")],  # ABS: the test's own folder, a real and writable place
    "dot-dot": [entry("../evil", b"x")],
    "dot-dot inside": [entry("lib/../../evil", b"x")],
    "symlink": [entry("lib/link.so", kind=tarfile.SYMTYPE, link="/etc/passwd")],
    "symlink to a folder outside": [entry("golden", kind=tarfile.SYMTYPE, link="..")],
    "hardlink": [entry("lib/hard.so", kind=tarfile.LNKTYPE, link="manifest.json")],
    "character device": [entry("lib/null", kind=tarfile.CHRTYPE)],
    "fifo": [entry("lib/fifo", kind=tarfile.FIFOTYPE)],
    "shadowing duplicate": [entry("lib/model.so", b"evil code")],
    "duplicate through ./": [entry("./lib/model.so", b"evil code")],
    "manifest twice": [entry("manifest.json", manifest({"lib/model.so": b"evil code"}))],
    "unlisted library": [entry("lib/libevil.so", b"x")],
    "folder holding nothing listed": [entry("plugins", kind=tarfile.DIRTYPE)],
}
WHY = {
    "absolute path": "unsafe entry", "dot-dot": "unsafe entry", "dot-dot inside": "unsafe entry",
    "symlink": "a link, device or fifo", "symlink to a folder outside": "a link, device or fifo",
    "hardlink": "a link, device or fifo", "character device": "a link, device or fifo", "fifo": "a link, device or fifo",
    "shadowing duplicate": "twice", "duplicate through ./": "twice", "manifest twice": "twice",
    "unlisted library": "does not list", "folder holding nothing listed": "holding no listed file",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_entries_are_refused_and_nothing_is_written(tmp_path, cache, case):
    extra = [(info.replace(name=info.name.replace("ABS", str(tmp_path))), data) for info, data in HOSTILE[case]]
    archive = write_archive(tmp_path / "bad.tar.gz", _base() + extra)
    before = snapshot(tmp_path)
    with pytest.raises(BundleError) as err:
        Bundle.open(archive)
    assert type(err.value) is BundleError and WHY[case] in str(err.value) and "refusing to unpack" in str(err.value)
    assert snapshot(tmp_path) == before  # the cache (inside tmp_path) and everything around it unchanged


def test_hostile_entry_first_is_refused_too(tmp_path, cache):
    # The check does not depend on the manifest coming first.
    archive = write_archive(tmp_path / "bad.tar.gz", [entry("../evil", b"x"), *_base()])
    before = snapshot(tmp_path)
    with pytest.raises(BundleError, match="unsafe entry '../evil'"):
        Bundle.open(archive)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("sizes", [[bundle_mod.UNPACK_FLOOR + 1], [bundle_mod.UNPACK_FLOOR // 2 + 1] * 2],
                         ids=["one big file", "two files adding up"])
def test_decompression_bomb_is_refused(tmp_path, cache, sizes):
    # Real zeros compressed by gzip (about 1000:1): the archive is small, its contents are not.
    files = {f"golden/z{k}.npy": bytes(n) for k, n in enumerate(sizes)}
    archive = write_archive(tmp_path / "bomb.tar.gz",
                            [entry("manifest.json", manifest(files)), *(entry(rel, d) for rel, d in files.items())])
    assert archive.stat().st_size * bundle_mod.UNPACK_RATIO < sum(sizes)  # the premise: it is a bomb
    before = snapshot(tmp_path)
    with pytest.raises(BundleError) as err:
        Bundle.open(archive)
    assert type(err.value) is BundleError and "decompression bomb" in str(err.value)
    assert snapshot(tmp_path) == before


def test_newer_format_in_an_archive_is_refused_with_the_fix(tmp_path, cache):
    files = {"lib/model.so": LIB}
    archive = write_archive(tmp_path / "new.tar.gz", [entry("manifest.json", manifest(files, version=2)),
                                                      entry("lib/model.so", LIB)])
    with pytest.raises(BundleError, match=r"format version 2 is newer than this edgert supports \(1\); upgrade edgert"):
        Bundle.open(archive)


@pytest.mark.parametrize("payload", [b"", b"\x1f\x8b\x08\x00" + os.urandom(200), b"not a tar at all" * 40],
                         ids=["empty", "gzip header then noise", "text"])
def test_garbage_archives_are_refused(tmp_path, cache, payload):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(payload)
    before = snapshot(tmp_path)
    with pytest.raises(BundleError):
        Bundle.open(archive)
    assert snapshot(tmp_path) == before


def test_truncated_archive_is_refused(tmp_path, cache):
    big = os.urandom(200_000)  # incompressible, so the cut lands inside the file's data
    files = {"lib/model.so": big}
    archive = write_archive(tmp_path / "cut.tar.gz", [entry("manifest.json", manifest(files)), entry("lib/model.so", big)])
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    before = snapshot(tmp_path)
    with pytest.raises(BundleError):
        Bundle.open(archive)
    assert snapshot(tmp_path) == before


def _good_archive(tmp_path: Path) -> Path:
    files = {"lib/model.so": LIB, "golden/in0.npy": b"golden bytes"}
    return write_archive(tmp_path / "ok.tar.gz", [entry("manifest.json", manifest(files)),
                                                  *(entry(rel, data) for rel, data in files.items())])


def _relist(root: Path, rel: str, data: bytes) -> None:
    """Rewrites ``rel`` and the manifest's hash for it, as a careful tamperer would."""
    (root / rel).write_bytes(data)
    man = json.loads((root / "manifest.json").read_text())
    man["files"][rel] = hashlib.sha256(data).hexdigest()
    (root / "manifest.json").write_text(json.dumps(man))


TAMPER = {
    "file changed": lambda root: (root / "lib" / "model.so").write_bytes(b"evil code"),
    "file removed": lambda root: (root / "golden" / "in0.npy").unlink(),
    "stray library added": lambda root: (root / "lib" / "libevil.so").write_bytes(b"x"),
    "manifest rewritten to match": lambda root: _relist(root, "lib/model.so", b"evil code"),
    "manifest garbled": lambda root: (root / "manifest.json").write_bytes(b"{not json"),
}


@pytest.mark.parametrize("how", sorted(TAMPER))
def test_a_tampered_cached_copy_is_unpacked_afresh(tmp_path, cache, how):
    archive = _good_archive(tmp_path)
    first = Bundle.open(archive)
    pristine = snapshot(first.path)
    TAMPER[how](first.path)
    assert snapshot(first.path) != pristine  # the premise: the cache entry differs now
    again = Bundle.open(archive)  # would raise BundleIntegrityError (or worse, pass) if the copy were reused
    assert again.path == first.path and snapshot(again.path) == pristine
    assert (again.path / "lib" / "model.so").read_bytes() == LIB
    assert sorted(p.name for p in (cache / "bundles").iterdir()) == [first.path.name]  # no temp or old folder left


def test_a_good_cached_copy_is_reused_not_rewritten(tmp_path, cache):
    archive = _good_archive(tmp_path)
    first = Bundle.open(archive)
    inode = (first.path / "lib" / "model.so").stat().st_ino
    assert Bundle.open(archive).path == first.path
    assert (first.path / "lib" / "model.so").stat().st_ino == inode  # same file: not unpacked again


def test_an_archive_whose_own_files_fail_is_refused_every_time(tmp_path, cache):
    from edgert.errors import BundleIntegrityError

    listed = {"lib/model.so": LIB}
    archive = write_archive(tmp_path / "bad.tar.gz", [entry("manifest.json", manifest(listed)),
                                                      entry("lib/model.so", b"not what the manifest says")])
    for _ in range(2):  # re-unpacking a bad archive gives the same refusal, no loop, nothing else
        with pytest.raises(BundleIntegrityError, match="lib/model.so \\(modified\\)"):
            Bundle.open(archive)
    assert len(list((cache / "bundles").iterdir())) == 1
