"""Profile a bundle on a device: latency distribution, cold start, CPU frequency, peak memory,
time per compiled function and energy per inference.

The measuring happens in the bundle's runner on the device (``edgert-run --profile``, which
prints one ``EDGERT {json}`` line); this module builds its command line, turns its raw numbers
into statistics and warnings, and returns a JSON-serialisable :class:`ProfileReport`. Tables,
plots and the results database are views of that report.
"""
from __future__ import annotations

import json
import platform
import posixpath
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from edgert.bundle import Bundle
from edgert.device.power import PowerSource, PowerSourceError, Trace, rail_energy, target_sources
from edgert.errors import RunError, TargetError

# A measurement is called noisy when its coefficient of variation (std / mean) is above
# NOISY_CV, or its p90 is more than NOISY_TAIL above the median.
NOISY_CV = 0.05
NOISY_TAIL = 0.10
FEW_RUNS = 20  # below this, p90/p99 are little more than the largest runs
THROTTLE_DROP = 0.10  # the fastest core's clock falling by more than this during the runs
PER_OP_TOLERANCE = 0.15  # per-function times should sum to the end-to-end latency within this


@dataclass(frozen=True)
class ProfileOptions:
    warmup: int = 10
    repeat: int = 100
    per_op: bool = False
    energy: bool = False
    power: tuple[PowerSource, ...] = ()  # replaces the target's power sources; empty: the target's, else auto-detect
    idle_s: float = 1.0  # idle baseline before the energy runs
    active_s: float = 2.0  # the energy runs repeat for at least this long
    sample_ms: int = 10  # sampling period of polled power sources
    timeout: float = 600.0

    def __post_init__(self) -> None:
        from edgert.errors import EdgertError

        if self.warmup < 0 or self.repeat < 1:
            raise EdgertError(f"--warmup must be >= 0 and --repeat >= 1 (got {self.warmup}, {self.repeat})")
        if self.idle_s < 0.05 or self.active_s < 0.05 or self.sample_ms < 1:
            raise EdgertError("the energy windows must be at least 0.05 s and the sampling period at least 1 ms")


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_ms: float
    std_ms: float
    min_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, run_ms: list[float]) -> LatencyStats:
        a = np.asarray(run_ms, np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(len(a), float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, float(a.min()),
                   float(p50), float(p90), float(p99), float(a.max()))

    @property
    def cv(self) -> float:
        return self.std_ms / self.mean_ms if self.mean_ms else 0.0

    @property
    def tail(self) -> float:
        return (self.p90_ms - self.median_ms) / self.median_ms if self.median_ms else 0.0


@dataclass(frozen=True)
class OpRow:
    name: str
    kind: str  # "kernel" (compiled by TVM) or "builtin" (the VM's own: allocation, shape checks)
    calls: float  # per run
    ms: float  # self time per run: the median over the instrumented runs
    mean_ms: float  # self time per run: the mean
    share: float  # of the summed medians of all functions


@dataclass
class ProfileReport:
    created: str
    device: str
    arch: str
    bundle: dict
    options: dict
    cold: dict  # load_ms, first_run_ms, cold_ms (load to first result)
    run_ms: list[float]
    latency: LatencyStats
    cpu_mhz: dict  # {"before": {"cpu0": MHz}, "after": {...}}; empty where the device hides it
    # Peak resident KiB: vm_hwm_kb (/proc VmHWM, this program only) and max_rss_kb (getrusage; Linux
    # carries it over exec, so under a big parent such as Python it shows the parent's size).
    memory: dict
    per_op: dict | None = None  # runs, sum_ms, run_ms (median of instrumented runs), coverage, rows
    energy: dict | None = None  # runs, windows, rails (RailEnergy), traces for plots
    warnings: list[str] = field(default_factory=list)
    threads: int | None = None  # the runtime's thread pool (TVM_NUM_THREADS, else one per physical core)

    def to_json(self) -> dict:
        d = asdict(self)
        d["latency"]["cv"] = self.latency.cv
        return d

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def profile(bundle: Bundle, transport, options: ProfileOptions, remote_dir: str | None = None) -> ProfileReport:
    """Profile ``bundle`` on ``transport``. ``remote_dir`` is the bundle's folder on the device;
    None: where it lies for devices that see this machine's files, else deployed first."""
    from edgert.device.compat import check_compatible
    from edgert.device.transport import shares_host_files
    from edgert.runtime.session import _parse_report

    check_compatible(bundle, transport)
    if remote_dir is None:
        if shares_host_files(transport):
            remote_dir = str(bundle.path.resolve())
        else:
            from edgert.device.deploy import deploy

            remote_dir = deploy(bundle, transport, check=False, timeout=options.timeout).remote_dir
    sources = _power_sources(bundle, options) if options.energy else None
    argv = [posixpath.join(remote_dir, bundle.manifest["runtime"]["runner"]), remote_dir, "--golden", "--profile",
            "--warmup", str(options.warmup), "--repeat", str(options.repeat)]
    if options.per_op:
        argv.append("--per-op")
    if sources is not None:
        for s in sources or ("auto",):
            argv += ["--energy", s if isinstance(s, str) else s.runner_spec()]
        argv += ["--idle-ms", str(round(options.idle_s * 1e3)), "--active-ms", str(round(options.active_s * 1e3)),
                 "--sample-ms", str(options.sample_ms)]
    proc = transport.run(argv, timeout=options.timeout)
    _raise_power_error(proc, transport)
    raw = _parse_report(proc, transport)
    if raw.get("mode") != "profile":
        raise RunError(f"the runner on {transport.name} does not profile (an older edgert-run?); "
                       "rebuild the bundle with this edgert ('edgert compile')")
    return build_report(bundle, transport, options, raw)


def _power_sources(bundle: Bundle, options: ProfileOptions) -> tuple[PowerSource, ...]:
    """--power, else the target's rails, else () for the runner's own detection (RAPL, batteries)."""
    if options.power:
        return options.power
    from edgert.compiler.targets import load_target

    try:
        target = load_target(bundle.target["name"])
    except TargetError:
        return ()  # a one-off target file: nothing known, let the runner look
    if not target.power_rails and target.power_command:
        raise PowerSourceError(
            f"target '{target.name}' reports power through '{target.power_command}', which edgert does not sample; "
            "connect a meter and pass --power (e.g. --power /dev/ttyUSB0)"
        )
    return target_sources(target)


def _raise_power_error(proc, transport) -> None:
    """The runner's "energy" failures are the user's power setup, not a broken bundle."""
    for line in proc.stdout.splitlines():
        if line.startswith("EDGERT "):
            try:
                report = json.loads(line[len("EDGERT "):])
            except ValueError:
                return
            if report.get("code") == "energy":
                raise PowerSourceError(f"on {transport.name}: {report.get('message')}")
            return


def build_report(bundle: Bundle, transport, options: ProfileOptions, raw: dict) -> ProfileReport:
    """Statistics and warnings from the runner's raw profile."""
    run_ms = [float(x) for x in raw["run_ms"]]
    latency = LatencyStats.of(run_ms)
    report = ProfileReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        device=transport.name,
        arch=transport.arch,
        bundle=_bundle_info(bundle),
        options={k: v for k, v in asdict(options).items() if k != "power"} | {
            "power": [s.runner_spec() for s in options.power], "host": platform.node()},
        cold={k: float(raw[k]) for k in ("load_ms", "first_run_ms", "cold_ms")},
        run_ms=run_ms,
        latency=latency,
        cpu_mhz={phase: {cpu: khz / 1e3 for cpu, khz in raw["cpu_freq_khz"][phase].items()} for phase in ("before", "after")},
        memory=dict(raw["memory"]),
        threads=int(raw["threads"]) if raw.get("threads") else None,
    )
    if raw.get("per_op"):
        report.per_op = _per_op(raw["per_op"], latency)
    if raw.get("energy"):
        report.energy = _energy(raw["energy"])
    report.warnings = _warnings(report, bundle)
    return report


def _bundle_info(bundle: Bundle) -> dict:
    m = bundle.manifest
    history = [h.get("pass") or h.get("name") or "?" for h in m.get("compression_history", []) if isinstance(h, dict)]
    return {
        "path": str(bundle.path),
        "label": bundle.path.name.removesuffix(".edgert") or m.get("name", "?"),
        "model": m.get("name", "?"),
        "target": bundle.target.get("name", "?"),
        "device_kind": bundle.device_kind,
        "compression": "+".join(history) or "none",
        "model_sha256": m.get("files", {}).get(m["runtime"]["model"], ""),
    }


def _per_op(raw: dict, latency: LatencyStats) -> dict:
    runs = max(int(raw["runs"]), 1)
    total = sum(f["median_ms"] for f in raw["functions"])
    rows = [OpRow(f["name"], "builtin" if f["name"].startswith("vm.") else "kernel", f["calls"] / runs,
                  f["median_ms"], f["self_ms"] / runs, f["median_ms"] / total if total else 0.0) for f in raw["functions"]]
    rows.sort(key=lambda r: (r.ms, r.mean_ms), reverse=True)
    return {
        "runs": runs,
        "sum_ms": total,
        "instrumented_median_ms": float(np.median(raw["run_ms"])),
        # Medians on both sides, so one preempted run moves neither.
        "coverage": total / latency.median_ms if latency.median_ms else 0.0,
        "rows": [asdict(r) for r in rows],
    }


def _energy(raw: dict) -> dict:
    idle = tuple(t / 1e3 for t in raw["idle_ms"])
    active = tuple(t / 1e3 for t in raw["active_ms"])
    traces = [Trace.from_runner(s) for s in raw["sources"]]
    rails = [rail_energy(t, idle, active, int(raw["runs"])) for t in traces]
    plots = []
    for t in traces:
        ts, watts = t.watts()
        plots.append({"name": t.name, "t_s": ts.tolist(), "watts": watts.tolist()})
    return {
        "runs": int(raw["runs"]),
        "idle_s": list(idle),
        "active_s": list(active),
        "sample_ms": raw["sample_ms"],
        "clock_ms": raw["clock_ms"],  # the runner's CLOCK_MONOTONIC at its start: times above are from it
        "sources": [{k: s[k] for k in ("name", "kind", "path", "scale", "max")} for s in raw["sources"]],
        "rails": [asdict(r) for r in rails],
        "traces": plots,
    }


def _warnings(report: ProfileReport, bundle: Bundle) -> list[str]:
    out = []
    lat = report.latency
    if lat.cv > NOISY_CV or lat.tail > NOISY_TAIL:
        out.append(
            f"noisy measurement: std is {lat.cv:.0%} of the mean and p90 is {lat.tail:.0%} above the median "
            f"(noisy above {NOISY_CV:.0%} or {NOISY_TAIL:.0%}); stop other work on the device, fix the CPU governor "
            "at 'performance', and raise --repeat"
        )
    if lat.n < FEW_RUNS:
        out.append(f"only {lat.n} timed runs: p90 and p99 are rough; raise --repeat to 100 or more")
    before, after = report.cpu_mhz["before"], report.cpu_mhz["after"]
    if before and after and max(after.values()) < (1 - THROTTLE_DROP) * max(before.values()):
        out.append(
            f"CPU clock fell from {max(before.values()):.0f} to {max(after.values()):.0f} MHz during the runs: the device "
            "throttled (heat or power limit); cool it (fan, heatsink), or profile fewer runs"
        )
    if report.per_op:
        cov = report.per_op["coverage"]
        if abs(cov - 1) > PER_OP_TOLERANCE:
            out.append(
                f"per-function times sum to {cov:.0%} of the median latency: timing each call disturbs this model "
                "(or the runs are noisy); trust the ranking more than the absolute times"
            )
        if bundle.device_kind == "cuda":
            out.append("per-function times of a CUDA bundle are kernel launch times (launches are asynchronous)")
    if report.energy:
        for rail in report.energy["rails"]:
            if min(rail["readings"]) < 5:
                out.append(f"power source '{rail['name']}' gave only {min(rail['readings'])} readings in a window; "
                           "lengthen --energy-idle/--energy-active or lower --sample-ms")
            if rail["excess_w"] <= 0:
                out.append(f"power source '{rail['name']}': the runs drew no more than idle; "
                           "the energy figure is within the noise of this source")
    if report.device == "qemu":
        out.append("qemu emulates the CPU: times are not those of a real board, and memory includes the emulator")
    return out
