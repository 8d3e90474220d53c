"""Int8 vs float on this host: edgert float bundle, edgert int8 bundle, onnxruntime float, onnxruntime int8.

For every model, one run of this script quantises it to ONNX QDQ, by default with edgert's
own recipe (``edgert compress --quantize int8``: symmetric per-channel int8 weights and
symmetric int8 activations), or with ``--quantizer ort`` by onnxruntime's ``quantize_static``
(per-channel int8 weights, uint8 activations by default, ``--activations int8`` for symmetric
int8); zoo models calibrate on their calibration split, other models on ``--calib-samples``
standard-normal inputs. It compiles a float and an int8 host bundle from it, and
prints per thread count a Markdown table: median ms of the four, the int8 bundle's speed-up
over the float bundle, its ratio to onnxruntime int8 (below 1: faster), and the sizes of
``lib/model.so``.

Measurement is ``tools/bench_runtimes.py``'s (imported, not copied): every cell is a fresh
subprocess with ``TVM_NUM_THREADS`` / ``OMP_NUM_THREADS`` = N, warm-up then single timed calls,
each bundle checked against its golden (onnxruntime) output first.

Usage (project venv; a quiet machine for numbers to publish):

    .venv/bin/python tools/bench_int8.py --torchvision-dir tv-models --json int8.json
    .venv/bin/python tools/bench_int8.py --model PATH/mobilenet_v2.onnx --models digits_cnn,mobilenet_v2
    .venv/bin/python tools/bench_int8.py --quick --models digits_cnn --threads 1     # smoke run

Progress goes to stderr; the tables to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_runtimes as br  # noqa: E402  (a sibling script, not a package)

COLUMNS = ("float_bundle", "int8_bundle", "ort_float", "ort_int8")
HEADERS = {"float_bundle": "edgert float ms", "int8_bundle": "edgert int8 ms", "ort_float": "onnxruntime float ms",
           "ort_int8": "onnxruntime int8 ms"}


def quantize_ort(src: Path, dst: Path, name: str, zoo: bool, shapes: dict[str, Any], activation: str, samples: int) -> Path:
    """``src`` as onnxruntime QDQ at ``dst`` (the model both int8 columns run)."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if zoo:
        from edgert.zoo.harness import calibration_data

        calib = calibration_data(name, samples)
        (input_name, x), = calib.items()
        x = x.reshape(len(x), *shapes[input_name][1:]).astype(np.float32)
    else:
        (input_name, shape), = shapes.items()
        x = np.random.default_rng(0).standard_normal((samples, *shape[1:])).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{input_name: x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    signed = activation == "int8"
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                    extra_options={"ActivationSymmetric": signed})
    return dst


def quantize_edgert(src: Path, dst: Path, name: str, zoo: bool, shapes: dict[str, Any], samples: int) -> Path:
    """``src`` as edgert's default int8 recipe gives it (``edgert compress --quantize int8``) at ``dst``."""
    import numpy as np

    from edgert.compress import QuantizeSpec, quantize
    from edgert.model import load

    model = load(src, {k: tuple(v) for k, v in shapes.items()})
    if zoo:
        calib: Any = name
    else:
        rng = np.random.default_rng(0)
        calib = {k: rng.standard_normal((samples, *v[1:])).astype(np.float32) for k, v in shapes.items()}
    q, _ = quantize(model, QuantizeSpec(), calib)  # the default recipe, as `edgert compress` runs it
    q.save(dst)
    return dst


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = br.budget_from_args(args)
    specs = br.collect_models(args.models, args.torchvision_dir, args.model, None)
    variant = "tuned" if args.tuned else "default"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgert-int8-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        models: dict[str, dict[str, Any]] = {}
        for s in specs:
            if s.missing:
                br.progress(f"{s.name}: skipped ({s.missing})")
                models[s.name] = {"missing": s.missing}
                continue
            (work / s.name).mkdir(parents=True, exist_ok=True)
            try:
                if args.quantizer == "ort":
                    br.progress(f"{s.name}: quantising (onnxruntime quantize_static, {args.activations} activations) ...")
                    qdq = quantize_ort(s.onnx, work / s.name / "qdq.onnx", s.name, s.zoo, s.shapes, args.activations,
                                       args.calib_samples)
                else:
                    br.progress(f"{s.name}: quantising (edgert's default int8 recipe) ...")
                    qdq = quantize_edgert(s.onnx, work / s.name / "qdq.onnx", s.name, s.zoo, s.shapes, args.calib_samples)
            except Exception as exc:  # noqa: BLE001 - one model's failure is one row of errors
                models[s.name] = {"missing": f"quantisation failed: {exc}"}
                continue
            entry: dict[str, Any] = {"float": str(s.onnx), "int8": str(qdq)}
            for kind, src in (("float", s.onnx), ("int8", qdq)):
                out = work / s.name / f"{kind}.edgert"
                br.progress(f"{s.name} {kind}: compiling ...")
                res = br.run_isolated({"kind": "compile", "onnx": str(src), "shapes": s.shapes, "variant": variant,
                                       "out": str(out), "tuning_db": str(args.tuning_db) if args.tuning_db else None},
                                      max(args.threads), args.compile_timeout)
                if "error" in res:
                    br.progress(f"{s.name} {kind}: compile failed: {res['error']}")
                    entry[f"{kind}_bundle"] = {"error": res["error"]}
                else:
                    entry[f"{kind}_bundle"] = str(out)
                    entry[f"{kind}_so_bytes"] = (out / "lib" / "model.so").stat().st_size
            models[s.name] = entry

        for threads in args.threads:
            for s in specs:
                entry = models[s.name]
                row: dict[str, Any] = {"model": s.name, "threads": threads}
                for col in COLUMNS:
                    if "missing" in entry:
                        row[col] = {"na": entry["missing"]}
                        continue
                    kind = col.split("_")[1] if col.startswith("ort") else col.split("_")[0]
                    if col.startswith("ort"):
                        task = {"kind": "ort", "onnx": entry[kind], "shapes": s.shapes, "threads": threads}
                    elif isinstance(entry[f"{kind}_bundle"], dict):
                        row[col] = entry[f"{kind}_bundle"]
                        continue
                    else:
                        task = {"kind": "bundle", "bundle": entry[f"{kind}_bundle"]}
                    row[col] = br._measure(s, col, task, threads, budget, args.timeout)
                row["float_so_bytes"] = entry.get("float_so_bytes")
                row["int8_so_bytes"] = entry.get("int8_so_bytes")
                results.append(row)
    return {"host": br.host_info(), "settings": {"threads": args.threads, "quick": args.quick, "variant": variant,
                                                 "quantizer": args.quantizer,
                                                 "activations": args.activations if args.quantizer == "ort" else "int8 (symmetric)",
                                                 "budget": dataclasses.asdict(budget)},
            "results": results}


def _ms(cell: dict[str, Any]) -> float | None:
    return cell.get("median_ms") if isinstance(cell, dict) else None


def render(report: dict[str, Any]) -> str:
    host, settings = report["host"], report["settings"]
    processes = settings["budget"].get("processes", 1)
    lines = [
        br.measured_line(host, [("onnxruntime", "onnxruntime"), ("TVM", "apache-tvm"), ("edgert", "edgert")], settings["quick"],
                         f"quantised by {settings.get('quantizer', 'ort')}, {settings['activations']} activations, "
                         f"edgert schedules '{settings['variant']}'"),
        "Median ms per inference of batch 1" + (f" (each cell: the median of {processes} processes)" if processes > 1 else "")
        + ". int8/float: the int8 bundle's speed-up over the float bundle; "
        "int8/ORT int8: its time over onnxruntime's on the same QDQ model (below 1: faster). Sizes: lib/model.so.",
        "",
    ]
    for threads in settings["threads"]:
        rows = [r for r in report["results"] if r["threads"] == threads]
        lines += [f"### {br.threads_text(threads)}", ""]
        lines += ["| model | " + " | ".join(HEADERS[c] for c in COLUMNS)
                  + " | int8 speed-up over float | int8 / ORT int8 | model.so float KB | int8 KB | size ratio |",
                  "|---" * (len(COLUMNS) + 6) + "|"]
        for r in rows:
            cells = []
            for c in COLUMNS:
                ms = _ms(r[c])
                cells.append(br.fmt_ms(ms) if ms is not None else
                             ("error: " + br._cell_text(r[c]["error"], 50) if "error" in r[c] else "n/a"))
            f_ms, i_ms, o_ms = _ms(r["float_bundle"]), _ms(r["int8_bundle"]), _ms(r["ort_int8"])
            cells.append(f"{f_ms / i_ms:.2f}x" if f_ms and i_ms else "-")
            cells.append(f"{i_ms / o_ms:.2f}" if i_ms and o_ms else "-")
            fb, ib = r.get("float_so_bytes"), r.get("int8_so_bytes")
            cells += [f"{fb / 1024:.0f}" if fb else "-", f"{ib / 1024:.0f}" if ib else "-", f"{ib / fb:.2f}" if fb and ib else "-"]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    br.add_common_arguments(ap, work="QDQ models and bundles")
    ap.add_argument("--quantizer", choices=("edgert", "ort"), default="edgert",
                    help="who makes the QDQ model: edgert's default recipe, or onnxruntime's quantize_static")
    ap.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                    help="with --quantizer ort: activation dtype of the QDQ model")
    ap.add_argument("--calib-samples", type=int, default=32, help="calibration samples (default %(default)s)")
    br.add_tuning_arguments(ap)
    args = ap.parse_args(argv)
    br.check_common_arguments(ap, args)
    return args


def main(argv: list[str] | None = None) -> int:
    return br.report_main(argv, parse_args, run, render)


if __name__ == "__main__":
    sys.exit(main())
