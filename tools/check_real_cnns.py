"""Compile and run real ImageNet-class CNNs through TVM 0.27 (Relax) and
compare them with onnxruntime.

Needs the project's venv (apache-tvm 0.27.0.post1, apache-tvm-ffi
0.1.14.post1, onnx, onnxruntime, numpy) and, for the aarch64 link check,
Debian's ``aarch64-linux-gnu-g++``. The models come from
``tools/export_torchvision.py`` (random weights, dynamic batch "batch").

Usage:
    python tools/check_real_cnns.py MODEL_DIR [NAME ...] [options]
e.g.
    /tmp/tv-venv/bin/python tools/export_torchvision.py /tmp/tv-models
    /tmp/probe-venv/bin/python tools/check_real_cnns.py /tmp/tv-models --json r.json

NAME is a file stem in MODEL_DIR (``resnet18`` for ``resnet18.onnx``);
without names every ``*.onnx`` in MODEL_DIR is checked. Each model runs in
its own subprocess (a crash or a timeout in one does not stop the rest) and
prints one table row:

    model | export | import s | compile s | run ms | ort ms | err ratio |
    a64 compile s | a64 link | note

For each model the child process
  1. pins every symbolic input/output dim (the dynamic batch) to 1,
  2. ``tvm.relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)``
     (import s),
  3. ``tvm.compile`` for ``{"kind": "llvm", "mcpu": <host cpu>}`` (compile s),
  4. runs it in ``relax.VirtualMachine`` on a seeded N(0,1) input (run ms is
     the median of a few runs after one warm-up) and compares with
     onnxruntime on the original model: err ratio = max|tvm - ort| / max|ort|
     (flagged when > 1e-4). An output that barely depends on the input (max|ort(x1)-ort(x2)|/max|ort(x1)|
     < 1e-3) is flagged "weak check" (export with --calibrate-bn to avoid it).
  5. compiles for ``{"kind": "llvm", "mtriple": "aarch64-linux-gnu",
     "mattr": ["+neon"]}`` and ``export_library(..., cc="aarch64-linux-gnu-g++")``
     and checks that the result is an AArch64 ELF (not run).
A failure records the stage, the exception's first line and, for import
failures, the ONNX operator being converted.

``--via-cli`` instead drives the project's own command line for each model:
``python -m edgert.cli compile MODEL --target T --input-shape
input=1x3x224x224 -o OUT`` then ``python -m edgert.cli run OUT --device D
--check`` for (host, local) and (generic-aarch64, qemu).

``--fold-shapes`` applies ``fold_static_shapes`` (the proposed workaround:
fold Shape/Gather/arithmetic on static shapes into initializers, onnx only)
after pinning the batch and before import.

``--json FILE`` also writes all results as JSON.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

ERR_LIMIT = 1e-4
INPUT_SHAPE = (1, 3, 224, 224)


# ----------------------------------------------------------------- child side
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("Traceback"):
            return f"{type(exc).__name__}: {line}"[:300]
    return type(exc).__name__


def _failing_onnx_node(tb) -> str | None:
    """The ONNX node the Relax frontend was converting when it raised."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_construct_nodes" and "node" in frame.f_locals:
            node = frame.f_locals["node"]
            return f"{node.op_type} {node.name!r}"
        tb = tb.tb_next
    return None


def pin_symbolic_dims(model, value: int = 1):
    """Replace every symbolic (dim_param) dim of the graph inputs, outputs and
    value_info by ``value``. Returns the set of names pinned."""
    names = set()
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        for d in t.shape.dim:
            if d.HasField("dim_param") or not d.HasField("dim_value"):
                names.add(d.dim_param or "?")
                d.Clear()
                d.dim_value = value
    return names


def fold_static_shapes(model, max_elems: int = 1 << 16):
    """Shape(x) with x statically shaped -> constant; then any node whose inputs
    are all small constants -> initializer; repeat (re-running shape inference)
    until nothing changes. Call after pinning the batch dim.

    Works around TVM 0.27's ONNX frontend failing on shape arithmetic such as
    torchvision's channel_shuffle (shufflenet_v2): Gather(Shape(x), [1]) with
    a 1-D index is not folded, so Slice ends become runtime values, the next
    Shape yields an opaque R.Shape(ndim=4) and Gather on it raises
    "shape_of expects a tensor input".
    Needs onnx shape inference, so models over 2 GB are not handled.
    """
    while True:
        n_before = len(model.graph.node)
        model = _fold_once(model, max_elems)
        if len(model.graph.node) == n_before:
            return model


def _fold_once(model, max_elems):
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference
    from onnx.reference import ReferenceEvaluator

    model = shape_inference.infer_shapes(model, data_prop=True)
    opset = {o.domain or "": o.version for o in model.opset_import}.get("", 17)
    g = model.graph
    shapes = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            if None not in dims:
                shapes[vi.name] = dims
    consts = {}
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
        if int(np.prod(init.dims)) <= max_elems:
            consts[init.name] = numpy_helper.to_array(init)
    keep, folded = [], []
    for n in g.node:
        out = None
        if n.op_type == "Shape" and n.input[0] in shapes:
            a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
            out = [np.array(shapes[n.input[0]], np.int64)[a.get("start", 0):a.get("end")]]
        elif (n.domain in ("", "ai.onnx")
              and n.op_type not in ("Identity", "If", "Loop", "Scan")
              and not n.op_type.startswith("Random")
              and all(i == "" or i in consts for i in n.input)):
            feeds = {i: consts[i] for i in n.input if i}
            out = ReferenceEvaluator(n, opsets={"": opset}).run(None, feeds)
            if any(o.size > max_elems for o in out):
                out = None
        if out is None:
            keep.append(n)
            continue
        for name, val in zip(n.output, out):
            val = np.asarray(val)
            consts[name] = val
            shapes[name] = list(val.shape)
            folded.append(numpy_helper.from_array(val, name))
    graph_outputs = {o.name for o in g.output}
    assert not graph_outputs & {t.name for t in folded}, "a graph output became constant"
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(folded)
    used = {i for n in g.node for i in n.input} | graph_outputs
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    return model


def _elf_machine(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return -1
    return int.from_bytes(head[18:20], "little")


def check_one(path: str, runs: int, do_aarch64: bool, fold: bool = False) -> dict:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    res: dict = {"model": os.path.splitext(os.path.basename(path))[0],
                 "export": True}

    def fail(stage, exc, tb=None):
        res["failed_stage"] = stage
        res["error"] = _first_line(exc)
        node = _failing_onnx_node(tb) if tb is not None else None
        if node:
            res["onnx_node"] = node
        res["traceback_tail"] = "".join(
            traceback.format_exception(type(exc), exc, tb)[-3:])[-1500:]

    model = onnx.load(path)
    inp = [i for i in model.graph.input
           if i.name not in {x.name for x in model.graph.initializer}][0]
    res["input_name"] = inp.name
    rng = np.random.default_rng(0)
    x = rng.standard_normal(INPUT_SHAPE).astype("float32")

    # Reference on the unmodified (dynamic-batch) model.
    so = ort.SessionOptions()
    so.intra_op_num_threads = os.cpu_count() or 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ref = sess.run(None, {inp.name: x})[0]
    t = []
    for _ in range(max(runs, 3)):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        t.append(time.perf_counter() - t0)
    res["ort_ms"] = 1e3 * sorted(t)[len(t) // 2]
    # How much the output depends on the input: near 0 means the signal died
    # (default-initialised BN nets) and the numerical comparison is weak.
    x2 = np.random.default_rng(1).standard_normal(INPUT_SHAPE).astype("float32")
    ref2 = sess.run(None, {inp.name: x2})[0]
    scale = float(np.max(np.abs(ref))) or 1.0
    res["input_sensitivity"] = float(np.max(np.abs(ref2 - ref))) / scale
    res["ort_max_abs"] = scale
    del sess

    res["pinned_dims"] = sorted(pin_symbolic_dims(model, 1))
    if fold:
        t0 = time.perf_counter()
        n0 = len(model.graph.node)
        model = fold_static_shapes(model)
        res["fold_s"] = time.perf_counter() - t0
        res["folded_nodes"] = n0 - len(model.graph.node)

    try:
        t0 = time.perf_counter()
        mod = from_onnx(model, keep_params_in_input=False)
        res["import_s"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001
        fail("import", e, sys.exc_info()[2])
        return res

    host_cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu})
    res["host_cpu"] = host_cpu
    try:
        t0 = time.perf_counter()
        ex = tvm.compile(mod, target=target)
        res["compile_s"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001
        fail("compile", e, sys.exc_info()[2])
        return res

    try:
        vm = relax.VirtualMachine(ex, tvm.cpu())
        xt = tvm.runtime.tensor(x)
        out = vm["main"](xt)
        if not hasattr(out, "numpy"):
            out = out[0]
        got = out.numpy()
        t = []
        for _ in range(runs):
            t0 = time.perf_counter()
            vm["main"](xt)
            t.append(time.perf_counter() - t0)
        res["run_ms"] = 1e3 * sorted(t)[len(t) // 2]
        if got.shape != ref.shape:
            raise ValueError(f"output shape {got.shape} != onnxruntime {ref.shape}")
        denom = float(np.max(np.abs(ref))) or 1.0
        res["max_abs_err"] = float(np.max(np.abs(got.astype("float64") - ref)))
        res["max_abs_ref"] = denom
        res["err_ratio"] = res["max_abs_err"] / denom
        res["argmax_equal"] = bool(np.argmax(got) == np.argmax(ref))
    except Exception as e:  # noqa: BLE001
        fail("run", e, sys.exc_info()[2])
        return res

    if do_aarch64:
        try:
            a64 = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                     "mattr": ["+neon"]})
            t0 = time.perf_counter()
            ex64 = tvm.compile(mod, target=a64)
            res["a64_compile_s"] = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as d:
                so_path = os.path.join(d, "model.so")
                ex64.export_library(so_path, cc="aarch64-linux-gnu-g++")
                machine = _elf_machine(so_path)
                res["a64_so_mb"] = os.path.getsize(so_path) / 1e6
            res["a64_link"] = machine == 183  # EM_AARCH64
            if machine != 183:
                res["a64_error"] = f"exported library e_machine={machine}, not AArch64"
        except Exception as e:  # noqa: BLE001
            res["a64_link"] = False
            res["a64_error"] = _first_line(e)
    return res


def child_main(path: str, out_json: str, runs: int, do_aarch64: bool, fold: bool) -> int:
    try:
        res = check_one(path, runs, do_aarch64, fold)
    except Exception as e:  # noqa: BLE001 - harness problem, still report
        res = {"model": os.path.splitext(os.path.basename(path))[0], "export": True,
               "failed_stage": "harness", "error": _first_line(e),
               "traceback_tail": traceback.format_exc()[-1500:]}
    with open(out_json, "w") as f:
        json.dump(res, f)
    return 0


# -------------------------------------------------------------- --via-cli mode
CLI_CASES = [("host", "local"), ("generic-aarch64", "qemu")]


def cli_one(path: str, timeout: float) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    name = os.path.splitext(os.path.basename(path))[0]
    res: dict = {"model": name, "export": True, "via_cli": {}}
    with tempfile.TemporaryDirectory() as d:
        for target, device in CLI_CASES:
            out = os.path.join(d, f"{name}-{target}.edgert")
            case: dict = {}
            steps = [
                ("compile", [sys.executable, "-m", "edgert.cli", "compile", path,
                             "--target", target, "--input-shape",
                             "input=" + "x".join(map(str, INPUT_SHAPE)), "-o", out]),
                ("run", [sys.executable, "-m", "edgert.cli", "run", out,
                         "--device", device, "--check"]),
            ]
            for step, cmd in steps:
                t0 = time.perf_counter()
                try:
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                       timeout=timeout)
                    rc, text = p.returncode, (p.stdout + p.stderr).strip()
                except subprocess.TimeoutExpired:
                    rc, text = "timeout", ""
                case[f"{step}_s"] = time.perf_counter() - t0
                case[f"{step}_rc"] = rc
                case[f"{step}_tail"] = text.splitlines()[-1][:300] if text else ""
                case[f"{step}_cmd"] = " ".join(cmd)
                if rc != 0:
                    break
            res["via_cli"][f"{target}/{device}"] = case
    return res


# ---------------------------------------------------------------- parent side
COLS = ["model", "export", "import s", "compile s", "run ms", "ort ms",
        "err ratio", "a64 compile s", "a64 link", "note"]


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def row(r: dict) -> list[str]:
    note = ""
    if r.get("failed_stage"):
        note = f"{r['failed_stage']} FAILED: {r.get('error', '')}"
        if r.get("onnx_node"):
            note += f" [node {r['onnx_node']}]"
    elif r.get("err_ratio") is not None and r["err_ratio"] > ERR_LIMIT:
        note = f"NUMERICS: err ratio {r['err_ratio']:.2e} > {ERR_LIMIT:g}"
    if r.get("input_sensitivity") is not None and r["input_sensitivity"] < 1e-3:
        note += ("; " if note else "") + (
            f"weak check: output barely depends on input "
            f"(sensitivity {r['input_sensitivity']:.1e}, max|ref| {r.get('ort_max_abs', 0):.1e})")
    if r.get("a64_error"):
        note += ("; " if note else "") + "aarch64: " + r["a64_error"]
    a64 = r.get("a64_link")
    return [r["model"], "yes" if r.get("export") else "no",
            _f(r.get("import_s"), ".1f"), _f(r.get("compile_s"), ".1f"),
            _f(r.get("run_ms"), ".1f"), _f(r.get("ort_ms"), ".1f"),
            _f(r.get("err_ratio"), ".1e"), _f(r.get("a64_compile_s"), ".1f"),
            "-" if a64 is None else ("ok" if a64 else "FAIL"), note]


def cli_rows(r: dict) -> list[str]:
    lines = []
    if not r.get("export"):
        return [f"| {r['model']} | no export | | | |"]
    for key, c in r.get("via_cli", {}).items():
        comp = "ok" if c.get("compile_rc") == 0 else f"rc={c.get('compile_rc')}"
        run = ("-" if "run_rc" not in c
               else "ok" if c["run_rc"] == 0 else f"rc={c['run_rc']}")
        tail = c.get("run_tail") or c.get("compile_tail") or ""
        lines.append(f"| {r['model']} | {key} | {comp} {c.get('compile_s', 0):.1f}s "
                     f"| {run} {c.get('run_s', 0):.1f}s | {tail} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("names", nargs="*")
    ap.add_argument("--runs", type=int, default=5, help="timed runs (median)")
    ap.add_argument("--timeout", type=float, default=2400,
                    help="seconds per model subprocess")
    ap.add_argument("--no-aarch64", action="store_true")
    ap.add_argument("--via-cli", action="store_true",
                    help="drive `edgert compile`/`edgert run --check` instead")
    ap.add_argument("--fold-shapes", action="store_true",
                    help="fold static shape arithmetic (fold_static_shapes) before import")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "OUT_JSON"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        return child_main(args.child[0], args.child[1], args.runs, not args.no_aarch64,
                          args.fold_shapes)
    if not args.model_dir:
        ap.error("MODEL_DIR is required")

    names = args.names or sorted(os.path.splitext(os.path.basename(p))[0]
                                 for p in glob.glob(os.path.join(args.model_dir, "*.onnx")))
    results = []
    if args.via_cli:
        print("| model | target/device | compile | run --check | last line |")
        print("|---|---|---|---|---|")
    else:
        print("| " + " | ".join(COLS) + " |")
        print("|" + "---|" * len(COLS))
    for name in names:
        path = os.path.join(args.model_dir, name + ".onnx")
        if not os.path.exists(path):
            r = {"model": name, "export": False, "note": "no ONNX file"}
        elif args.via_cli:
            r = cli_one(path, args.timeout)
        else:
            with tempfile.TemporaryDirectory() as d:
                out_json = os.path.join(d, "r.json")
                cmd = [sys.executable, os.path.abspath(__file__), "--child", path, out_json,
                       "--runs", str(args.runs)] + (["--no-aarch64"] if args.no_aarch64 else []) \
                    + (["--fold-shapes"] if args.fold_shapes else [])
                t0 = time.perf_counter()
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True,
                                       timeout=args.timeout)
                    rc, log = p.returncode, p.stdout + p.stderr
                except subprocess.TimeoutExpired as e:
                    rc, log = "timeout", str(e)
                if os.path.exists(out_json):
                    with open(out_json) as f:
                        r = json.load(f)
                else:
                    r = {"model": name, "export": True, "failed_stage": "crash",
                         "error": f"child exited rc={rc}: "
                                  + (log.strip().splitlines()[-1] if log.strip() else "")}
                r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        if args.via_cli:
            for line in cli_rows(r):
                print(line, flush=True)
        else:
            print("| " + " | ".join(row(r)) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
