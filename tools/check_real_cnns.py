"""Compile and run real ImageNet-class CNNs through edgert's command line and check them.

For each ``MODEL_DIR/*.onnx`` (e.g. from ``tools/export_torchvision.py``), in
its own subprocess so a crash or timeout does not stop the rest:

    edgert compile MODEL --target host --input-shape input=1x3x224x224 -o OUT
    edgert run OUT --device local --check
    edgert compile MODEL --target generic-aarch64 ... ; edgert run OUT --device qemu --check

and prints one row per model: compile seconds, the max error relative to
max |onnxruntime| as `run --check` reports it, and the run time `edgert run`
reports (TVM's untuned default schedules; qemu times are emulation, not
device speed).

Usage:
    tv-venv/bin/python tools/export_torchvision.py tv-models --calibrate-bn 4
    .venv/bin/python tools/check_real_cnns.py tv-models [NAME ...] [--no-qemu] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAIRS = [("host", "local"), ("generic-aarch64", "qemu")]


def edgert(*args: str, timeout: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "edgert.cli", *args], capture_output=True, text=True,
                           timeout=timeout, check=False)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, f"timed out after {timeout:.0f} s"
    return rc, out, time.perf_counter() - t0


def input_shape(model: Path) -> str:
    import onnx

    inp = onnx.load(str(model), load_external_data=False).graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in inp.type.tensor_type.shape.dim]
    return f"{inp.name}={'x'.join(map(str, dims))}"


def check(model: Path, pairs: list[tuple[str, str]], timeout: float) -> dict:
    row: dict = {"model": model.stem}
    with tempfile.TemporaryDirectory() as tmp:
        for target, device in pairs:
            out = Path(tmp) / f"{target}.edgert"
            rc, log, secs = edgert("compile", str(model), "--target", target, "--input-shape", input_shape(model),
                                   "-o", str(out), timeout=timeout)
            res: dict = {"compile_s": round(secs, 1), "ok": False}
            row[f"{target}/{device}"] = res
            if rc != 0:
                res["error"] = log.strip().splitlines()[-1]
                continue
            rc, log, _ = edgert("run", str(out), "--device", device, "--check", timeout=timeout)
            ratio = re.search(r"\(([0-9.e+-]+) of max\|ref\|\)", log)
            run_ms = re.search(r"run: ([0-9.]+) ms", log)
            res.update(ok=rc == 0, err_ratio=float(ratio.group(1)) if ratio else None,
                       run_ms=float(run_ms.group(1)) if run_ms else None)
            if rc != 0:
                res["error"] = log.strip().splitlines()[-1]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("names", nargs="*", help="file stems to check (default: every .onnx)")
    ap.add_argument("--no-qemu", action="store_true", help="host only")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per edgert command")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    models = [args.model_dir / f"{n}.onnx" for n in args.names] or sorted(args.model_dir.glob("*.onnx"))
    pairs = PAIRS[:1] if args.no_qemu else PAIRS
    print("| model | " + " | ".join(f"{t}/{d} compile s | err/max|ref| | run ms" for t, d in pairs) + " |")
    print("|---|" + "---|---|---|" * len(pairs))
    rows, failed = [], 0
    for model in models:
        row = check(model, pairs, args.timeout)
        rows.append(row)
        cells = []
        for t, d in pairs:
            r = row[f"{t}/{d}"]
            failed += not r["ok"]
            err = f"{r['err_ratio']:.1e}" if r.get("err_ratio") is not None else "FAIL: " + r.get("error", "?")[:80]
            cells.append(f"{r['compile_s']} | {err} | {r.get('run_ms') or '-'}")
        print(f"| {row['model']} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n{len(models) * len(pairs) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
