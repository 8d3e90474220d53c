"""Put a bundle on a device: content-addressed, incremental, verified, atomic.

The bundle goes to ``<workdir>/bundles/<digest>/``, the digest taken over every file's sha256
(manifest included), so the same bundle always lands in the same place and a different one
never overwrites it. Files go first into ``<workdir>/bundles/.<digest>.partial/``; files
already there (in the final folder or left by an interrupted deploy) with the right hash are
not sent again. Only when every file's hash checks out on the device is the folder renamed into
place, in one step: a folder under its final name is always complete. A transfer killed half
way leaves only the ``.partial`` folder, which the next deploy resumes. A final folder found
damaged (a file changed on the device) is moved back to ``.partial`` and repaired.

The device needs a POSIX sh with sha256sum, mkdir, mv, rm and chmod (coreutils, busybox or
Android's toybox).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from edgert.bundle import MANIFEST, Bundle
from edgert.device.compat import check_compatible
from edgert.device.transport import Transport, check_run, sh
from edgert.errors import BundleError, BundleIntegrityError
from edgert.fsutil import sha256_file

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")

# Prints "F <file>" for each file under lib/ and bin/ (the runner refuses strays there),
# then sha256sum lines for those of the given files that exist. Nothing if the folder is absent.
_STATE = ('command -v sha256sum >/dev/null 2>&1 || { echo "sha256sum not found; install coreutils or busybox on the device" >&2; '
          'exit 127; }; cd "$1" 2>/dev/null || exit 0; shift; for f in lib/* bin/*; do [ -f "$f" ] && printf "F %s\\n" "$f"; done; '
          'for f in "$@"; do [ -f "$f" ] && sha256sum "$f"; done; exit 0')
# $1 partial, $2 final: a complete partial folder becomes the final one (unless a concurrent deploy won).
_PROMOTE = 'if [ -e "$2" ]; then rm -rf "$1"; else mv "$1" "$2"; fi'
# $1 final, $2 partial: a damaged final folder goes back to being repaired.
_DEMOTE = 'rm -rf "$2" && mv "$1" "$2"'


@dataclass(frozen=True)
class Deployment:
    """A bundle on a device."""

    device: str  # the transport's name
    remote_dir: str  # the bundle's folder on the device
    digest: str
    runner: str  # the runner's path on the device
    sent: tuple[str, ...]  # files sent this time (relative to the bundle)
    skipped: tuple[str, ...]  # files already there with the right hash
    damaged: tuple[str, ...]  # files found on the device with a wrong hash (changed, or cut off by an interrupted deploy); re-sent
    bytes_sent: int
    checked: bool  # the golden check ran on the device and passed


def bundle_digest(bundle: Bundle) -> str:
    """Content address of a bundle: sha256 over each file's name and sha256, manifest included."""
    return hashlib.sha256(json.dumps(_expected(bundle), sort_keys=True).encode()).hexdigest()[:32]


def deploy(
    bundle: Bundle | str | Path,
    transport: Transport,
    *,
    check: bool = True,
    timeout: float = 600.0,
) -> Deployment:
    """Put ``bundle`` on the device behind ``transport`` (see the module docstring).

    ``check``: run the bundle's golden input there and compare with its golden output
    (CheckFailedError on a mismatch; the bundle stays deployed). ``timeout``: seconds for
    each transfer or command. Raises BundleIntegrityError if the files cannot be made to match
    on the device, TransportError/TransportTimeout/TransportClosed if the device fails.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    check_compatible(bundle, transport, timeout=min(timeout, 60.0))
    expected = _expected(bundle)
    digest = bundle_digest(bundle)
    root = posixpath.join(transport.workdir(), "bundles")
    final = posixpath.join(root, digest)
    partial = posixpath.join(root, f".{digest}.partial")
    runner = posixpath.join(final, bundle.manifest["runtime"]["runner"])

    strays, hashes = _state(transport, final, expected, timeout)
    damaged = sorted(rel for rel, h in hashes.items() if h != expected[rel])
    if hashes == expected and not strays:
        dep = Deployment(transport.name, final, digest, runner, (), tuple(sorted(expected)), (), 0, False)
        return _golden(bundle, transport, dep, timeout) if check else dep
    if hashes or strays:
        check_run(transport, sh(_DEMOTE, final, partial), "moving a damaged bundle aside", timeout)

    sent: list[str] = []
    nbytes = 0
    for attempt in range(2):  # a file that arrives wrong is sent once more
        strays, hashes = _state(transport, partial, expected, timeout)
        if attempt == 0:
            damaged = sorted(set(damaged) | {rel for rel, h in hashes.items() if h != expected[rel]})
        todo = sorted(rel for rel in expected if hashes.get(rel) != expected[rel])
        if not todo and not strays:
            break
        if attempt == 1 and todo:
            raise BundleIntegrityError(
                f"{', '.join(todo)} of bundle {bundle.path.name} arrived damaged on {transport.name} twice; "
                "check the device's storage and the connection, then deploy again"
            )
        if strays:
            check_run(transport, ["rm", "-f", *(posixpath.join(partial, s) for s in strays)], "removing stray files", timeout)
        for rel in todo:
            local = bundle.path / rel
            transport.push(local, posixpath.join(partial, rel), timeout=timeout)
            sent.append(rel)
            nbytes += local.stat().st_size
    check_run(transport, ["chmod", "755", posixpath.join(partial, bundle.manifest["runtime"]["runner"])],
              "chmod", timeout)
    check_run(transport, sh(_PROMOTE, partial, final), "moving the bundle into place", timeout)
    skipped = tuple(sorted(set(expected) - set(sent)))
    dep = Deployment(transport.name, final, digest, runner, tuple(sent), skipped, tuple(damaged), nbytes, False)
    return _golden(bundle, transport, dep, timeout) if check else dep


def _expected(bundle: Bundle) -> dict[str, str]:
    files = dict(bundle.manifest["files"])
    files[MANIFEST] = sha256_file(bundle.path / MANIFEST)
    bad = [rel for rel in files if not _SAFE_NAME.fullmatch(rel) or ".." in rel.split("/")]
    if bad:
        raise BundleError(f"bundle {bundle.path} lists unsafe file names ({', '.join(bad)}); rebuild it with 'edgert compile'")
    return files


def _state(transport: Transport, folder: str, expected: dict[str, str], timeout: float) -> tuple[list[str], dict[str, str]]:
    """(stray files under lib/ and bin/, {file: sha256} of the expected files present) in ``folder``."""
    out = check_run(transport, sh(_STATE, folder, *sorted(expected)), "listing the bundle's files", timeout).stdout
    strays, hashes = [], {}
    for line in out.splitlines():
        if line.startswith("F "):
            if line[2:] not in expected:
                strays.append(line[2:])
        elif line.strip():
            digest, _, name = line.partition(" ")
            name = name.strip().lstrip("*")
            if name in expected and re.fullmatch(r"[0-9a-f]{64}", digest):
                hashes[name] = digest
    return strays, hashes


def _golden(bundle: Bundle, transport: Transport, dep: Deployment, timeout: float) -> Deployment:
    from dataclasses import replace

    from edgert.runtime.session import check, run_deployed

    result = run_deployed(bundle, transport, dep.remote_dir, None, timeout=timeout)
    check(result.outputs, bundle)
    return replace(dep, checked=True)
