"""Latency side by side on this host: edgert bundles vs onnxruntime vs LiteRT, at 1 and 2 threads.

For every model, one run of this script measures

- onnxruntime on the ONNX file (graph optimisations enabled as users run it,
  ``intra_op_num_threads`` = N, ``inter_op_num_threads`` = 1),
- LiteRT (``ai_edge_litert`` Interpreter, ``num_threads`` = N, its default
  XNNPACK delegate) on the same model converted to TFLite by
  ``tools/convert_tflite.py`` (``--tflite-dir``); ``n/a`` with the reason otherwise,
- edgert bundles for the host compiled three ways: ``naive`` (TVM's own
  default pipeline), ``default`` (edgert's default schedules only) and
  ``tuned`` (tuning database first, then edgert's defaults; ``--tuning-db``
  or the shipped/user database),

and prints a Markdown table per thread count (median ms and the ratio to
onnxruntime; a ratio above 1 is slower than onnxruntime), the median of the
ratios per column, the p90 latencies, and the sparse-vs-dense table of
``tools/bench_sparse.py`` when that script is present.

Every measurement runs in a fresh subprocess with ``TVM_NUM_THREADS`` /
``OMP_NUM_THREADS`` = N, so each runtime's thread pool is created with that
count, and a crash or a hang spoils one cell, not the run. A timed call is
what an application does per inference: inputs already in the runtime's
format, one call, outputs readable in host memory (onnxruntime's NumPy
results, LiteRT's ``get_tensor`` copies, the Relax VM's output tensors); the
same Python loop times all three runtimes. After a warm-up, calls are timed one by one until at least
``--min-time`` seconds and ``--min-runs`` calls; the median and the p90 of
those calls are reported. Each edgert bundle's output is checked against its
golden (onnxruntime) output first: a fast but wrong bundle is an error cell.

Models: the zoo models (digits_cnn, mobilenetv2_digits, vit_digits, tcn_kws),
torchvision mobilenet_v2 and resnet18 from ``--torchvision-dir DIR`` (made by
``tools/export_torchvision.py``, see below) and any ``--model PATH.onnx``.
Dynamic input dimensions are pinned to 1.

Usage (project venv; compile the bundles into a temp dir, or ``--work DIR`` to keep them):

    # once, in a separate venv (see tools/export_torchvision.py):
    tv-venv/bin/python tools/export_torchvision.py tv-models mobilenet_v2 resnet18 --calibrate-bn 4
    # once, in the TFLite tools venv (see tools/convert_tflite.py):
    tflite-venv/bin/python tools/convert_tflite.py tflite-models --torchvision-dir tv-models
    # the benchmark (a quiet machine; the full run takes a while, naive ResNet18 most of it):
    .venv/bin/python tools/bench_runtimes.py --torchvision-dir tv-models --tflite-dir tflite-models --json bench.json
    .venv/bin/python tools/bench_runtimes.py --quick --models digits_cnn,tcn_kws --threads 1   # smoke run

Progress goes to stderr; the tables (and only they) to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ZOO_MODELS = ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws")
TORCHVISION_MODELS = ("mobilenet_v2", "resnet18")
VARIANTS = ("naive", "default", "tuned")
# CompileOptions.schedules for each variant: "auto" = tuning database, then edgert's defaults.
SCHEDULES = {"naive": "naive", "default": "default", "tuned": "auto"}
COLUMNS = ("ort", "litert", *VARIANTS)
HEADERS = {
    "ort": "onnxruntime ms",
    "litert": "LiteRT ms (×ORT)",
    "naive": "edgert naive ms (×ORT)",
    "default": "edgert default ms (×ORT)",
    "tuned": "edgert tuned ms (×ORT)",
}
RESULT_TAG = "BENCH_RESULT "
TOOLS = Path(__file__).resolve().parent
EXPORT_HINT = (
    "make them with: python3 -m venv tv-venv && tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx && "
    "tv-venv/bin/python tools/export_torchvision.py tv-models mobilenet_v2 resnet18 --calibrate-bn 4; "
    "then pass --torchvision-dir tv-models"
)
TFLITE_HINT = "convert with tools/convert_tflite.py (its docstring names the venv it needs) and pass --tflite-dir"


@dataclass(frozen=True)
class Budget:
    """How long one cell is timed: warm-up, then single calls until both minimums are met."""

    warmup_s: float
    warmup_runs: int
    min_s: float
    min_runs: int
    max_runs: int = 200_000
    # Fresh processes per cell. This VM's processes run at one of two speeds (the slow one
    # adds ~1.5 us to every call of a small model), so one process per cell can put the
    # float and int8 columns of a row on different speeds; the cell reported is the
    # process with the median median.
    processes: int = 1


FULL = Budget(warmup_s=0.3, warmup_runs=3, min_s=1.0, min_runs=10)
QUICK = Budget(warmup_s=0.02, warmup_runs=1, min_s=0.1, min_runs=3)


@dataclass
class ModelSpec:
    name: str
    onnx: Path | None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    zoo: bool = False
    tflite: Path | None = None
    tflite_na: str | None = None  # why there is no LiteRT cell
    missing: str | None = None  # why the model itself is absent (every cell n/a)


# -- timing ------------------------------------------------------------------


def time_calls(call, budget: Budget) -> dict[str, Any]:
    """Warm up, then time single calls; median/p90 over the timed calls, in ms."""
    t_end = time.perf_counter() + budget.warmup_s
    n = 0
    while n < budget.warmup_runs or time.perf_counter() < t_end:
        call()
        n += 1
    samples: list[float] = []
    t_end = time.perf_counter() + budget.min_s
    while len(samples) < budget.max_runs and (len(samples) < budget.min_runs or time.perf_counter() < t_end):
        t0 = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    samples.sort()
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, math.ceil(0.9 * len(samples)) - 1)],
        "mean_ms": statistics.fmean(samples),
        "min_ms": samples[0],
        "runs": len(samples),
        "warmup_runs": n,
    }


# -- the measuring functions (each runs inside one worker process) -------------


def measure_ort(onnx_path: str | Path, shapes: dict[str, Any], threads: int, budget: Budget) -> dict[str, Any]:
    import onnxruntime as ort

    from edgert.model import load

    model = load(onnx_path, {k: tuple(v) for k, v in shapes.items()})
    feeds = model.random_inputs(0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    result = time_calls(lambda: sess.run(None, feeds), budget)
    result["version"] = ort.__version__
    return result


def measure_litert(tflite_path: str | Path, threads: int, budget: Budget) -> dict[str, Any]:
    from importlib.metadata import version

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path), num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    ins = [(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"])) for d in interp.get_input_details()]
    outs = [d["index"] for d in interp.get_output_details()]

    def call():
        for index, arr in ins:
            interp.set_tensor(index, arr)
        interp.invoke()
        return [interp.get_tensor(i) for i in outs]

    result = time_calls(call, budget)
    result["version"] = version("ai-edge-litert")
    return result


def measure_bundle(bundle_path: str | Path, budget: Budget) -> dict[str, Any]:
    """Time ``lib/model.so`` of a host bundle through the Relax VM (threads: TVM_NUM_THREADS of this process)."""
    import numpy as np
    import tvm
    from tvm import relax

    from edgert.bundle import Bundle
    from edgert.runtime.session import compare

    bundle = Bundle.open(bundle_path)
    bundle.check_arch()
    dev = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle.path / bundle.manifest["runtime"]["model"])), dev)
    main = vm["main"]
    golden = bundle.golden_inputs()
    args = [tvm.runtime.tensor(np.ascontiguousarray(golden[s.name]), dev) for s in bundle.inputs]

    def call():
        # The outputs stay in the VM's host tensors, readable in place as through the C API;
        # TVM's .numpy() copy costs ~40 us from Python, more than a whole tiny model.
        return main(*args)

    res = call()
    outs = [o.numpy() for o in ([res] if hasattr(res, "numpy") else list(res))]
    outputs = dict(zip([s.name for s in bundle.outputs], outs, strict=True))
    bad = [a for a in compare(outputs, bundle.golden_outputs(), bundle.manifest["golden"].get("rtol", 1e-4)) if not a.ok]
    if bad:
        # A fast wrong answer is not a result.
        a = bad[0]
        raise RuntimeError(f"wrong output {a.name}: max|err| {a.max_abs_err:.3g} vs max|ref| {a.max_abs_ref:.3g}")
    result = time_calls(call, budget)
    num_threads = tvm.get_global_func("runtime.NumThreads", allow_missing=True)
    if num_threads is not None:
        result["tvm_threads"] = int(num_threads())
    return result


def compile_variant(onnx_path: str | Path, shapes: dict[str, Any], variant: str, out: str | Path,
                    tuning_db: str | None = None) -> dict[str, Any]:
    """Compile one host bundle with the variant's schedules; returns compile time and the manifest's build report."""
    import edgert
    from edgert.compiler.build import CompileOptions

    opts = CompileOptions(
        target="host",
        input_shapes={k: tuple(v) for k, v in shapes.items()},
        schedules=SCHEDULES[variant],
        # Searched before the user's and the shipped database; only the tuned variant reads databases.
        tuning_db=tuple(Path(p) for p in tuning_db.split(",")) if (tuning_db and variant == "tuned") else (),
    )
    t0 = time.perf_counter()
    bundle = edgert.compile(onnx_path, output=out, options=opts)
    return {"compile_s": round(time.perf_counter() - t0, 1), "build": bundle.manifest.get("build", {})}


def sparse_rows(threads: int, quick: bool) -> Any:
    """Rows of tools/bench_sparse.py (dense vs sparse bundles), or None when that script is absent."""
    import importlib.util

    path = TOOLS / "bench_sparse.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("bench_sparse", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look the module up while it executes
    spec.loader.exec_module(mod)
    return mod.bench_rows(threads=threads, quick=quick)


def worker(task: dict[str, Any]) -> dict[str, Any]:
    budget = Budget(**task["budget"]) if "budget" in task else FULL
    kind = task["kind"]
    if kind == "ort":
        return measure_ort(task["onnx"], task["shapes"], task["threads"], budget)
    if kind == "litert":
        return measure_litert(task["tflite"], task["threads"], budget)
    if kind == "bundle":
        return measure_bundle(task["bundle"], budget)
    if kind == "compile":
        return compile_variant(task["onnx"], task["shapes"], task["variant"], task["out"], task.get("tuning_db"))
    if kind == "sparse":
        return {"rows": sparse_rows(task["threads"], task.get("quick", False))}
    raise ValueError(f"unknown task kind {kind!r}")


def run_isolated(task: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """Run ``task`` in a fresh Python with N-thread pools; {'error': ...} instead of raising."""
    env = dict(os.environ, TVM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_TAG)), None)
    if line is None:
        tail = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit code {proc.returncode}"
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}: {why}"
        return {"error": why}
    return json.loads(line[len(RESULT_TAG):])


def _worker_main(arg: str) -> int:
    task = json.loads(arg)
    try:
        result = worker(task)
    except Exception as exc:  # noqa: BLE001 - any failure becomes this cell's error text
        msg = " ".join(str(exc).split()) or type(exc).__name__
        result = {"error": f"{type(exc).__name__}: {msg}" if isinstance(exc, TypeError) else msg}
    print(RESULT_TAG + json.dumps(result, default=str), flush=True)
    return 0


# -- which models ------------------------------------------------------------


def onnx_input_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Graph inputs with every dynamic dimension pinned to 1 (batch 1)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    shapes = {}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        shapes[inp.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in dims)
    return shapes


def collect_models(names: list[str] | None, torchvision_dir: Path | None, extra: list[Path],
                   tflite_dir: Path | None) -> list[ModelSpec]:
    from edgert.zoo import registry

    specs: list[ModelSpec] = []
    for name in ZOO_MODELS:
        try:
            specs.append(ModelSpec(name, registry.get(name).onnx_path, zoo=True))
        except Exception as exc:  # noqa: BLE001 - a missing zoo model is one n/a row
            specs.append(ModelSpec(name, None, missing=str(exc)))
    for name in TORCHVISION_MODELS:
        path = torchvision_dir / f"{name}.onnx" if torchvision_dir else None
        if path is not None and path.is_file():
            specs.append(ModelSpec(name, path))
        else:
            where = f"{path} not found" if path else "no --torchvision-dir"
            specs.append(ModelSpec(name, None, missing=f"{where}; {EXPORT_HINT}"))
    for path in extra:
        name = path.stem
        while any(s.name == name for s in specs):  # e.g. another resnet18.onnx than --torchvision-dir's
            name += "'"
        specs.append(ModelSpec(name, path) if path.is_file() else ModelSpec(name, None, missing=f"{path} not found"))
    if names:
        known = {s.name for s in specs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(known))} (or add --model PATH.onnx)")
        specs = [s for s in specs if s.name in names]
    for s in specs:
        if s.onnx is None:
            continue
        s.shapes = onnx_input_shapes(s.onnx)
        if tflite_dir is None:
            s.tflite_na = f"no --tflite-dir; {TFLITE_HINT}"
        elif (tflite_dir / f"{s.name}.tflite").is_file():
            stale = _stale_conversion(tflite_dir / f"{s.name}.check.json", s.onnx)
            if stale:
                s.tflite_na = stale
            else:
                s.tflite = tflite_dir / f"{s.name}.tflite"
        elif (tflite_dir / f"{s.name}.failed.txt").is_file():
            s.tflite_na = "conversion failed: " + " ".join((tflite_dir / f"{s.name}.failed.txt").read_text().split())
        else:
            s.tflite_na = f"{s.name}.tflite not in {tflite_dir}; {TFLITE_HINT}"
    return specs


def _stale_conversion(check_json: Path, onnx_path: Path) -> str | None:
    """Why ``NAME.tflite`` no longer matches its ONNX source, or None (no record: trusted)."""
    import hashlib

    try:
        recorded = json.loads(check_json.read_text()).get("source_sha256")
    except (OSError, ValueError):
        return None
    if recorded and recorded != hashlib.sha256(onnx_path.read_bytes()).hexdigest():
        return f"{onnx_path.name} changed since it was converted; run tools/convert_tflite.py again"
    return None


# -- the run -----------------------------------------------------------------


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def fmt_ms(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def threads_text(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def measured_line(host: dict[str, Any], packages: list[tuple[str, str]], quick: bool, detail: str = "") -> str:
    """The first line of every benchmark report: date, CPU, ``(label, package)`` versions, settings."""
    v = host["versions"]
    return (f"Measured {host['date']} on {host['cpu']} ({host['cores']} cores), "
            + ", ".join(f"{label} {v.get(name)}" for label, name in packages)
            + (f"; {detail}" if detail else "") + (" — --quick (smoke run, few repeats)" if quick else "") + ".")


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def _cell_text(text: str, limit: int = 70) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def host_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for pkg in ("edgert", "apache-tvm", "apache-tvm-ffi", "onnxruntime", "ai-edge-litert", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "versions": versions}


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = budget_from_args(args)
    specs = collect_models(args.models, args.torchvision_dir, args.model, args.tflite_dir)
    variants = [v for v in args.variants]
    results: list[dict[str, Any]] = []
    compiles: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgert-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bundles: dict[tuple[str, str], Path | dict] = {}
        for s in specs:
            if s.missing:
                progress(f"{s.name}: skipped ({s.missing})")
                continue
            for v in variants:
                if v == "naive" and args.skip_naive and not s.zoo:
                    bundles[(s.name, v)] = {"na": "skipped (--skip-naive)"}
                    continue
                out = work / s.name / f"{v}.edgert"
                if args.reuse and (out / "manifest.json").is_file():
                    progress(f"{s.name} {v}: reusing {out}")
                    bundles[(s.name, v)] = out
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                progress(f"{s.name} {v}: compiling ...")
                task = {"kind": "compile", "onnx": str(s.onnx), "shapes": s.shapes, "variant": v, "out": str(out),
                        "tuning_db": str(args.tuning_db) if args.tuning_db else None}
                res = run_isolated(task, max(args.threads), args.compile_timeout)
                compiles.append({"model": s.name, "variant": v, **res})
                if "error" in res:
                    progress(f"{s.name} {v}: compile failed: {res['error']}")
                    bundles[(s.name, v)] = res
                else:
                    progress(f"{s.name} {v}: compiled in {res['compile_s']} s; {_schedule_summary(res.get('build', {}))}")
                    bundles[(s.name, v)] = out

        for threads in args.threads:
            for s in specs:
                cells: dict[str, dict[str, Any]] = {}
                if s.missing:
                    for col in ["ort", "litert", *variants]:
                        cells[col] = {"na": f"model missing: {s.missing}"}
                else:
                    cells["ort"] = _measure(s, "ort", {"kind": "ort", "onnx": str(s.onnx), "shapes": s.shapes, "threads": threads},
                                            threads, budget, args.timeout)
                    if s.tflite is not None:
                        cells["litert"] = _measure(s, "litert", {"kind": "litert", "tflite": str(s.tflite), "threads": threads},
                                                   threads, budget, args.timeout)
                    else:
                        cells["litert"] = {"na": s.tflite_na}
                    for v in variants:
                        b = bundles[(s.name, v)]
                        if isinstance(b, dict):
                            cells[v] = {"error": f"compile: {b['error']}"} if "error" in b else b
                        else:
                            cells[v] = _measure(s, v, {"kind": "bundle", "bundle": str(b)}, threads, budget, args.timeout)
                ort_ms = cells["ort"].get("median_ms")
                for col, cell in cells.items():
                    if col != "ort" and ort_ms and "median_ms" in cell:
                        cell["ratio"] = cell["median_ms"] / ort_ms
                    results.append({"model": s.name, "threads": threads, "column": col, **cell})

    sparse: dict[str, Any] = {}
    if not args.no_sparse:
        if not (TOOLS / "bench_sparse.py").is_file():
            progress("tools/bench_sparse.py not present: no sparse section")
        else:
            for threads in args.threads:
                progress(f"sparse vs dense, {threads} thread(s) (tools/bench_sparse.py) ...")
                sparse[str(threads)] = run_isolated({"kind": "sparse", "threads": threads, "quick": args.quick}, threads,
                                                    args.sparse_timeout)
    return {"host": host_info(), "settings": {"threads": args.threads, "variants": variants, "quick": args.quick,
                                              "budget": dataclasses.asdict(budget), "skip_naive": args.skip_naive,
                                              "tuning_db": str(args.tuning_db) if args.tuning_db else None},
            "models": [{"name": s.name, "onnx": str(s.onnx) if s.onnx else None, "shapes": s.shapes,
                        "tflite": str(s.tflite) if s.tflite else None, "missing": s.missing} for s in specs],
            "compile": compiles, "results": results, "sparse": sparse, "summary": summarize(results, args.threads, variants)}


def _schedule_summary(build: dict[str, Any]) -> str:
    """The compile report's schedule counts in one line (the full report goes to --json)."""
    sch = build.get("schedules")
    if not isinstance(sch, dict):
        return "no schedule report in the manifest"
    text = f"schedules {sch.get('mode')}: {sch.get('tuned', 0)} tuned, {sch.get('default', 0)} default, {sch.get('naive', 0)} naive"
    if sch.get("hand_scheduled"):
        text += f", {sch['hand_scheduled']} hand-scheduled"
    if isinstance(sch.get("sparse"), dict):
        text += f", {sch['sparse'].get('sparse', 0)} sparse layers"
    return text


def _measure(s: ModelSpec, col: str, task: dict[str, Any], threads: int, budget: Budget, timeout: float) -> dict[str, Any]:
    return measure_cell(f"{s.name} t={threads} {col}", task, threads, budget, timeout)


def measure_cell(label: str, task: dict[str, Any], threads: int, budget: Budget, timeout: float,
                 runner=None) -> dict[str, Any]:
    """One table cell: ``task`` timed in ``budget.processes`` fresh processes (``runner``, default
    run_isolated), the one with the median median returned; progress on stderr."""
    runner = runner or run_isolated
    task = {**task, "budget": dataclasses.asdict(budget)}
    runs = []
    for _ in range(max(1, budget.processes)):
        res = runner(task, threads, timeout)
        if "error" in res:
            progress(f"{label}: error: {res['error']}")
            return res
        runs.append(res)
    runs.sort(key=lambda r: r["median_ms"])
    res = runs[(len(runs) - 1) // 2]
    if len(runs) > 1:
        res = {**res, "process_medians_ms": [r["median_ms"] for r in runs]}
    progress(f"{label}: {fmt_ms(res['median_ms'])} ms (p90 {fmt_ms(res['p90_ms'])}, {res['runs']} runs"
             + (f"; processes {', '.join(fmt_ms(r['median_ms']) for r in runs)}" if len(runs) > 1 else "") + ")")
    return res


def summarize(results: list[dict[str, Any]], threads_list: list[int], variants: list[str]) -> dict[str, Any]:
    """Median over models of each column's ratio to onnxruntime, per thread count."""
    out: dict[str, Any] = {}
    for threads in threads_list:
        per = {}
        for col in ["litert", *variants]:
            ratios = [r["ratio"] for r in results if r["threads"] == threads and r["column"] == col and "ratio" in r]
            models = {r["model"] for r in results if r["threads"] == threads and r["column"] == "ort" and "median_ms" in r}
            per[col] = {"median_ratio": statistics.median(ratios) if ratios else None, "n": len(ratios), "of": len(models)}
        out[str(threads)] = per
    return out


# -- Markdown ----------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    host, settings = report["host"], report["settings"]
    cols = ["ort", "litert", *settings["variants"]]
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    lines = [
        measured_line(host, [("onnxruntime", "onnxruntime"), ("ai-edge-litert", "ai-edge-litert"), ("TVM", "apache-tvm"),
                             ("edgert", "edgert")], settings["quick"]),
        "Median ms per inference of batch 1, in brackets the ratio to onnxruntime (above 1: slower). N threads = "
        "onnxruntime intra_op N / inter_op 1 with all graph optimisations; LiteRT num_threads N (XNNPACK); "
        "edgert TVM_NUM_THREADS N. Each cell is a fresh process.",
        "",
    ]
    for threads in settings["threads"]:
        rows = [r for r in report["results"] if r["threads"] == threads]
        models = list(dict.fromkeys(r["model"] for r in rows))
        by = {(r["model"], r["column"]): r for r in rows}
        lines += [f"### {threads_text(threads)}", ""]
        lines += ["| model | " + " | ".join(HEADERS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m in models:
            cells = []
            for c in cols:
                r = by.get((m, c), {"na": "not measured"})
                if "median_ms" in r:
                    cells.append(fmt_ms(r["median_ms"]) + (f" ({fmt_ratio(r['ratio'])})" if "ratio" in r else ""))
                elif "error" in r:
                    cells.append("error: " + _cell_text(r["error"]) + " " + note(f"{m} {c}: {' '.join(r['error'].split())}"))
                else:
                    cells.append("n/a" + note(r.get("na") or "not measured"))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        summary = report["summary"][str(threads)]
        med = ["1.00x"]
        for c in cols[1:]:
            s = summary[c]
            if s["median_ratio"] is None:
                med.append("-")
            else:
                med.append(fmt_ratio(s["median_ratio"]) + (f" ({s['n']} of {s['of']})" if s["n"] != s["of"] else ""))
        lines += ["| **median ratio** | " + " | ".join(med) + " |", ""]
        # p90 next to the medians, for the tail; same layout without ratios.
        lines += [f"p90 ms, {threads_text(threads)}:", ""]
        lines += ["| model | " + " | ".join(HEADERS[c].split(" (")[0].replace(" ms", "") for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for m in models:
            vals = [fmt_ms(by[(m, c)]["p90_ms"]) if "p90_ms" in by.get((m, c), {}) else "-" for c in cols]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        lines.append("")
    for threads, res in report.get("sparse", {}).items():
        lines += [f"### Sparse vs dense bundle (tools/bench_sparse.py), {threads_text(int(threads))}", ""]
        if "error" in res:
            lines += [f"error: {_cell_text(res['error'], 300)}", ""]
        else:
            lines += render_rows(res.get("rows")) + [""]
    if notes:
        lines += ["Notes:", ""] + [f"[{i}] {t}" for i, t in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def render_rows(rows: Any) -> list[str]:
    """A list of dicts as a Markdown table (any other shape: printed as it is)."""
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return [f"```\n{json.dumps(rows, indent=1, default=str)}\n```"]
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return fmt_ms(x) if math.isfinite(x) else str(x)
        return _cell_text(str(x)) if x is not None else "-"

    return ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"] + [
        "| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows
    ]


def budget_from_args(args: argparse.Namespace) -> Budget:
    """The timing budget add_common_arguments' options ask for."""
    return QUICK if args.quick else dataclasses.replace(FULL, min_s=args.min_time, min_runs=args.min_runs,
                                                        processes=args.processes)


def add_common_arguments(ap: argparse.ArgumentParser, work: str = "the compiled bundles") -> None:
    """Options shared with tools/bench_int8.py: which models, thread counts, timing, output."""
    ap.add_argument("--models", type=lambda s: [x for x in s.split(",") if x], help="comma list of model names (default: all)")
    ap.add_argument("--model", type=Path, action="append", default=[], metavar="PATH", help="an extra float .onnx model (repeatable)")
    ap.add_argument("--torchvision-dir", type=Path, metavar="DIR", help="folder with mobilenet_v2.onnx and resnet18.onnx")
    ap.add_argument("--threads", type=lambda s: [int(x) for x in s.split(",") if x], default=[1, 2], help="e.g. 1,2 (default)")
    ap.add_argument("--quick", action="store_true", help="few repeats: a smoke run, not numbers to publish")
    ap.add_argument("--min-time", type=float, default=FULL.min_s, help="seconds of timed calls per cell (default %(default)s)")
    ap.add_argument("--min-runs", type=int, default=FULL.min_runs, help="timed calls per cell at least (default %(default)s)")
    ap.add_argument("--processes", type=int, default=1,
                    help="fresh processes per cell, the median one reported (default %(default)s; 3 for figures to publish)")
    ap.add_argument("--work", type=Path, metavar="DIR", help=f"keep {work} here (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement subprocess")
    ap.add_argument("--compile-timeout", type=float, default=3600.0, help="seconds per compile subprocess")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write all results as JSON")


def check_common_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.threads or any(t < 1 for t in args.threads):
        ap.error("--threads takes positive counts, e.g. 1,2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    add_common_arguments(ap)
    ap.add_argument("--tflite-dir", type=Path, metavar="DIR", help="folder of NAME.tflite written by tools/convert_tflite.py")
    ap.add_argument("--variants", type=lambda s: [x for x in s.split(",") if x], default=list(VARIANTS),
                    help="edgert compile variants: naive,default,tuned (default: all)")
    ap.add_argument("--skip-naive", action="store_true", help="no naive bundle for non-zoo models (naive ResNet18 takes seconds per run)")
    ap.add_argument("--tuning-db", metavar="DIR[,DIR]", help="tuning databases for the tuned variant, searched before shipped/user ones")
    ap.add_argument("--reuse", action="store_true", help="reuse bundles already in --work instead of compiling again")
    ap.add_argument("--sparse-timeout", type=float, default=3600.0, help="seconds for the tools/bench_sparse.py section")
    ap.add_argument("--no-sparse", action="store_true", help="skip the sparse section")
    args = ap.parse_args(argv)
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    check_common_arguments(ap, args)
    if args.reuse and not args.work:
        ap.error("--reuse needs --work DIR")
    return args


def add_tuning_arguments(ap: argparse.ArgumentParser) -> None:
    """--tuned/--tuning-db of the tools that compare compressed bundles (bench_int8, bench_compress)."""
    ap.add_argument("--tuned", action="store_true", help="compile with tuning records (schedules 'auto') instead of edgert defaults")
    ap.add_argument("--tuning-db", metavar="DIR[,DIR]", help="tuning databases for --tuned")


def report_main(argv: list[str] | None, parse_args, run, render, worker=None) -> int:
    """The benchmark tools' main: run, print the tables, write --json; ``--worker SPEC`` runs one cell."""
    argv = sys.argv[1:] if argv is None else argv
    if worker is not None and argv[:1] == ["--worker"]:
        return worker(argv[1])
    args = parse_args(argv)
    report = run(args)
    print(render(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        progress(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return report_main(argv, parse_args, run, render, worker=_worker_main)


if __name__ == "__main__":
    sys.exit(main())
