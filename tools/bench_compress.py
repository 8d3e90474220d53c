"""Float vs structured-pruned vs low-rank: compiled host bundle latency, side by side in one run.

For every model, one run of this script makes two compressed ONNX models with
edgert's passes (``edgert compress --prune structured:keep=K`` and
``--lowrank keep=K``, both at ``--keep`` of the MACs, default 0.6),
compiles the float model and both into host bundles (edgert's default
schedules, or ``--tuned``; channel counts and ranks in multiples of the
host's vector width, as ``--target host`` gives them), and prints per thread count a Markdown table:
median ms of each bundle, the speed-up of each compressed bundle over the
float one, the MACs kept, and for zoo models the validation accuracy (zoo
harness, onnxruntime on the compressed ONNX). Zoo models calibrate on their
calibration split, other models on ``--calib-samples`` standard-normal inputs.

Measurement is ``tools/bench_runtimes.py``'s (imported, not copied): every
cell is a fresh subprocess with ``TVM_NUM_THREADS`` / ``OMP_NUM_THREADS`` = N,
warm-up then single timed calls, each bundle checked against its golden
(onnxruntime) output first.

Usage (project venv; a quiet machine for numbers to publish):
    .venv/bin/python tools/bench_compress.py --models digits_cnn,mobilenetv2_digits,vit_digits --json compress.json
    .venv/bin/python tools/bench_compress.py --quick --models digits_cnn --threads 1     # smoke run

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

KINDS = ("float", "pruned", "lowrank")


def compress(src: Path, dst_dir: Path, name: str, zoo: bool, shapes: dict[str, Any], keep: float,
             samples: int) -> dict[str, Any]:
    """The pruned and low-rank ONNX files of ``src`` and their MAC counts / zoo accuracy."""
    import numpy as np

    from edgert.compress.graph import count_macs
    from edgert.compress.lowrank import LowRankSpec, lowrank
    from edgert.compress.prune import PruneSpec, prune, vector_width
    from edgert.model import load

    model = load(src, {k: tuple(v) for k, v in shapes.items()})
    if zoo:
        calib: Any = name
    else:
        rng = np.random.default_rng(0)
        calib = {k: rng.standard_normal((samples, *v[1:])).astype(np.float32) for k, v in shapes.items()}
    out: dict[str, Any] = {"float": {"onnx": str(src), "macs": count_macs(model.proto)}}
    width = vector_width("host")  # channel counts and ranks in whole vectors of this CPU, as --target host does
    for kind, run in (("pruned", lambda: prune(model, PruneSpec(keep=keep, width=width, samples=samples), calib)),
                      ("lowrank", lambda: lowrank(model, LowRankSpec(keep=keep, width=width, samples=samples), calib))):
        try:
            result, report = run()
        except Exception as exc:  # noqa: BLE001 - one pass failing is one column of errors
            out[kind] = {"error": f"{kind} failed: {exc}"}
            continue
        path = dst_dir / f"{kind}.onnx"
        result.save(path)
        out[kind] = {"onnx": str(path), "macs": report.macs[1], "sqnr_db": report.output_sqnr_db}
        if report.accuracy:
            out["float"]["accuracy"] = report.accuracy["before"]
            out[kind]["accuracy"] = report.accuracy["after"]
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    budget = br.budget_from_args(args)
    specs = br.collect_models(args.models, args.torchvision_dir, args.model, None)
    variant = "tuned" if args.tuned else "default"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgert-compress-") as tmp:
        work = args.work or Path(tmp)
        models: dict[str, dict[str, Any]] = {}
        for s in specs:
            if s.missing:
                br.progress(f"{s.name}: skipped ({s.missing})")
                models[s.name] = {"missing": s.missing}
                continue
            (work / s.name).mkdir(parents=True, exist_ok=True)
            br.progress(f"{s.name}: pruning and factorising to {args.keep:.0%} of the MACs ...")
            entry = compress(s.onnx, work / s.name, s.name, s.zoo, s.shapes, args.keep, args.calib_samples)
            for kind in KINDS:
                if "error" in entry[kind]:
                    br.progress(f"{s.name} {kind}: {entry[kind]['error']}")
                    continue
                out = work / s.name / f"{kind}.edgert"
                br.progress(f"{s.name} {kind}: compiling ...")
                res = br.run_isolated({"kind": "compile", "onnx": entry[kind]["onnx"], "shapes": s.shapes,
                                       "variant": variant, "out": str(out),
                                       "tuning_db": str(args.tuning_db) if args.tuning_db else None},
                                      max(args.threads), args.compile_timeout)
                if "error" in res:
                    br.progress(f"{s.name} {kind}: compile failed: {res['error']}")
                    entry[kind]["error"] = res["error"]
                else:
                    entry[kind]["bundle"] = str(out)
            models[s.name] = entry
        for threads in args.threads:
            for s in specs:
                entry = models[s.name]
                row: dict[str, Any] = {"model": s.name, "threads": threads}
                for kind in KINDS:
                    if "missing" in entry:
                        row[kind] = {"na": entry["missing"]}
                        continue
                    info = entry[kind]
                    cell = {k: v for k, v in info.items() if k in ("macs", "accuracy", "sqnr_db")}
                    if "bundle" in info:
                        cell.update(br._measure(s, kind, {"kind": "bundle", "bundle": info["bundle"]}, threads,
                                                budget, args.timeout))
                    else:
                        cell["error"] = info.get("error", "not compiled")
                    row[kind] = cell
                results.append(row)
    return {"host": br.host_info(), "settings": {"threads": args.threads, "quick": args.quick, "variant": variant,
                                                 "keep": args.keep, "budget": dataclasses.asdict(budget)},
            "results": results}


def render(report: dict[str, Any]) -> str:
    host, settings = report["host"], report["settings"]
    lines = [
        br.measured_line(host, [("TVM", "apache-tvm"), ("edgert", "edgert")], settings["quick"],
                         f"edgert schedules '{settings['variant']}', compression target {settings['keep']:.0%} of the MACs"),
        "Median ms per inference of batch 1 (host bundles). Speed-up: the float bundle's time over the compressed one's. "
        "MACs: kept fraction. Accuracy: zoo validation split (onnxruntime on the compressed ONNX), no fine-tuning.",
        "",
    ]
    for threads in settings["threads"]:
        rows = [r for r in report["results"] if r["threads"] == threads]
        lines += [f"### {br.threads_text(threads)}", ""]
        lines += ["| model | float ms | pruned ms | speed-up | MACs | lowrank ms | speed-up | MACs | accuracy float / pruned / lowrank |",
                  "|---" * 9 + "|"]
        for r in rows:
            f = r["float"]
            cells = [br.fmt_ms(f["median_ms"]) if "median_ms" in f else _err(f)]
            for kind in ("pruned", "lowrank"):
                c = r[kind]
                cells.append(br.fmt_ms(c["median_ms"]) if "median_ms" in c else _err(c))
                cells.append(f"{f['median_ms'] / c['median_ms']:.2f}x" if "median_ms" in c and "median_ms" in f else "-")
                cells.append(f"{c['macs'] / f['macs']:.0%}" if c.get("macs") and f.get("macs") else "-")
            accs = [r[k].get("accuracy") for k in KINDS]
            cells.append(" / ".join(f"{a:.2%}" for a in accs) if all(a is not None for a in accs) else "-")
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _err(cell: dict[str, Any]) -> str:
    if "na" in cell:
        return "n/a"
    return "error: " + br._cell_text(str(cell.get("error", "?")), 50)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    br.add_common_arguments(ap, work="compressed models and bundles")
    ap.add_argument("--keep", type=float, default=0.6, help="fraction of the MACs both passes keep (default %(default)s)")
    ap.add_argument("--calib-samples", type=int, default=128, help="calibration samples (default %(default)s)")
    br.add_tuning_arguments(ap)
    args = ap.parse_args(argv)
    br.check_common_arguments(ap, args)
    if not 0.0 < args.keep <= 1.0:
        ap.error("--keep takes a fraction in (0, 1], e.g. 0.6")
    return args


def main(argv: list[str] | None = None) -> int:
    return br.report_main(argv, parse_args, run, render)


if __name__ == "__main__":
    sys.exit(main())
