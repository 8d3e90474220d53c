"""The host runner and libedgert.so built with AddressSanitizer + UBSan (toolchain.build_native(...,
sanitize=True): a separate cached build, never shipped) on the golden run, a stream, the RPC
server, every hostile case of hostile_cases.py and the C API program.

Any sanitizer report fails the test: the build aborts on the first one
(-fno-sanitize-recover=all), leak checking is on, and stderr must not hold a report.
libtvm_runtime itself is not instrumented.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_cases as hc  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native runtime is built for Linux")

SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g1")
# A distinct exit status, so a report can never pass for one of the runner's own (2, 5, 6).
SANITIZER_EXIT = 86
ENV = {
    **os.environ,
    "ASAN_OPTIONS": f"detect_leaks=1:halt_on_error=1:exitcode={SANITIZER_EXIT}:detect_stack_use_after_return=1",
    "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:exitcode={SANITIZER_EXIT}",
}
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def assert_clean(stderr: str) -> None:
    found = [r for r in REPORTS if r in stderr]
    assert not found, stderr[-4000:]


@pytest.fixture(scope="module")
def sanitized():
    from edgert.compiler.targets import load_target
    from edgert.compiler.toolchain import build_native

    return build_native(load_target("host"), sanitize=True)


def test_sanitized_build_is_host_only():
    from edgert.compiler.targets import list_targets
    from edgert.compiler.toolchain import build_native
    from edgert.errors import ToolchainError

    other = next(t for t in list_targets() if t.arch != platform.machine())
    with pytest.raises(ToolchainError, match="runs on this machine only"):
        build_native(other, sanitize=True)


def test_build_is_instrumented_and_separate(sanitized, tiny_bundle):
    # Its own folder, and the shipped runner in the bundle is not the sanitized one.
    assert sanitized.runner.parent.parent.parent.name == "native-sanitized"
    shipped = (tiny_bundle("host") / "bin" / "edgert-run").read_bytes()
    assert b"__asan_init" in sanitized.runner.read_bytes() and b"__asan_init" not in shipped
    assert b"__ubsan_handle" in sanitized.libedgert.read_bytes()


# Controls: the same flags and options report planted bugs, with libedgert and libtvm_runtime loaded.
PLANTED = r"""
#include <stdlib.h>
#include "edgert.h"
int main(int argc, char** argv) {
  edgert_model* m = NULL;
  if (edgert_open(argv[1], &m) != EDGERT_OK) return 3;
  if (argv[2][0] == 'o') { volatile char* p = malloc(8); p[8] = 1; free((void*)p); }
  if (argv[2][0] == 'u') { volatile int x = 0x7fffffff; x += argc; }
  if (argv[2][0] != 'l') edgert_close(m);  /* 'l': the model is leaked */
  return 0;
}
"""


@pytest.mark.parametrize("bug, report", [
    ("none", None), ("overflow", "heap-buffer-overflow"), ("leak", "LeakSanitizer"), ("ub", "signed integer overflow"),
])
def test_planted_bugs_are_reported(bug, report, sanitized, tiny_bundle, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    (tmp_path / "planted.c").write_text(PLANTED)
    lib = sanitized.libedgert.parent
    subprocess.run([cc, *SANITIZER_FLAGS, "-I", str(sanitized.header.parent), str(tmp_path / "planted.c"), "-o",
                    str(tmp_path / "planted"), "-L", str(lib), "-ledgert", f"-Wl,-rpath,{lib}"], check=True)
    proc = subprocess.run([tmp_path / "planted", tiny_bundle("host"), bug[0]], capture_output=True, text=True,
                          timeout=120, env=ENV)
    if report is None:
        assert proc.returncode == 0, proc.stderr
        assert_clean(proc.stderr)
    else:
        assert proc.returncode == SANITIZER_EXIT and report in proc.stderr, proc.stderr[-3000:]


def test_golden_run(sanitized, tiny_bundle, tmp_path):
    bundle = tiny_bundle("host")
    code, report, err = hc.run_runner(sanitized.runner, bundle, ["--golden", "--output-dir", tmp_path, "--repeat", "3"],
                                      env=ENV)
    assert code == 0, err
    assert_clean(err)
    for i, out in enumerate(report["outputs"]):
        got, ref = np.load(out["file"]), np.load(bundle / "golden" / f"output_{i}.npy")
        assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))  # as tests/runtime/test_native.py


def test_profile_per_op_run(sanitized, tiny_bundle):
    code, report, err = hc.run_runner(sanitized.runner, tiny_bundle("host"),
                                      ["--golden", "--profile", "--per-op", "--repeat", "10"], env=ENV)
    assert code == 0 and report["mode"] == "profile", err
    assert len(report["run_ms"]) == 10 and report["per_op"]["functions"]
    assert_clean(err)


def test_stream_run_matches_the_shipped_runner(sanitized, stream_bundle, tmp_path):
    np.save(tmp_path / "frames.npy", hc.stream_frames(stream_bundle, 12))
    args = ["--stream", tmp_path / "frames.npy", "--repeat", "2"]
    code, report, err = hc.run_runner(sanitized.runner, stream_bundle, [*args, "--output-dir", tmp_path / "asan"], env=ENV)
    assert code == 0 and report["emitted"] == 12 - report["delay"], err
    assert_clean(err)
    code, _, err = hc.run_runner(stream_bundle / "bin" / "edgert-run", stream_bundle, [*args, "--output-dir", tmp_path / "plain"])
    assert code == 0, err
    # Same model.so and inputs; only the runner's instrumentation differs.
    got, ref = np.load(tmp_path / "asan" / "y.npy"), np.load(tmp_path / "plain" / "y.npy")
    assert got.shape == ref.shape and np.max(np.abs(got - ref)) <= 1e-6 * np.max(np.abs(ref))


@pytest.mark.parametrize("case", hc.BUNDLE_CASES, ids=lambda c: c.name)
def test_hostile_case(case, sanitized, tiny_bundle, tmp_path):
    assert_clean(hc.check_case(case, sanitized.runner, tiny_bundle("host"), tmp_path, env=ENV))


@pytest.mark.parametrize("case", hc.STREAM_CASES, ids=lambda c: c.name)
def test_hostile_stream_case(case, sanitized, stream_bundle, tmp_path):
    assert_clean(hc.check_case(case, sanitized.runner, stream_bundle, tmp_path, env=ENV))


def test_capi_program(sanitized, tiny_bundle, stream_bundle, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler (cc) is needed; apt-get install gcc"
    exe = hc.build_capi_program(cc, sanitized.header.parent, sanitized.libedgert.parent, tmp_path, SANITIZER_FLAGS)
    bundle = tiny_bundle("host")
    cases, y, err = hc.run_capi_program(exe, bundle, tmp_path, stream_bundle, env=ENV)
    assert_clean(err)
    hc.check_capi_cases(cases, hc.CAPI_EXPECT)
    hc.check_capi_cases(cases, hc.CAPI_STREAM_EXPECT)
    ref = np.load(bundle / "golden" / "output_0.npy")
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_rpc_server_start_stop_and_refusal(sanitized):
    proc = subprocess.run([sanitized.runner, "--rpc-server", "--host", "0.0.0.0"], capture_output=True, text=True,
                          timeout=60, env=ENV)
    assert proc.returncode == 2 and '"code":"usage"' in proc.stdout, proc.stdout + proc.stderr
    assert_clean(proc.stderr)
    server = subprocess.Popen([sanitized.runner, "--rpc-server", "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        info = json.loads(server.stdout.readline()[len("EDGERT "):])
        assert info["status"] == "listening" and info["host"] == "127.0.0.1"
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert_clean(err)
