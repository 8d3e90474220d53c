"""Convert the benchmark's ONNX models to float32 TFLite for LiteRT (tools/bench_runtimes.py --tflite-dir).

A maintenance tool: it runs in its own venv, never in the project venv, at run
time or in the test suite (onnx2tf pins TensorFlow, NumPy 1.26 and an older
onnxruntime, which would clash with the project's). Set it up once:

    python3 -m venv tflite-venv
    tflite-venv/bin/pip install onnx2tf==1.29.24     # pulls tensorflow 2.19, tf-keras, onnxsim, ai-edge-litert, ... (~2.6 GB)

then, from the repository root:

    tflite-venv/bin/python tools/convert_tflite.py OUT_DIR [--torchvision-dir tv-models] [--model X.onnx ...] [--models a,b]

For each model (the zoo models from models_zoo/, mobilenet_v2 and resnet18 from
``--torchvision-dir`` as tools/export_torchvision.py writes them, and every
``--model``), in its own subprocess: onnx2tf converts the ONNX file
(NCHW/NCW activations become NHWC/NWC; dynamic dimensions are pinned to 1 first) and the
float32 model is written as ``OUT_DIR/NAME.tflite``. The TFLite model is then
run in LiteRT and compared with onnxruntime on the same random input
(transposed to the TFLite layout); the result (and the ONNX file's sha256, so that the benchmark
can tell a stale conversion) goes to ``OUT_DIR/NAME.check.json``.
A model that cannot be converted, or whose outputs differ by more than 1e-3 of
max|ref|, gets ``OUT_DIR/NAME.failed.txt`` with the reason instead, which the
benchmark shows as ``n/a`` with that reason.

Needs no network: onnx2tf's sample images for its internal check are replaced by
random ones, and GELU's Erf is rewritten into builtin ops (otherwise it becomes a
Flex op the stock LiteRT cannot run). The check runs outside onnx2tf's process, where
TensorFlow is not loaded, so a model needing Flex ops fails here, not in the benchmark.
Converting all six models takes ~5-10 minutes on 2 cores (resnet18 ~3 of them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ZOO_MODELS = ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws")
TORCHVISION_MODELS = ("mobilenet_v2", "resnet18")
ZOO_DIR = Path(__file__).resolve().parents[1] / "models_zoo"
TOLERANCE = 1e-3  # of max|ref|; float32 graph rewrites stay far below this


def convert_one(onnx_path: Path, name: str, out_dir: Path) -> Path:
    """onnx2tf → OUT_DIR/NAME.tflite (float32)."""
    import numpy as np
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
        # For 3-channel image inputs onnx2tf loads sample images from the working directory and
        # downloads them when absent (no network here): give it random ones, used only for its
        # internal dummy inference.
        sample = Path(tmp, "calibration_image_sample_data_20x128x128x3_float32.npy")
        np.save(sample, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        static = pin_dynamic_dims(onnx_path, Path(tmp, "static.onnx"))
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            onnx2tf.convert(
                input_onnx_file_path=str(static),
                output_folder_path=str(Path(tmp, "out")),
                # GELU's Erf otherwise becomes a Flex (TensorFlow) op that the stock LiteRT cannot run.
                replace_to_pseudo_operators=["erf"],  # lower case: the CLI lowers its -rtpo names, the API does not
                non_verbose=True,
            )
        finally:
            os.chdir(cwd)
        produced = sorted(Path(tmp, "out").glob("*_float32.tflite"))
        if not produced:
            raise RuntimeError("onnx2tf wrote no *_float32.tflite")
        dest = out_dir / f"{name}.tflite"
        shutil.copyfile(produced[0], dest.with_suffix(".tflite.tmp"))
        os.replace(dest.with_suffix(".tflite.tmp"), dest)
    return dest


def pin_dynamic_dims(onnx_path: Path, out: Path) -> Path:
    """A copy with every dynamic input/output dimension set to 1 and shapes re-inferred.

    onnx2tf's ``batch_size=1`` alone leaves the symbolic batch in the inner shapes, and on
    torchvision's resnet18 it then loses track of the layout at a residual add.
    """
    import onnx

    model = onnx.load(str(onnx_path))
    inits = {t.name for t in model.graph.initializer}
    for vi in [*(i for i in model.graph.input if i.name not in inits), *model.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if not (d.HasField("dim_value") and d.dim_value > 0):
                d.Clear()
                d.dim_value = 1
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model), str(out))
    return out


def _to_layout(x, shape):
    """``x`` in the TFLite tensor's layout: as is, or channels moved last (NCHW → NHWC, NCW → NWC)."""
    import numpy as np

    if tuple(x.shape) == tuple(shape):
        return x
    perm = (0, *range(2, x.ndim), 1)
    if tuple(x.shape[i] for i in perm) == tuple(shape):
        return np.ascontiguousarray(x.transpose(perm))
    raise RuntimeError(f"cannot map ONNX shape {tuple(x.shape)} to TFLite shape {tuple(shape)}")


def check(onnx_path: Path, tflite_path: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    refs = sess.run(None, feeds)
    interp = Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != len(feeds) or len(outs) != len(refs):
        raise RuntimeError(f"TFLite model has {len(ins)} inputs/{len(outs)} outputs, ONNX {len(feeds)}/{len(refs)}")
    # onnx2tf keeps the ONNX input order; match by position.
    for d, x in zip(ins, feeds.values(), strict=True):
        interp.set_tensor(d["index"], _to_layout(x, d["shape"]).astype(d["dtype"]))
    interp.invoke()
    worst = 0.0
    for d, ref in zip(outs, refs, strict=True):
        got = interp.get_tensor(d["index"])
        if got.shape != ref.shape:
            got = got.transpose((0, got.ndim - 1, *range(1, got.ndim - 1))) if got.ndim > 2 else got
        if got.shape != ref.shape:
            raise RuntimeError(f"output shape {got.shape} vs ONNX {ref.shape}")
        scale = float(np.max(np.abs(ref))) or 1.0
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - ref))) / scale)
    return {"max_err_over_max_ref": worst, "inputs": [[int(s) for s in d["shape"]] for d in ins]}


def models(names: list[str] | None, torchvision_dir: Path | None, extra: list[Path]) -> list[tuple[str, Path | None, str]]:
    found = [(n, ZOO_DIR / n / "model.onnx", "") for n in ZOO_MODELS]
    for n in TORCHVISION_MODELS:
        p = torchvision_dir / f"{n}.onnx" if torchvision_dir else None
        found.append((n, p, "" if p else "no --torchvision-dir"))
    found += [(p.stem, p, "") for p in extra]
    if names:
        found = [m for m in found if m[0] in names]
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        # Child mode: one conversion, its result as the last stdout line.
        name, onnx_path, out_dir = argv[1], Path(argv[2]).resolve(), Path(argv[3]).resolve()
        print("CONVERT " + json.dumps(str(convert_one(onnx_path, name, out_dir))), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--torchvision-dir", type=Path, metavar="DIR", help="folder with mobilenet_v2.onnx and resnet18.onnx")
    ap.add_argument("--model", type=Path, action="append", default=[], metavar="PATH", help="an extra .onnx model (repeatable)")
    ap.add_argument("--models", type=lambda s: [x for x in s.split(",") if x], help="comma list of names to convert (default: all)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per model")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ok = 0
    todo = models(args.models, args.torchvision_dir, args.model)
    for name, path, why in todo:
        for stale in (f"{name}.tflite", f"{name}.failed.txt", f"{name}.check.json"):
            (args.out_dir / stale).unlink(missing_ok=True)
        if path is None or not path.is_file():
            print(f"SKIP {name}: {why or f'{path} not found'}", flush=True)
            continue
        try:
            proc = subprocess.run([sys.executable, __file__, "--one", name, str(path), str(args.out_dir)],
                                  capture_output=True, text=True, timeout=args.timeout, check=False)
            line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("CONVERT ")), None)
            if line is None:
                tail = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
                raise RuntimeError(tail[-1] if tail else f"exit code {proc.returncode}")
            # Checked here, where TensorFlow is not loaded: in onnx2tf's process LiteRT would
            # also run Flex (TensorFlow) ops that the stock runtime rejects.
            try:
                res = check(path, Path(json.loads(line[len("CONVERT "):])))
            except Exception as exc:  # noqa: BLE001 - LiteRT/onnxruntime raise their own types
                raise RuntimeError(f"the converted model does not run in LiteRT: {' '.join(str(exc).split())[:300]}") from None
            if res["max_err_over_max_ref"] > TOLERANCE:
                raise RuntimeError(f"TFLite outputs differ from onnxruntime: max|err|/max|ref| {res['max_err_over_max_ref']:.2e}")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            reason = f"onnx2tf: {exc}" if isinstance(exc, RuntimeError) else f"onnx2tf timed out after {args.timeout:.0f} s"
            (args.out_dir / f"{name}.tflite").unlink(missing_ok=True)
            (args.out_dir / f"{name}.failed.txt").write_text(reason + "\n")
            print(f"FAIL {name}: {reason}", flush=True)
            continue
        # The benchmark refuses a conversion whose ONNX source has changed since.
        res["source_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        (args.out_dir / f"{name}.check.json").write_text(json.dumps(res, indent=1) + "\n")
        print(f"OK   {name}: max|err|/max|ref| {res['max_err_over_max_ref']:.1e}, TFLite inputs {res['inputs']}", flush=True)
        ok += 1
    print(f"{ok}/{len(todo)} converted to {args.out_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
