"""Sparse vs dense: a ResNet-class 3x3 conv stack pruned unstructured by magnitude.

    python tools/bench_sparse.py [--sparsity 0.5,0.8,0.9,0.95] [--threads 1,2] [--runs 30] [--tuning-db DIR]

Prints, per sparsity and thread count, the median latency of the dense stack compiled by
edgert (default schedules, and tuned: the stack's dense workloads are tuned first with
``edgert.compiler.tuning.tune`` into ``--tuning-db`` unless it already has their records),
of onnxruntime (MLAS) as an outside reference, and of the sparse build (edgert's CSR
kernels, remaining dense layers tuned), with the ratio sparse vs dense tuned.
tools/bench_runtimes.py calls ``bench_rows(threads=N, quick=...)`` (JSON rows); ``rows()`` gives typed rows.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

# (in channels, out channels, input size, stride): ResNet's three middle stages, with the
# strided convs that join them.
STACK = ((64, 64, 56, 1), (64, 128, 56, 2), (128, 128, 28, 1), (128, 256, 28, 2), (256, 256, 14, 1))
DENSE_LABEL = "edgert dense bundle, tuned"


@dataclass(frozen=True)
class Row:
    sparsity: float
    threads: int
    dense: str  # what the dense column measured
    dense_ms: float
    sparse_ms: float
    dense_default_ms: float
    ort_ms: float
    sparse_layers: int  # layers that took the sparse kernel
    max_abs_err: float  # sparse build vs onnxruntime on the same pruned model

    @property
    def speedup(self) -> float:
        return self.dense_ms / self.sparse_ms

    def to_json(self) -> dict:
        return {**asdict(self), "speedup": round(self.speedup, 2)}


def stack_model(sparsity: float, seed: int = 0):
    """The conv stack as ONNX, each weight pruned to ``sparsity`` zeros by magnitude."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, (ci, co, _, stride) in enumerate(STACK):
        w = (rng.standard_normal((co, ci, 3, 3)) * np.sqrt(2.0 / (ci * 9))).astype("float32")
        if sparsity > 0:
            w[np.abs(w) <= np.quantile(np.abs(w), sparsity)] = 0.0
        b = (rng.standard_normal(co) * 0.01).astype("float32")
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride, stride]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        cur = f"r{i}"
    ci0, _, hw0, _ = STACK[0]
    co, hw = STACK[-1][1], STACK[-1][2] // STACK[-1][3]
    graph = helper.make_graph(
        nodes, "sparse_stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci0, hw0, hw0])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, co, hw, hw])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _median_ms(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _set_tvm_threads(n: int) -> None:
    import tvm

    # kBig affinity mode (1) with n workers: all cores of this machine count as big.
    tvm.get_global_func("runtime.config_threadpool")(1, n)


def _tuning_db(db, tgt, minutes: float):
    """A database holding the stack's dense workloads: reuse ``db``, or tune into it."""
    import tempfile
    from pathlib import Path

    from edgert.compiler.tuning import TuneOptions, tune

    db = Path(db) if db else Path(tempfile.gettempdir()) / "edgert-bench-sparse-db"
    path = db.parent / "sparse_stack_dense.onnx"
    db.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(stack_model(0.0).SerializeToString())
    # Resumes: candidates already in the database are not measured again.
    tune(path, tgt, TuneOptions(database=db, minutes=minutes), log=lambda m: print(m, flush=True))
    return db


def rows(
    sparsities=(0.5, 0.8, 0.9, 0.95), threads=(1, 2), runs: int = 30, target: str = "host", tuning_db=None, tune_minutes: float = 10.0
) -> list[Row]:
    """Measure every (sparsity, threads) pair; see the module docstring."""
    import onnxruntime as ort
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from edgert.compiler import pipeline
    from edgert.compiler.sparse import sparsify
    from edgert.compiler.targets import load_target

    tgt = load_target(target)
    db = _tuning_db(tuning_db, tgt, tune_minutes)
    x = np.random.default_rng(1).standard_normal((1, STACK[0][0], STACK[0][2], STACK[0][2])).astype("float32")
    xt = tvm.runtime.tensor(x)
    out: list[Row] = []
    for sp in sparsities:
        model = stack_model(sp)
        dense_tuned, rep_t = pipeline.build(from_onnx(model, keep_params_in_input=False), tgt, "auto", [db])
        dense_default, _ = pipeline.build(from_onnx(model, keep_params_in_input=False), tgt, "default")
        mod, report = sparsify(from_onnx(model, keep_params_in_input=False), tgt)
        sparse, _ = pipeline.build(mod, tgt, "auto", [db])
        vms = {k: relax.VirtualMachine(ex, tvm.cpu()) for k, ex in (("tuned", dense_tuned), ("default", dense_default), ("sparse", sparse))}
        sessions = {}
        for n in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n, 1
            sessions[n] = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = sessions[threads[0]].run(None, {"x": x})[0]
        err = float(np.abs(vms["sparse"]["main"](xt).numpy() - ref).max())
        label = f"{DENSE_LABEL} ({len(rep_t.counts.tuned)} of {len(rep_t.counts.tuned) + len(rep_t.counts.default)} workloads tuned)"
        for n in threads:
            ort_ms = _median_ms(lambda s=sessions[n]: s.run(None, {"x": x}), runs)
            _set_tvm_threads(n)
            ms = {k: _median_ms(lambda f=vm["main"]: f(xt), runs) for k, vm in vms.items()}
            out.append(Row(sp, n, label, ms["tuned"], ms["sparse"], ms["default"], ort_ms, report.sparse_count, err))
    return out


def bench_rows(threads: int = 1, quick: bool = False) -> list[dict]:
    """The entry point tools/bench_runtimes.py calls (in a process of its own per thread count): JSON rows."""
    sparsities = (0.9,) if quick else (0.5, 0.8, 0.9, 0.95)
    return [r.to_json() for r in rows(sparsities, (int(threads),), runs=10 if quick else 30)]


def format_table(table: list[Row]) -> str:
    lines = [
        f"dense = {table[0].dense if table else DENSE_LABEL}; sparse = edgert CSR kernels; ratio = dense tuned / sparse",
        "",
        "| sparsity | threads | onnxruntime ms | edgert dense default ms | edgert dense tuned ms | edgert sparse ms "
        "| sparse vs dense tuned | sparse layers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r.sparsity:.0%} | {r.threads} | {r.ort_ms:.2f} | {r.dense_default_ms:.2f} | {r.dense_ms:.2f} | {r.sparse_ms:.2f} "
            f"| {r.speedup:.2f}x | {r.sparse_layers}/{len(STACK)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", default="0.5,0.8,0.9,0.95")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--target", default="host")
    ap.add_argument("--tuning-db", default=None, help="database for the dense stack (tuned into when it lacks records)")
    ap.add_argument("--tune-minutes", type=float, default=10.0)
    args = ap.parse_args()
    table = rows(
        tuple(float(s) for s in args.sparsity.split(",")),
        tuple(int(t) for t in args.threads.split(",")),
        args.runs,
        args.target,
        args.tuning_db,
        args.tune_minutes,
    )
    print(format_table(table))


if __name__ == "__main__":
    main()
