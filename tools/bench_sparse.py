"""Sparse vs dense: a ResNet-class 3x3 conv stack pruned unstructured by magnitude.

    python tools/bench_sparse.py [--sparsity 0.5,0.8,0.9,0.95] [--threads 1,2] [--runs 30]

Prints, per sparsity and thread count, the median latency of the dense model and of the
sparse build (edgert.compiler.sparse kernels) and their ratio. The dense figure is
onnxruntime's (MLAS, a well-tuned dense conv) as a stand-in for edgert's dense tuned bundle
until the compile pipeline with default schedules lands; the column says which it is.
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
DENSE_LABEL = "onnxruntime (dense stand-in)"


@dataclass(frozen=True)
class Row:
    sparsity: float
    threads: int
    dense: str  # what the dense column measured
    dense_ms: float
    sparse_ms: float
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


def rows(sparsities=(0.5, 0.8, 0.9, 0.95), threads=(1, 2), runs: int = 30, target: str = "host") -> list[Row]:
    """Measure every (sparsity, threads) pair; see the module docstring."""
    import onnxruntime as ort
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from edgert.compiler.sparse import sparsify
    from edgert.compiler.targets import load_target

    tgt = load_target(target)
    x = np.random.default_rng(1).standard_normal((1, STACK[0][0], STACK[0][2], STACK[0][2])).astype("float32")
    out: list[Row] = []
    for sp in sparsities:
        model = stack_model(sp)
        mod, report = sparsify(from_onnx(model, keep_params_in_input=False), tgt)
        vm = relax.VirtualMachine(tvm.compile(mod, target=tgt.tvm_target()), tvm.cpu())
        xt = tvm.runtime.tensor(x)
        sessions = {}
        for n in threads:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = n, 1
            sessions[n] = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ref = sessions[threads[0]].run(None, {"x": x})[0]
        err = float(np.abs(vm["main"](xt).numpy() - ref).max())
        for n in threads:
            dense_ms = _median_ms(lambda s=sessions[n]: s.run(None, {"x": x}), runs)
            _set_tvm_threads(n)
            sparse_ms = _median_ms(lambda f=vm["main"], t=xt: f(t), runs)
            out.append(Row(sp, n, DENSE_LABEL, dense_ms, sparse_ms, report.sparse_count, err))
    return out


def bench_rows(threads: int = 1, quick: bool = False) -> list[dict]:
    """The entry point tools/bench_runtimes.py calls (in a process of its own per thread count): JSON rows."""
    sparsities = (0.9,) if quick else (0.5, 0.8, 0.9, 0.95)
    return [r.to_json() for r in rows(sparsities, (int(threads),), runs=10 if quick else 30)]


def format_table(table: list[Row]) -> str:
    head = f"{'sparsity':>8} {'threads':>7} {'dense ms':>9} {'sparse ms':>10} {'speedup':>8} {'sparse layers':>13}"
    lines = [f"dense = {table[0].dense if table else DENSE_LABEL}; sparse = edgert sparse kernels (TVM)", head]
    for r in table:
        lines.append(
            f"{r.sparsity:>8.0%} {r.threads:>7} {r.dense_ms:>9.2f} {r.sparse_ms:>10.2f} {r.speedup:>7.2f}x "
            f"{r.sparse_layers:>6}/{len(STACK)}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", default="0.5,0.8,0.9,0.95")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--target", default="host")
    args = ap.parse_args()
    table = rows(
        tuple(float(s) for s in args.sparsity.split(",")), tuple(int(t) for t in args.threads.split(",")), args.runs, args.target
    )
    print(format_table(table))


if __name__ == "__main__":
    main()
