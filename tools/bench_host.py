"""Host executor (NumPy + Numba, edgert.host) vs onnxruntime on this host, at 1 thread and all threads.

One run of this script measures, side by side:

- every zoo model (digits_cnn, mobilenetv2_digits, vit_digits, tcn_kws), torchvision mobilenet_v2
  and resnet18 from ``--torchvision-dir DIR`` (made by ``tools/export_torchvision.py``) and any
  ``--model PATH.onnx``: onnxruntime (all graph optimisations, intra_op N / inter_op 1) against
  ``HostExecutor(model, threads=N)``; the ratio host/onnxruntime (above 1: slower; target <= 3 for
  dense CNNs); "host code" says whether the default codegen="auto" ran the model as one generated
  function (and how long the run that generated or loaded it took) or interpreted it;
- a pruned layer at 50/80/90/95% unstructured sparsity (a 1x1 convolution 256->256 on 28x28 and a
  Gemm 1024->1024 at batch 1, magnitude-pruned random weights): the host executor's dense path
  (BLAS) against its CSR kernel (target: sparse faster from 80% up), with onnxruntime for reference.

Timing is tools/bench_runtimes.py's (imported, not copied): warm-up, then single calls until
``--min-time`` seconds and ``--min-runs`` calls; median and p90. Every cell is a fresh process with
OMP/OpenBLAS/numba thread counts = N (HostExecutor(threads=N)); the host executor's output is checked against onnxruntime
before it is timed (a fast wrong answer is an error cell). Numba kernels are compiled on first use and
cached on disk, so the first process of a fresh checkout is slower to start, not to run.

Usage (project venv; a quiet machine for numbers to publish):

    .venv/bin/python tools/bench_host.py --torchvision-dir tv-models --json host.json
    .venv/bin/python tools/bench_host.py --quick --models digits_cnn --threads 1 --sparsities 0.9   # smoke run

Progress goes to stderr; the tables to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_runtimes as br  # noqa: E402  (a sibling script, not a package)

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
# (name, op, weight shape, input shape): realistic pruned layers (a ResNet/MobileNet 1x1 conv, a classifier Gemm).
LAYERS = (("conv1x1 256x256 @28x28", "Conv", (256, 256, 1, 1), (1, 256, 28, 28)),
          ("gemm 1024x1024 @batch1", "Gemm", (1024, 1024), (1, 1024)))


# -- measuring (inside one worker process) -------------------------------------


def measure_host(onnx_path: str, threads: int, budget: br.Budget, sparse_threshold: float | None = None) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    from edgert.host import HostExecutor, HostOptions

    opts = HostOptions(threads=threads) if sparse_threshold is None else HostOptions(threads=threads, sparse_threshold=sparse_threshold)
    import time

    from edgert.host.executor import AUTO_COMPILE_RUN

    ex = HostExecutor(onnx_path, options=opts)
    feeds = _random_feeds(onnx_path)
    # Run as often as codegen="auto" needs to switch to the generated whole-graph function (when it does),
    # so that the output checked below comes from the code that is timed; the run that generates it is timed.
    t_plan = 0.0
    for _ in range(AUTO_COMPILE_RUN):
        t0 = time.perf_counter()
        got = ex.run(feeds)
        t_plan = time.perf_counter() - t0
    ref = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for name, want in zip(ex.output_names, ref, strict=True):
        err = float(np.abs(got[name] - want).max())
        if err > 1e-4 * float(np.abs(want).max()) + 1e-5:
            raise RuntimeError(f"wrong output {name}: max|err| {err:.3g} vs max|ref| {np.abs(want).max():.3g}")
    result = br.time_calls(lambda: ex.run(feeds), budget)
    result["threads"] = ex.threads
    plan = ex.compiled_plan(feeds)
    result["generated"] = plan is not None
    result["generate_s"] = t_plan if plan is not None else None  # that run: lowering + numba compile or cache load
    result["codegen_skipped"] = ex.codegen_skipped
    result["csr_layers"] = sum(1 for s in ex.steps if s.ctx.cache.get("csr") is not None)
    return result


def measure_ort(onnx_path: str, threads: int, budget: br.Budget) -> dict[str, Any]:
    import onnxruntime as ort

    feeds = _random_feeds(onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    result = br.time_calls(lambda: sess.run(None, feeds), budget)
    result["version"] = ort.__version__
    return result


def _random_feeds(onnx_path: str) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(v).astype(np.float32) for k, v in br.onnx_input_shapes(Path(onnx_path)).items()}


def pruned_layer(path: Path, op: str, w_shape: tuple[int, ...], x_shape: tuple[int, ...], sparsity: float) -> Path:
    """A one-node model whose weight has ``sparsity`` of its entries (the smallest magnitudes) set to 0."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    node = (helper.make_node("Conv", ["x", "w", "b"], ["y"]) if op == "Conv"
            else helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1))
    graph = helper.make_graph([node], "pruned", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def worker(task: dict[str, Any]) -> dict[str, Any]:
    budget = br.Budget(**task["budget"])
    if task["kind"] == "ort":
        return measure_ort(task["onnx"], task["threads"], budget)
    if task["kind"] == "host":
        return measure_host(task["onnx"], task["threads"], budget, task.get("sparse_threshold"))
    raise ValueError(f"unknown task kind {task['kind']!r}")


def run_isolated(task: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """``task`` in a fresh Python whose thread pools are created with N threads; {'error': ...} instead of raising."""
    n = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, NUMBA_NUM_THREADS=n)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(br.RESULT_TAG)), None)
    if line is None:
        tail = [ln.strip() for ln in (proc.stderr or "").splitlines() if ln.strip()]
        return {"error": tail[-1] if tail else f"exit code {proc.returncode}"}
    return json.loads(line[len(br.RESULT_TAG):])


def _worker_main(arg: str) -> int:
    try:
        result = worker(json.loads(arg))
    except Exception as exc:  # noqa: BLE001 - any failure becomes this cell's error text
        result = {"error": " ".join(str(exc).split()) or type(exc).__name__}
    print(br.RESULT_TAG + json.dumps(result, default=str), flush=True)
    return 0


# -- the run -----------------------------------------------------------------


def _cell(task: dict[str, Any], label: str, threads: int, budget: br.Budget, timeout: float) -> dict[str, Any]:
    return br.measure_cell(f"{label} t={threads}", {**task, "threads": threads}, threads, budget, timeout, runner=run_isolated)


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = br.budget_from_args(args)
    specs = br.collect_models(args.models, args.torchvision_dir, args.model, None)
    models: list[dict[str, Any]] = []
    sparse: list[dict[str, Any]] = []
    for threads in args.threads:
        for s in specs:
            row: dict[str, Any] = {"model": s.name, "threads": threads}
            if s.missing:
                row["ort"] = row["host"] = {"na": s.missing}
            else:
                row["ort"] = _cell({"kind": "ort", "onnx": str(s.onnx)}, f"{s.name} ort", threads, budget, args.timeout)
                row["host"] = _cell({"kind": "host", "onnx": str(s.onnx)}, f"{s.name} host", threads, budget, args.timeout)
                if "median_ms" in row["ort"] and "median_ms" in row["host"]:
                    row["ratio"] = row["host"]["median_ms"] / row["ort"]["median_ms"]
            models.append(row)
    if not args.no_sparse:
        with tempfile.TemporaryDirectory(prefix="edgert-host-bench-") as tmp:
            for threads in args.threads:
                for name, op, w_shape, x_shape in LAYERS:
                    for sp in args.sparsities:
                        path = str(pruned_layer(Path(tmp) / f"{op}_{sp}.onnx", op, w_shape, x_shape, sp))
                        label = f"{name} {sp:.0%}"
                        row = {"layer": name, "sparsity": sp, "threads": threads,
                               "ort": _cell({"kind": "ort", "onnx": path}, f"{label} ort", threads, budget, args.timeout),
                               "dense": _cell({"kind": "host", "onnx": path, "sparse_threshold": 2.0}, f"{label} dense",
                                              threads, budget, args.timeout),
                               "sparse": _cell({"kind": "host", "onnx": path, "sparse_threshold": 0.0}, f"{label} csr",
                                               threads, budget, args.timeout)}
                        if "median_ms" in row["dense"] and "median_ms" in row["sparse"]:
                            row["speedup"] = row["dense"]["median_ms"] / row["sparse"]["median_ms"]
                        sparse.append(row)
    return {"host": br.host_info(), "settings": {"threads": args.threads, "quick": args.quick, "budget": dataclasses.asdict(budget),
                                                 "sparsities": args.sparsities},
            "models": models, "sparse": sparse}


def _ms(cell: dict[str, Any]) -> str:
    if "median_ms" in cell:
        return br.fmt_ms(cell["median_ms"])
    return "error: " + br._cell_text(cell["error"]) if "error" in cell else "n/a"


def _code(cell: dict[str, Any]) -> str:
    """Which code ran: the generated whole-graph function (with the seconds its first run took) or the interpreter."""
    if "median_ms" not in cell:
        return "-"
    if cell.get("generated"):
        return f"generated ({cell['generate_s']:.2g} s first)"
    return "interpreted"


def render(report: dict[str, Any]) -> str:
    lines = [br.measured_line(report["host"], [("onnxruntime", "onnxruntime"), ("numpy", "numpy"), ("edgert", "edgert")],
                              report["settings"]["quick"]),
             "Median ms per inference of batch 1; ratio = host executor / onnxruntime (above 1: slower).", ""]
    notes: list[str] = []
    for threads in report["settings"]["threads"]:
        rows = [r for r in report["models"] if r["threads"] == threads]
        if rows:
            lines += [f"### Models, {br.threads_text(threads)}", "",
                      "| model | onnxruntime ms | host executor ms | host / onnxruntime | host code |", "|---|---|---|---|---|"]
            for r in rows:
                if r["ort"].get("na"):
                    notes.append(f"{r['model']}: {r['ort']['na']}")
                    lines.append(f"| {r['model']} | n/a [{len(notes)}] | n/a | - | - |")
                    continue
                ratio = br.fmt_ratio(r["ratio"]) if "ratio" in r else "-"
                lines.append(f"| {r['model']} | {_ms(r['ort'])} | {_ms(r['host'])} | {ratio} | {_code(r['host'])} |")
            lines.append("")
        rows = [r for r in report["sparse"] if r["threads"] == threads]
        if rows:
            lines += [f"### Pruned layer, sparse (CSR, Numba) vs dense (BLAS), {br.threads_text(threads)}", "",
                      "| layer | sparsity | onnxruntime ms | host dense ms | host sparse ms | dense / sparse |",
                      "|---|---|---|---|---|---|"]
            for r in rows:
                speed = br.fmt_ratio(r["speedup"]) if "speedup" in r else "-"
                lines.append(f"| {r['layer']} | {r['sparsity']:.0%} | {_ms(r['ort'])} | {_ms(r['dense'])} | {_ms(r['sparse'])} | {speed} |")
            lines.append("")
    if notes:
        lines += ["Notes:", ""] + [f"[{i}] {t}" for i, t in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    br.add_common_arguments(ap, work="nothing (no files are kept)")
    ap.set_defaults(threads=sorted({1, os.cpu_count() or 1}))
    ap.add_argument("--sparsities", type=lambda s: [float(x) for x in s.split(",") if x], default=list(SPARSITIES),
                    help="weight sparsities of the pruned-layer rows (default: 0.5,0.8,0.9,0.95)")
    ap.add_argument("--no-sparse", action="store_true", help="skip the pruned-layer section")
    args = ap.parse_args(argv)
    br.check_common_arguments(ap, args)
    if any(not 0 <= s < 1 for s in args.sparsities):
        ap.error("--sparsities are fractions in [0, 1), e.g. 0.5,0.9")
    return args


def main(argv: list[str] | None = None) -> int:
    return br.report_main(argv, parse_args, run, render, worker=_worker_main)


if __name__ == "__main__":
    sys.exit(main())
