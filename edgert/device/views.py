"""Views of a profile report (its JSON form): the text table and PNG plots."""
from __future__ import annotations

import io
from pathlib import Path

from edgert.errors import MissingDependencyError

TOP_OPS = 15  # rows of the per-function table; the rest are summed on one line


def ms(x: float) -> str:
    """Milliseconds with the digits that matter from 40 us to seconds."""
    return f"{x:.4f}" if x < 1 else f"{x:.3f}" if x < 100 else f"{x:.1f}"


def table(r: dict) -> str:
    """The report as text, as `edgert profile` prints it."""
    b, lat, opts = r["bundle"], r["latency"], r["options"]
    lines = [
        f"{b['label']} ({b['target']}, {b['compression']}) on {r['device']} ({r['arch']}): "
        f"{lat['n']} timed runs after {opts['warmup']} warm-up" + (f", {r['threads']} thread(s)" if r.get("threads") else ""),
        f"  latency     median {ms(lat['median_ms'])} ms   mean {ms(lat['mean_ms'])}   std {ms(lat['std_ms'])} "
        f"({lat['cv']:.1%})   min {ms(lat['min_ms'])}   p90 {ms(lat['p90_ms'])}   p99 {ms(lat['p99_ms'])}   max {ms(lat['max_ms'])}",
        f"  cold start  {ms(r['cold']['cold_ms'])} ms (load {ms(r['cold']['load_ms'])} ms + first run "
        f"{ms(r['cold']['first_run_ms'])} ms)",
        f"  CPU clock   {_clock(r['cpu_mhz'])}",
        f"  peak memory {_memory(r['memory'])}",
    ]
    if r.get("per_op"):
        lines += _per_op_lines(r["per_op"])
    if r.get("energy"):
        lines += _energy_lines(r["energy"])
    lines += [f"warning: {w}" for w in r.get("warnings", [])]
    return "\n".join(lines)


def _clock(cpu: dict) -> str:
    before, after = cpu["before"], cpu["after"]
    if not before or not after:
        return "not exposed by the device (no cpufreq)"
    return f"{max(before.values()):.0f} MHz before, {max(after.values()):.0f} MHz after (fastest core)"


def peak_kib(mem: dict) -> int | None:
    """VmHWM where the device has /proc (ru_maxrss survives exec, so it may be the launcher's)."""
    return mem.get("vm_hwm_kb") if mem.get("vm_hwm_kb") is not None else mem.get("max_rss_kb")


def _memory(mem: dict) -> str:
    kib = peak_kib(mem)
    return "unknown" if kib is None else f"{kib / 1024:.1f} MiB resident (runner process)"


def _per_op_lines(p: dict) -> list[str]:
    rows = p["rows"]
    width = max([len(row["name"]) for row in rows[:TOP_OPS]] + [8])
    lines = [
        f"per function ({p['runs']} instrumented runs; median self time per run, slowest first): "
        f"sum {ms(p['sum_ms'])} ms = {p['coverage']:.0%} of the median latency",
        f"  {'#':>3}  {'function':<{width}}  {'kind':<7}  {'calls':>5}  {'ms/run':>8}  {'share':>6}",
    ]
    for i, row in enumerate(rows[:TOP_OPS], 1):
        lines.append(f"  {i:>3}  {row['name']:<{width}}  {row['kind']:<7}  {row['calls']:>5.0f}  {ms(row['ms']):>8}  "
                     f"{row['share']:>6.1%}")
    rest = rows[TOP_OPS:]
    if rest:
        lines.append(f"  {'':>3}  {f'({len(rest)} more)':<{width}}  {'':<7}  {'':>5}  {ms(sum(x['ms'] for x in rest)):>8}  "
                     f"{sum(x['share'] for x in rest):>6.1%}")
    return lines


def _energy_lines(e: dict) -> list[str]:
    idle = e["idle_s"][1] - e["idle_s"][0]
    active = e["active_s"][1] - e["active_s"][0]
    width = max([len(r["name"]) for r in e["rails"]] + [4])
    lines = [
        f"energy (idle baseline {idle:.2f} s, then {e['runs']} inferences in {active:.2f} s; "
        "the model's share = active - idle)",
        f"  {'rail':<{width}}  {'idle W':>8}  {'active W':>8}  {'model W':>8}  {'mJ/inference':>12}",
    ]
    for r in e["rails"]:
        lines.append(f"  {r['name']:<{width}}  {r['idle_w']:>8.3f}  {r['active_w']:>8.3f}  {r['excess_w']:>8.3f}  "
                     f"{r['joules_per_inference'] * 1e3:>12.4g}")
    return lines


# ------------------------------------------------------------------ plots


def plot(r: dict, out_dir: Path) -> list[Path]:
    """latency.png, and per_op.png / power.png when the report has them; returns the files."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("--plot needs matplotlib; install it with: pip install 'edgert[plot]'") from None
    from edgert.fsutil import atomic_write_bytes

    figures = {"latency.png": _latency_figure(Figure, r)}
    if r.get("per_op"):
        figures["per_op.png"] = _per_op_figure(Figure, r)
    if r.get("energy"):
        figures["power.png"] = _power_figure(Figure, r)
    written = []
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        atomic_write_bytes(Path(out_dir) / name, buf.getvalue())  # no half-written PNG on failure
        written.append(Path(out_dir) / name)
    return written


def _title(r: dict) -> str:
    return f"{r['bundle']['label']} on {r['device']} ({r['arch']})"


def _latency_figure(Figure, r: dict):
    lat = r["latency"]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(r["run_ms"], bins=min(50, max(10, lat["n"] // 4)), color="#4477aa")
    for key, style in (("median_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
        ax.axvline(lat[key], color="#cc3311", linestyle=style, label=f"{key[:-3]} {ms(lat[key])} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("runs")
    ax.set_title(f"{_title(r)}: {lat['n']} runs")
    ax.legend()
    return fig


def _per_op_figure(Figure, r: dict):
    rows = r["per_op"]["rows"][:20][::-1]
    fig = Figure(figsize=(8, 1.2 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([row["name"] for row in rows], [row["ms"] for row in rows],
            color=["#4477aa" if row["kind"] == "kernel" else "#bbbbbb" for row in rows])
    for i, row in enumerate(rows):
        ax.text(row["ms"], i, f" {row['share']:.1%}", va="center", fontsize=8)
    ax.set_xlabel("self time per run (ms); grey: VM builtins")
    ax.set_title(f"{_title(r)}: time per function")
    ax.tick_params(axis="y", labelsize=7)
    return fig


def _power_figure(Figure, r: dict):
    e = r["energy"]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.axvspan(*e["idle_s"], color="#dddddd", label="idle baseline")
    ax.axvspan(*e["active_s"], color="#ffe0b0", label=f"{e['runs']} inferences")
    for trace in e["traces"]:
        ax.plot(trace["t_s"], trace["watts"], linewidth=1, label=trace["name"])
    ax.set_xlabel("time since the runner started (s)")
    ax.set_ylabel("power (W)")
    ax.set_title(f"{_title(r)}: power")
    ax.legend(fontsize=8)
    return fig
