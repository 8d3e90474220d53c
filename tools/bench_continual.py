"""Continual step bundle vs re-running the offline bundle on the window, per frame, side by side.

For one temporal model (default: the zoo's tcn_kws), in one run:
- converts it to step models (``edgert continual``), one per state-update form
  (``--updates``, default ``shift,concat``: the whole window kept as state vs the past
  positions kept and concatenated each step),
- compiles the offline model and every step model for the host (and, with ``--aarch64``,
  for generic-aarch64, then runs a short stream of each under qemu as a check),
- times, per frame, on this host with the bundles' native runner (no Python in the loop):
  the step bundle through ``edgert-run --stream`` (median step over every frame), and the
  offline bundle re-run on the window (``edgert-run --profile --repeat``, median run; shifting the
  window in its input buffer is left out, in its favour), at ``--threads`` TVM threads,
  alternating offline and step processes ``--rounds`` times and taking the median,
- counts MACs (Conv, Gemm, MatMul) per frame: the offline model on a window vs one step.
  MACs depend on the graph, not the target, so the aarch64 figures are the same numbers
  counted on the graphs compiled for aarch64.

Prints a Markdown table and the ratios; the step outputs are checked against onnxruntime
(the first stream) before anything is timed. Run it on a quiet machine:

    nice -n 19 .venv/bin/python tools/bench_continual.py --aarch64
    .venv/bin/python tools/bench_continual.py --model my_tcn.onnx --time-axis 2 --window-frames 500
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def runner_report(cmd: list[str], threads: int) -> dict:
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("EDGERT ")), None)
    if line is None:
        raise SystemExit(f"runner failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    report = json.loads(line[len("EDGERT "):])
    if report.get("status") != "ok":
        raise SystemExit(f"runner error: {report}")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models_zoo" / "tcn_kws" / "model.onnx"))
    ap.add_argument("--time-axis", type=int, default=2)
    ap.add_argument("--updates", default="concat,shift,ring,shift:separate",
                    help="step-model variants: UPDATE[:separate] (separate: one state tensor per buffer), comma separated")
    ap.add_argument("--frames", type=int, default=2000, help="frames per timed stream")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the frames per stream process")
    ap.add_argument("--runs", type=int, default=3000, help="timed offline runs per process")
    ap.add_argument("--rounds", type=int, default=3, help="alternating offline/step processes per figure")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--aarch64", action="store_true", help="also compile for generic-aarch64 and check a stream under qemu")
    ap.add_argument("--workdir", help="keep the bundles here (default: a temporary folder)")
    args = ap.parse_args()

    import edgert
    from edgert.compress.continual import ContinualSpec, continual, macs

    offline = edgert.load(args.model)
    updates = [u for u in args.updates.split(",") if u]
    quiet = lambda _m: None  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="edgert-bench-continual-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"[bench] compiling {offline.name} offline and {len(updates)} step model(s)", file=sys.stderr)
        off_bundle = edgert.compile(offline, target="host", output=work / "offline.edgert", log=quiet)
        steps = {}
        for u in updates:
            mode, _, merge = u.partition(":")
            step, report = continual(offline, ContinualSpec(args.time_axis, update=mode, merge_states=merge != "separate"))
            step.save(work / f"step_{u.replace(':', '_')}.onnx")
            steps[u] = (step, report, edgert.compile(work / f"step_{u.replace(':', '_')}.onnx", target="host",
                                                     output=work / f"step_{u.replace(':', '_')}.edgert", log=quiet))
        rep0 = steps[updates[0]][1]
        frame_shape = next(iter(rep0.frame_shapes.values()))
        x = np.random.default_rng(0).standard_normal((args.frames, *frame_shape)).astype(np.float32)
        np.save(work / "frames.npy", x)

        # Correctness first: the native stream equals onnxruntime's stream of the same step model.
        ref = [o for o in edgert.Stream(work / f"step_{updates[0]}.onnx").steps(x[:200]) if o is not None]
        np.save(work / "frames200.npy", x[:200])
        for u, (_, _, b) in steps.items():
            rep = runner_report([str(b.path / "bin" / "edgert-run"), str(b.path), "--stream", str(work / "frames200.npy"),
                                 "--output-dir", str(work / f"out_{u.replace(':', '_')}")], args.threads)
            got = np.load(rep["outputs"][0]["file"])
            err = float(np.max(np.abs(got - np.stack(ref)))) / float(np.max(np.abs(np.stack(ref))))
            if got.shape[0] != len(ref) or err > 1e-5:
                raise SystemExit(f"step bundle '{u}' disagrees with onnxruntime: {err:.3g} of max|ref|")
            print(f"[bench] step bundle '{u}': {got.shape[0]} outputs agree with onnxruntime ({err:.2g} of max|ref|)",
                  file=sys.stderr)

        times: dict[str, list[float]] = {"offline": [], **{u: [] for u in updates}}
        for r in range(args.rounds):
            print(f"[bench] round {r + 1}/{args.rounds}", file=sys.stderr)
            # --profile: run times at full precision (a plain run reports whole microseconds).
            rep = runner_report([str(off_bundle.path / "bin" / "edgert-run"), str(off_bundle.path), "--golden",
                                 "--profile", "--warmup", "200", "--repeat", str(args.runs)], args.threads)
            times["offline"].append(statistics.median(rep["run_ms"]))
            for u, (_, _, b) in steps.items():
                rep = runner_report([str(b.path / "bin" / "edgert-run"), str(b.path), "--stream",
                                     str(work / "frames.npy"), "--repeat", str(args.repeat)], args.threads)
                times[u].append(rep["step_ms"]["median"])

        arm = {}
        if args.aarch64:
            from edgert.device import open_device
            from edgert.runtime.session import run_stream_on_device

            print("[bench] compiling for generic-aarch64 and streaming under qemu", file=sys.stderr)
            arm_off = edgert.compile(offline, target="generic-aarch64", output=work / "offline.arm.edgert", log=quiet)
            arm["offline"] = arm_off.arch
            dev = open_device("qemu")
            try:
                for u in updates:
                    b = edgert.compile(work / f"step_{u.replace(':', '_')}.onnx", target="generic-aarch64",
                                       output=work / f"step_{u.replace(':', '_')}.arm.edgert", log=quiet)
                    res = run_stream_on_device(b, dev, x[:100])
                    got = next(iter(res.outputs.values()))
                    want = np.stack([o for o in edgert.Stream(work / f"step_{u.replace(':', '_')}.onnx").steps(x[:100]) if o is not None])
                    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
                    arm[u] = f"{b.arch}, qemu stream of 100 frames agrees to {err:.1g} of max|ref|"
            finally:
                dev.close()

    mac_off = macs(offline.proto)
    print(f"\n{offline.name}: window {rep0.window} frames, delay {rep0.delay}, receptive field {rep0.receptive_field}; "
          f"{args.threads} thread(s), medians of {args.rounds} alternating rounds\n")
    print("| variant | MACs per frame | per-frame latency ms (host) | MACs vs offline | latency vs offline |")
    print("|---|---|---|---|---|")
    t_off = statistics.median(times["offline"])
    print(f"| offline bundle re-run on the window | {mac_off:,} | {t_off:.4f} | 1x | 1x |")
    for u, (_, report, _) in steps.items():
        t = statistics.median(times[u])
        print(f"| step bundle, state update '{u}' ({len(report.states)} states) | {report.macs_step:,} | {t:.4f} | "
              f"{mac_off / report.macs_step:.1f}x fewer | {t_off / t:.2f}x lower |")
    print("\nper round (ms): " + "; ".join(f"{k}: {', '.join(f'{v:.4f}' for v in vs)}" for k, vs in times.items()))
    if arm:
        print(f"\naarch64 (generic-aarch64): MACs per frame offline {mac_off:,}; "
              + "; ".join(f"step '{u}' {steps[u][1].macs_step:,} ({mac_off / steps[u][1].macs_step:.1f}x fewer)"
                          for u in updates))
        for u in updates:
            print(f"  step '{u}': {arm[u]}")
    best = min(updates, key=lambda u: statistics.median(times[u]))
    print(f"\nfastest state update on this host: '{best}'")


if __name__ == "__main__":
    main()
