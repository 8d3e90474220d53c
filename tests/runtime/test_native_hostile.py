"""The shipped native runtime (edgert-run, libedgert.so) under hostile inputs, and its network
listeners.

Every refused case asserts the exit status, the EDGERT code and a piece of the message, and that
neither the output folder nor the bundle changed (hostile_cases.check_case). Listening sockets are
seen two ways: an LD_PRELOAD probe logging every bind()/listen() (checked to log the RPC server's),
and the process's sockets in /proc.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile_cases as hc  # noqa: E402

from edgert.errors import TuningError  # noqa: E402

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native runtime is built for Linux")


# ------------------------------------------------------------------ hostile inputs, manifests, files


@pytest.mark.parametrize("case", hc.BUNDLE_CASES, ids=lambda c: c.name)
def test_runner_refuses(case, tiny_bundle, tmp_path):
    hc.check_case(case, None, tiny_bundle("host"), tmp_path)


@pytest.mark.parametrize("case", hc.STREAM_CASES, ids=lambda c: c.name)
def test_runner_refuses_stream(case, stream_bundle, tmp_path):
    hc.check_case(case, None, stream_bundle, tmp_path)


# The device's runner is the same code built for the device: the aarch64 build under qemu refuses
# what leads out of the bundle, what is no regular file, and declared sizes that wrap around.
QEMU = ("qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu")
ON_DEVICE = ("model_symlink_outside", "manifest_path_dotdot", "golden_not_listed", "listed_file_fifo",
             "manifest_tensor_wraps_around", "npy_shape_wraps_around", "npy_fifo")


@pytest.mark.qemu
@pytest.mark.parametrize("case", [c for c in hc.BUNDLE_CASES if c.name in ON_DEVICE], ids=lambda c: c.name)
def test_aarch64_runner_refuses_under_qemu(case, qemu, tiny_bundle, tmp_path):
    hc.check_case(case, None, tiny_bundle("generic-aarch64"), tmp_path, prefix=QEMU)


def test_stream_golden_run(stream_bundle, tmp_path):
    """The valid stream next to the refused ones: it runs and emits every step past the delay."""
    frames = hc.stream_frames(stream_bundle, 12)
    np.save(tmp_path / "frames.npy", frames)
    code, report, _ = hc.run_runner(stream_bundle / "bin" / "edgert-run", stream_bundle,
                                    ["--stream", tmp_path / "frames.npy", "--output-dir", tmp_path / "out"])
    assert code == 0 and report["mode"] == "stream", report
    assert report["emitted"] == 12 - report["delay"] > 0
    y = np.load(tmp_path / "out" / "y.npy")
    assert y.shape == (report["emitted"], 1, 3, 1) and np.isfinite(y).all()


# ------------------------------------------------------------------ nothing is loaded before the hashes


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("a C compiler (cc) is needed to build the test programs; apt-get install gcc")
    return cc


@pytest.fixture(scope="module")
def marker_library(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("marker") / "marker.so"
    subprocess.run([_cc(), "-shared", "-fPIC", str(HERE / "marker_library.c"), "-o", str(out)], check=True)
    return out


def _plant(bundle: Path, library: Path, scratch: Path, how: str) -> None:
    model = bundle / "lib" / "model.so"
    model.unlink()
    m = hc.manifest(bundle)
    if how == "replaced":  # the manifest still has the real model's hash
        shutil.copy(library, model)
    elif how == "symlinked":  # the hash is the library's, but the file lives outside the bundle
        shutil.copy(library, scratch / "evil.so")
        model.symlink_to(scratch / "evil.so")
        m["files"]["lib/model.so"] = hc.sha256(library)
    else:  # "rehashed": in place with a matching hash, so it is loaded (the probe works)
        shutil.copy(library, model)
        m["files"]["lib/model.so"] = hc.sha256(library)
    hc.write_manifest(bundle, m)


@pytest.mark.parametrize("how, expect", [
    ("replaced", (5, "integrity", "lib/model.so (modified)", False)),
    ("symlinked", (5, "integrity", "'lib/model.so' points outside the bundle", False)),
    ("rehashed", (6, "runtime", "vm_load_executable", True)),
])
def test_model_library_runs_only_after_its_hash_matches(how, expect, tiny_bundle, marker_library, tmp_path):
    bundle = Path(shutil.copytree(tiny_bundle("host"), tmp_path / "bundle"))
    _plant(bundle, marker_library, tmp_path, how)
    marker = tmp_path / "loaded"
    env = {**os.environ, "EDGERT_TEST_MARKER": str(marker)}
    code, report, _ = hc.run_runner(bundle / "bin" / "edgert-run", bundle, ["--golden"], env=env)
    exit_code, json_code, message, loaded = expect
    assert (code, report["code"]) == (exit_code, json_code), report
    assert message in report["message"]
    assert marker.exists() == loaded


# ------------------------------------------------------------------ the C API


def test_capi_error_paths(tiny_bundle, stream_bundle, tmp_path):
    bundle = tiny_bundle("host")
    exe = hc.build_capi_program(_cc(), bundle / "include", bundle / "lib", tmp_path)
    cases, y, _ = hc.run_capi_program(exe, bundle, tmp_path, stream_bundle)
    hc.check_capi_cases(cases, hc.CAPI_EXPECT)
    hc.check_capi_cases(cases, hc.CAPI_STREAM_EXPECT)
    assert cases["input_nbytes"][0] == cases["input_file_bytes"][0] == 3 * 8 * 8 * 4
    # The good run among the refused calls: output 0 as onnxruntime computed it (tolerance as test_native).
    ref = np.load(bundle / "golden" / "output_0.npy")
    assert np.max(np.abs(y - ref)) <= 1e-4 * np.max(np.abs(ref))


# ------------------------------------------------------------------ no network listener by default


@pytest.fixture(scope="module")
def listen_probe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "listen_probe.so"
    subprocess.run([_cc(), "-shared", "-fPIC", str(HERE / "listen_probe.c"), "-o", str(out), "-ldl"], check=True)
    return out


def _probe_env(probe: Path, log: Path) -> dict:
    return {**os.environ, "LD_PRELOAD": str(probe), "EDGERT_LISTEN_LOG": str(log)}


def _listening_sockets(pid: int) -> list[str]:
    """Local addresses ("0100007F:1F90") of the TCP sockets in LISTEN state that pid owns."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: TCP_LISTEN
                found.append(cols[1])
    return found


@pytest.mark.parametrize("mode", ["run", "profile", "stream"])
def test_runner_modes_open_no_listener(mode, tiny_bundle, stream_bundle, listen_probe, tmp_path):
    log = tmp_path / "listen.log"
    if mode == "stream":
        np.save(tmp_path / "frames.npy", hc.stream_frames(stream_bundle, 6))
        bundle, args = stream_bundle, ["--stream", tmp_path / "frames.npy"]
    else:
        bundle = tiny_bundle("host")
        args = ["--golden"] + (["--profile", "--per-op", "--repeat", "5"] if mode == "profile" else [])
    code, report, err = hc.run_runner(bundle / "bin" / "edgert-run", bundle, args, env=_probe_env(listen_probe, log))
    assert code == 0 and report["status"] == "ok", err
    assert not log.exists(), log.read_text()


def test_profile_run_owns_no_listening_socket(tiny_bundle, tmp_path):
    """/proc seen from outside during a long profile run: no socket of the runner listens."""
    bundle = tiny_bundle("host")
    proc = subprocess.Popen([bundle / "bin" / "edgert-run", bundle, "--golden", "--profile", "--repeat", "200000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, listening = 0, []
    try:
        while proc.poll() is None and samples < 100:
            try:
                listening += _listening_sockets(proc.pid)
                samples += 1
            except FileNotFoundError:
                break  # it just exited
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert samples >= 10, f"the run ended before /proc could be sampled ({samples} samples)"
    assert listening == []


def _start_server(runner: Path, args: list[str], env: dict) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([runner, "--rpc-server", "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    assert line.startswith("EDGERT "), line
    return proc, json.loads(line[len("EDGERT "):])


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("host_args, address", [
    ([], "0100007F"),  # the default: 127.0.0.1
    (["--host", "localhost"], None),  # a name for loopback is loopback
    (["--host", "0.0.0.0", "--allow-remote"], "00000000"),  # asked for explicitly
])
def test_rpc_server_binds_what_it_was_asked(host_args, address, tiny_bundle, listen_probe, tmp_path):
    log = tmp_path / "listen.log"
    proc, info = _start_server(tiny_bundle("host") / "bin" / "edgert-run", host_args, _probe_env(listen_probe, log))
    try:
        assert info["status"] == "listening", info
        sockets = _listening_sockets(proc.pid)
    finally:
        _stop(proc)
    port = f"{info['port']:04X}"
    assert len(sockets) == 1 and sockets[0].endswith(":" + port), sockets
    if address is not None:
        assert sockets[0] == f"{address}:{port}"
    else:  # 127.0.0.1 or ::1
        assert sockets[0] in (f"0100007F:{port}", f"00000000000000000000000001000000:{port}")
    assert "listen" in log.read_text()  # the probe sees the one listener there is


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_rpc_server_refuses_a_remote_host(host, tiny_bundle, listen_probe, tmp_path):
    log = tmp_path / "listen.log"
    runner = tiny_bundle("host") / "bin" / "edgert-run"
    proc = subprocess.run([runner, "--rpc-server", "--host", host, "--port", "0"], capture_output=True, text=True,
                          timeout=60, env=_probe_env(listen_probe, log))
    report = json.loads(proc.stdout.splitlines()[-1][len("EDGERT "):])
    assert (proc.returncode, report["code"]) == (2, "usage"), report
    assert "is not a loopback address" in report["message"] and "--allow-remote" in report["message"]
    assert not log.exists(), log.read_text()  # refused before any socket was bound


class _Lines:
    """A BackgroundCommand that prints given lines."""

    def __init__(self, *lines: str):
        self.lines = list(lines)

    def readline(self, timeout: float) -> str | None:
        return self.lines.pop(0) if self.lines else None

    def poll(self) -> int | None:
        return None if self.lines else 0

    def log_tail(self) -> str:
        return ""


def test_python_side_uses_only_a_loopback_server():
    from edgert.compiler import rpc

    ok = 'EDGERT {"status":"listening","host":"127.0.0.1","port":4321,"pid":7}'
    assert rpc._wait_listening(_Lines(ok), "dev", 5) == (4321, 7)
    for host in ("0.0.0.0", "10.1.2.3", "::"):
        line = ok.replace("127.0.0.1", host)
        with pytest.raises(TuningError, match="not on loopback"):
            rpc._wait_listening(_Lines(line), "dev", 5)


def test_python_rpc_server_listens_on_loopback(tiny_bundle):
    """rpc_server on this machine: the endpoint is 127.0.0.1 and the server owns one loopback listener."""
    from edgert.compiler import rpc

    with rpc.rpc_server("host", "local", start_timeout=60) as ep:
        assert ep.host == "127.0.0.1" and ep.server_pid
        sockets = _listening_sockets(ep.server_pid)
    assert sockets == [f"0100007F:{ep.port:04X}"]
