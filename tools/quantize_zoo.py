"""Float vs int8 (edgert's default PTQ recipe) accuracy of every zoo model, as a Markdown table.

    .venv/bin/python tools/quantize_zoo.py [--quantize int8:entropy] [NAME...]

Accuracy is measured with the zoo harness (onnxruntime, validation split);
the int8 model is the QDQ ONNX that `edgert compress --quantize` writes.
"""
from __future__ import annotations

import argparse
import time

from edgert.compress.quantize import parse_spec, quantize
from edgert.model import load
from edgert.zoo import evaluate, get, list_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--quantize", default="int8")
    args = ap.parse_args()
    spec = parse_spec(args.quantize)
    print(f"recipe: --quantize {args.quantize}")
    print("| model | float acc | int8 acc | agreement | output SQNR | ONNX size float -> int8 | time |")
    print("|---|---|---|---|---|---|---|")
    for name in args.names or [m.name for m in list_models()]:
        zoo = get(name)
        model = load(zoo.onnx_path)
        start = time.perf_counter()
        q, report = quantize(model, spec, name)
        took = time.perf_counter() - start
        fl, i8 = evaluate(name, model), evaluate(name, q)
        print(f"| {name} | {fl.accuracy:.2%} | {i8.accuracy:.2%} | {i8.agreement:.2%} | {report.output_sqnr_db:.1f} dB | "
              f"{model.proto.ByteSize() / 1e3:.0f} kB -> {q.proto.ByteSize() / 1e3:.0f} kB | {took:.1f} s |")


if __name__ == "__main__":
    main()
