"""TEST DOUBLE of Android's `adb` command, for tests only: no phone exists on the test machine.

It does what edgert's adb transport asks of adb, on this machine's files instead of a phone's:
- ``adb [-s SERIAL] shell COMMAND...``: joins the words with spaces (as adb does) and runs the
  line with /bin/sh, passing back stdout, stderr and the exit status (as adb >= 7 does);
- ``adb [-s SERIAL] push LOCAL REMOTE`` and ``pull REMOTE LOCAL``: copy one file, printing what
  adb prints, and failing with adb's message when the source is missing.
FAKE_ADB_SERIAL names the one device it pretends is connected (none if empty); any other -s,
or none connected, fails with adb's own error text and status.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def main(argv: list[str]) -> int:
    serial = os.environ.get("FAKE_ADB_SERIAL", "")
    if argv[:1] == ["-s"]:
        wanted, argv = argv[1], argv[2:]
        if wanted != serial:
            print(f"adb: device '{wanted}' not found", file=sys.stderr)
            return 1
    if not serial:
        print("adb: no devices/emulators found", file=sys.stderr)
        return 1
    cmd, args = argv[0], argv[1:]
    if cmd == "shell":
        return subprocess.run(["/bin/sh", "-c", " ".join(args)], stdin=subprocess.DEVNULL).returncode
    if cmd in ("push", "pull"):
        src, dst = args
        if not os.path.isfile(src):
            where = "local" if cmd == "push" else "remote"
            print(f"adb: error: failed to stat {where} object '{src}': No such file or directory", file=sys.stderr)
            return 1
        shutil.copy2(src, dst)
        print(f"{src}: 1 file {cmd}ed, 0 skipped.")
        return 0
    print(f"adb: unknown command {cmd}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
