"""Profiling the zoo CNN with its real runner: per-function times against the end-to-end latency,
the statistics and warning rules, and `edgert profile` / `edgert results` on the host and under qemu."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device.local import LocalDevice
from edgert.device.profiler import PER_OP_TOLERANCE, LatencyStats, ProfileOptions, build_report, profile
from edgert.runtime.session import _parse_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def zoo_cnn(tmp_path_factory):
    """zoo_cnn(target) -> Bundle of the zoo's digits CNN, compiled once per module."""
    import edgert
    from edgert.zoo import get

    root = tmp_path_factory.mktemp("zoo_cnn")
    built: dict[str, Bundle] = {}

    def get_bundle(target: str) -> Bundle:
        if target not in built:
            built[target] = edgert.compile(get("digits_cnn").onnx_path, target=target, output=root / f"digits_cnn.{target}.edgert")
        return built[target]

    return get_bundle


@pytest.fixture(scope="module")
def host_raw(zoo_cnn):
    """One real `edgert-run --profile --per-op` report of the host bundle (the runner's JSON).

    On one thread: with a pool of two, this model's microsecond kernels summed to 67% of the
    end-to-end median in one run (thread wake-ups between calls fall outside every function).
    """
    bundle = zoo_cnn("host")
    argv = [str(bundle.path / "bin" / "edgert-run"), str(bundle.path), "--golden", "--profile", "--per-op",
            "--warmup", "20", "--repeat", "300"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TVM_NUM_THREADS", "1")
        return _parse_report(LocalDevice().run(argv), LocalDevice())


def _physical_cores() -> int:
    from pathlib import Path

    cores = set()
    for f in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/core_id"):
        package = f.with_name("physical_package_id")
        cores.add((package.read_text().strip() if package.exists() else "0", f.read_text().strip()))
    return len(cores) or __import__("os").cpu_count()


def test_runner_uses_one_thread_per_physical_core_unless_told(zoo_cnn):
    """TVM alone would use half the logical CPUs on x86; the runner sizes the pool itself."""
    import os
    import subprocess

    bundle = zoo_cnn("host")
    argv = [str(bundle.path / "bin" / "edgert-run"), str(bundle.path), "--golden", "--profile", "--repeat", "5"]
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    for extra, want in (({}, _physical_cores()), ({"TVM_NUM_THREADS": "1"}, 1)):
        p = subprocess.run(argv, capture_output=True, text=True, env=env | extra, timeout=120)
        report = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("EDGERT "))[7:])
        assert report["threads"] == want, (extra, report.get("threads"))
    assert build_report(bundle, LocalDevice(), ProfileOptions(), report).threads == 1


def test_per_op_times_sum_to_the_end_to_end_latency(zoo_cnn, host_raw):
    report = build_report(zoo_cnn("host"), LocalDevice(), ProfileOptions(per_op=True, repeat=300), host_raw)
    per_op = report.per_op
    names = [row["name"] for row in per_op["rows"]]
    # Every compiled function of the CNN is timed; the convolutions dominate.
    assert sum("conv2d" in n for n in names) == 3 and any("matmul" in n for n in names)
    assert "conv2d" in names[0]
    assert sum(row["share"] for row in per_op["rows"]) == pytest.approx(1.0)
    assert all(row["calls"] >= 1 for row in per_op["rows"])
    assert abs(per_op["coverage"] - 1) <= PER_OP_TOLERANCE, (per_op["sum_ms"], report.latency.median_ms)
    assert not any("per-function times sum" in w for w in report.warnings)


def test_statistics_and_the_noise_rule(zoo_cnn, host_raw):
    stats = LatencyStats.of([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (stats.min_ms, stats.median_ms, stats.max_ms, stats.mean_ms) == (1.0, 3.0, 10.0, 4.0)
    assert stats.p90_ms == pytest.approx(7.6) and stats.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))

    bundle, dev = zoo_cnn("host"), LocalDevice()
    steady = copy.deepcopy(host_raw) | {"per_op": None}
    steady["run_ms"] = [1.0 + 0.001 * (i % 7) for i in range(100)]
    assert not build_report(bundle, dev, ProfileOptions(), steady).warnings
    noisy = copy.deepcopy(steady)
    noisy["run_ms"][::5] = [1.5] * 20  # every fifth run 50% slower: p90 far above the median
    (warning,) = [w for w in build_report(bundle, dev, ProfileOptions(), noisy).warnings if "noisy measurement" in w]
    assert "p90 is 49% above the median" in warning  # 1.5 vs a median of 1.004 and "--repeat" in warning


def test_throttling_is_reported_when_the_clock_falls(zoo_cnn, host_raw):
    raw = copy.deepcopy(host_raw)
    raw["cpu_freq_khz"] = {"before": {"cpu0": 2_400_000, "cpu1": 2_400_000}, "after": {"cpu0": 1_500_000, "cpu1": 1_400_000}}
    report = build_report(zoo_cnn("host"), LocalDevice(), ProfileOptions(), raw)
    assert report.cpu_mhz["before"]["cpu0"] == 2400.0
    assert any("fell from 2400 to 1500 MHz" in w and "throttled" in w for w in report.warnings)
    raw["cpu_freq_khz"]["after"] = {"cpu0": 2_350_000, "cpu1": 1_000_000}  # the fastest core kept its clock
    assert not any("throttled" in w for w in build_report(zoo_cnn("host"), LocalDevice(), ProfileOptions(), raw).warnings)


def test_cold_start_and_peak_memory(zoo_cnn):
    report = profile(zoo_cnn("host"), LocalDevice(), ProfileOptions(warmup=2, repeat=10))
    cold = report.cold
    assert 0 < cold["first_run_ms"] < cold["cold_ms"] and cold["cold_ms"] >= cold["load_ms"]
    # The runner loads libtvm_runtime (several MB); VmHWM is the runner's own peak, well under Python's.
    assert 4_000 < report.memory["vm_hwm_kb"] < 200_000
    assert len(report.run_ms) == 10 and report.latency.n == 10
    assert any("only 10 timed runs" in w for w in report.warnings)
    json.dumps(report.to_json())  # serialisable as it is


def cli(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.qemu
def test_profile_command_on_host_and_qemu_then_results(zoo_cnn, tmp_path, qemu):
    env = {"EDGERT_DATA_DIR": str(tmp_path / "data")}
    runs = {"local": (zoo_cnn("host"), 200), "qemu": (zoo_cnn("generic-aarch64"), 20)}
    for device, (bundle, repeat) in runs.items():
        out = tmp_path / device
        r = cli("profile", bundle.path, "--device", device, "--repeat", repeat, "--warmup", 3, "--per-op",
                "--json", out / "report.json", "--plot", out / "plots", env=env)
        assert r.exit_code == 0, r.output
        text = r.stdout
        assert f"on {device} (" in text and "latency     median" in text and "cold start" in text
        assert "per function" in text and "fused_conv2d" in text and "recorded as run" in text
        report = json.loads((out / "report.json").read_text())
        assert report["device"] == device and report["latency"]["n"] == repeat and len(report["run_ms"]) == repeat
        assert report["arch"] == {"local": LocalDevice().arch, "qemu": "aarch64"}[device]
        assert report["per_op"]["rows"][0]["share"] > 0.1
        for name in ("latency.png", "per_op.png"):
            data = (out / "plots" / name).read_bytes()
            assert data.startswith(PNG_MAGIC) and len(data) > 5_000
        assert not (out / "plots" / "power.png").exists()  # no --energy, no power plot
    assert "qemu emulates the CPU" in text

    listing = cli("results", env=env).stdout
    lines = listing.splitlines()
    assert lines[0].split()[:3] == ["id", "when", "(UTC)"] and len(lines) == 3
    assert "qemu" in lines[1] and "local" in lines[2] and "digits_cnn.generic-aarch64" in lines[1]
    side = cli("results", "--compare", 1, 2, env=env)
    assert side.exit_code == 0, side.output
    rows = {ln.split("  ")[0].strip(): ln for ln in side.stdout.splitlines()}
    assert "#1" in rows[""] and "#2" in rows[""]
    assert "local" in rows["device"] and "qemu" in rows["device"] and "x)" in rows["median ms"]
    one = cli("results", 2, env=env)
    assert one.exit_code == 0 and "on qemu (aarch64)" in one.stdout


def test_profile_over_ssh_deploys_first(zoo_cnn, sshd, tmp_path):
    """A device that does not see this machine's files gets the bundle deployed, then profiled there."""
    from edgert.device import open_device

    dev = open_device(sshd.spec(tmp_path / "device"))
    try:
        report = profile(zoo_cnn("host"), dev, ProfileOptions(warmup=2, repeat=30, per_op=True))
    finally:
        dev.close()
    assert report.device.startswith("ssh://") and report.latency.n == 30 and report.per_op["rows"]
    runner = list((tmp_path / "device").rglob("bin/edgert-run"))
    assert len(runner) == 1 and not runner[0].is_relative_to(zoo_cnn("host").path)


def test_profile_is_recorded_even_when_its_output_is_cut(zoo_cnn, tmp_path):
    """`edgert profile ... | head -1` closes the pipe early; the run must still be in the history."""
    import os
    import shlex
    import subprocess
    import sys

    env = os.environ | {"EDGERT_DATA_DIR": str(tmp_path / "data")}
    # --plot takes a moment after the table, so the later prints meet an already closed pipe.
    cmd = (f"{shlex.quote(sys.executable)} -m edgert.cli profile {shlex.quote(str(zoo_cnn('host').path))} --repeat 5 "
           f"--plot {shlex.quote(str(tmp_path / 'plots'))} | head -1")
    subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, timeout=300, check=True)
    listed = subprocess.run([sys.executable, "-m", "edgert.cli", "results"], env=env, capture_output=True, text=True, timeout=60)
    assert "digits_cnn.host" in listed.stdout and "local" in listed.stdout, listed.stdout
