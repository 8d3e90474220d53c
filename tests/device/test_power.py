"""Power sources and energy per inference: the real runner samples a power source whose readings
follow a known trace (a sysfs-like file rewritten by a helper thread, a wrapping energy counter,
a voltage/current pair, or a meter streaming lines over a pseudo-terminal); the joules per
inference it reports must match what the trace implies within 5%."""
from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import tty

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.bundle import Bundle
from edgert.cli import main
from edgert.device import results
from edgert.device.local import LocalDevice
from edgert.device.power import PowerSource, PowerSourceError, Trace, parse_power_arg, rail_energy, target_sources
from edgert.device.profiler import ProfileOptions, profile

# ------------------------------------------------------------------ specs


def test_power_arg_tells_kind_and_unit_from_the_file_name():
    rapl = parse_power_arg("/sys/class/powercap/intel-rapl:0/energy_uj")
    assert (rapl.name, rapl.kind, rapl.scale) == ("intel-rapl:0", "energy", 1e-6)
    assert parse_power_arg("bat=/sys/class/power_supply/BAT0/power_now") == PowerSource(
        "bat", "power", "/sys/class/power_supply/BAT0/power_now", scale=1e-6)
    assert parse_power_arg("/sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0/in_power0_input").scale == 1e-3
    meter = parse_power_arg("/dev/ttyUSB0")
    assert (meter.kind, meter.baud) == ("stream", 115200)
    full = parse_power_arg("name=VDD_IN,kind=vi,path=/a/in1_input,path2=/a/curr1_input,scale=1e-6")
    assert full.runner_spec() == "name=VDD_IN,kind=vi,path=/a/in1_input,path2=/a/curr1_input,scale=1e-06"


@pytest.mark.parametrize("bad, needle", [
    ("/tmp/something.txt", "cannot tell what"),
    ("kind=volts,path=/a", "kind 'volts'"),
    ("kind=vi,path=/a", "path2"),
    ("kind=power,path=/a,scale=x", "must be numbers"),
    ("kind=power,path=/a,colour=red", "KEY=VALUE"),
])
def test_bad_power_args_say_what_to_write(bad, needle):
    with pytest.raises(PowerSourceError, match=needle):
        parse_power_arg(bad)


def test_jetson_target_names_its_ina3221_rails():
    from edgert.compiler.targets import load_target

    rails = target_sources(load_target("jetson-orin-nano"))
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert all(r.kind == "vi" and r.scale == 1e-6 and r.path.endswith("_input") and "curr" in r.path2 for r in rails)


def test_counter_wraps_are_undone():
    # 1 W for 10 s read every 0.5 s as microjoules, wrapping at 3 J.
    t = np.arange(0, 10.01, 0.5)
    raw = (t * 1e6) % 3e6
    trace = Trace("pkg", "energy", 1e-6, 3e6, t, raw)
    assert trace.energy(1.0, 9.0) == pytest.approx(8.0)
    r = rail_energy(trace, (0.0, 4.0), (4.0, 10.0), runs=6)
    assert r.idle_w == pytest.approx(1.0) and r.joules_per_inference == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------ the runner against known traces

IDLE_S, ACTIVE_S, SAMPLE_MS = 0.5, 1.0, 5
WRAP_UJ = 2e6  # the fake energy counter wraps every 2 J, several times per test


def trace_power(u: float) -> float:
    """Watts at u seconds after the helper started: a ramp (so the runs draw more than idle) and a wobble."""
    return 2.0 + 3.0 * u + 0.5 * math.sin(2 * math.pi * u / 0.3)


def trace_energy(u: float) -> float:
    """Joules from 0 to u of trace_power."""
    w = 2 * math.pi / 0.3
    return 2.0 * u + 1.5 * u * u + 0.5 / w * (1 - math.cos(w * u))


class TraceWriter(threading.Thread):
    """Rewrites files (or writes meter lines to a pty) with the trace's value every ~1 ms."""

    def __init__(self, kind: str, paths: list, start: float):
        super().__init__(daemon=True)
        self.kind, self.paths, self.start_at = kind, paths, start
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            u = time.monotonic() - self.start_at
            if self.kind == "power":
                self._put(self.paths[0], f"{round(trace_power(u) * 1e6)}\n")  # microwatts, like power_now
            elif self.kind == "vi":
                self._put(self.paths[0], "5000\n")  # mV
                self._put(self.paths[1], f"{round(trace_power(u) / 5.0 * 1e3)}\n")  # mA
            elif self.kind == "energy":
                self._put(self.paths[0], f"{round(trace_energy(u) * 1e6) % int(WRAP_UJ)}\n")  # wrapping microjoules
            else:
                with contextlib.suppress(BlockingIOError):
                    os.write(self.paths[0], f"{trace_power(u):.5f} W\n".encode())  # a meter's line
            time.sleep(0.001 if self.kind != "stream" else 0.004)

    @staticmethod
    def _put(path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)  # a reader sees the old or the new value, never half of one


def expected_joules_per_inference(energy: dict, start: float) -> float:
    """What the trace implies over the runner's own windows (same clock: CLOCK_MONOTONIC)."""
    base = energy["clock_ms"] / 1e3 - start
    (a, b), (c, d) = [(base + x, base + y) for x, y in (energy["idle_s"], energy["active_s"])]
    idle_w = (trace_energy(b) - trace_energy(a)) / (b - a)
    return (trace_energy(d) - trace_energy(c) - idle_w * (d - c)) / energy["runs"]


@pytest.mark.parametrize("kind", ["power", "vi", "energy", "stream"])
def test_joules_per_inference_match_the_trace(kind, tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle("host"))
    fds = []
    if kind == "stream":
        master, slave = os.openpty()
        fds = [master, slave]
        tty.setraw(slave)  # no echo back into a master nobody reads
        os.set_blocking(master, False)  # once the runner is gone, a full buffer must not stall the writer
        paths = [master]
        source = PowerSource("meter", "stream", os.ttyname(slave), baud=115200)
    else:
        paths = [tmp_path / "in1_input", tmp_path / "curr1_input"][: 2 if kind == "vi" else 1]
        scale = {"power": 1e-6, "vi": 1e-6, "energy": 1e-6}[kind]
        source = PowerSource("rail", kind, str(paths[0]), str(paths[1]) if kind == "vi" else "", scale=scale,
                             max=WRAP_UJ if kind == "energy" else 0.0)
    start = time.monotonic()
    writer = TraceWriter(kind, paths, start)
    writer.start()
    time.sleep(0.05)  # files exist before the runner checks them
    try:
        options = ProfileOptions(warmup=2, repeat=5, energy=True, power=(source,), idle_s=IDLE_S, active_s=ACTIVE_S,
                                 sample_ms=SAMPLE_MS)
        report = profile(bundle, LocalDevice(), options)
    finally:
        writer.done.set()
        writer.join()
        for fd in fds:
            os.close(fd)
    energy = report.energy
    (rail,) = energy["rails"]
    want = expected_joules_per_inference(energy, start)
    assert rail["joules_per_inference"] == pytest.approx(want, rel=0.05), (rail, want)
    assert min(rail["readings"]) >= 20  # the sampler (or the meter) kept up
    assert rail["excess_w"] > 1.0  # the ramp: the runs came later than the idle baseline
    a, b = (x + energy["clock_ms"] / 1e3 - start for x in energy["idle_s"])
    assert rail["idle_w"] == pytest.approx((trace_energy(b) - trace_energy(a)) / (b - a), rel=0.02)
    trace = energy["traces"][0]
    assert len(trace["t_s"]) == len(trace["watts"]) > 50


def test_unreadable_power_source_is_one_line_with_the_path(tiny_bundle, tmp_path):
    missing = tmp_path / "nowhere" / "energy_uj"
    r = CliRunner().invoke(main, ["profile", str(tiny_bundle("host")), "--repeat", "2", "--no-record",
                                  "--power", str(missing)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0] and "No such file" in lines[0]


def test_profile_command_prints_energy_and_plots_the_power_trace(tiny_bundle, tmp_path, monkeypatch):
    power = tmp_path / "power_now"
    writer = TraceWriter("power", [power], time.monotonic())
    writer.start()
    time.sleep(0.05)
    try:
        r = CliRunner(env={"EDGERT_DATA_DIR": str(tmp_path / "data")}).invoke(main, [
            "profile", str(tiny_bundle("host")), "--repeat", "20", "--power", f"board={power}", "--energy-idle", "0.3",
            "--energy-active", "0.5", "--sample-ms", "5", "--plot", str(tmp_path / "plots"), "--json", str(tmp_path / "r.json")])
    finally:
        writer.done.set()
        writer.join()
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("energy ("))
    assert lines[head + 1].split() == ["rail", "idle", "W", "active", "W", "model", "W", "mJ/inference"]
    row = lines[head + 2].split()
    assert row[0] == "board" and float(row[2]) > float(row[1]) > 1.5 and float(row[4]) > 0
    assert (tmp_path / "plots" / "power.png").read_bytes().startswith(b"\x89PNG")
    monkeypatch.setenv("EDGERT_DATA_DIR", str(tmp_path / "data"))
    (run,) = results.runs()
    assert run.mj_per_inference == pytest.approx(float(row[4]), rel=1e-3)


def test_energy_with_no_source_named_uses_what_the_device_has(tiny_bundle):
    """The host target names no rails, so the runner looks for RAPL packages and batteries itself."""
    import glob

    found = glob.glob("/sys/class/powercap/intel-rapl:*/energy_uj") + glob.glob("/sys/class/power_supply/*/power_now")
    options = ProfileOptions(warmup=1, repeat=3, energy=True, idle_s=0.2, active_s=0.3)
    bundle = Bundle.open(tiny_bundle("host"))
    if not found:  # this VM: nothing to read, and the error says what to pass
        with pytest.raises(PowerSourceError, match="no power source found.*--power"):
            profile(bundle, LocalDevice(), options)
    elif not all(os.access(p, os.R_OK) for p in found):  # RAPL is root-only on recent kernels
        with pytest.raises(PowerSourceError, match="chmod a\\+r"):
            profile(bundle, LocalDevice(), options)
    else:
        report = profile(bundle, LocalDevice(), options)
        assert report.energy["rails"] and all(r["idle_w"] >= 0 for r in report.energy["rails"])
