"""Export torchvision ImageNet-class CNNs (random weights) to ONNX.

Used to check that edgert's TVM path compiles and runs real CNN
architectures nobody in the project wrote (see tools/check_real_cnns.py).

Needs (in a throwaway venv, NOT the project's venv):
    python3 -m venv tv-venv
    tv-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 onnx
(onnxscript is only needed if the legacy exporter fails and the dynamo
exporter is tried as a fallback.)

Usage:
    tv-venv/bin/python tools/export_torchvision.py OUT_DIR [ARCH ...]

Each model is built with ``weights=None`` (no downloads), after
``torch.manual_seed(0)``, in eval mode, and exported the way users usually
export: input ``input`` of shape 1x3x224x224 with a dynamic batch dimension
named ``batch``, output ``output``, opset 17, the legacy TorchScript
exporter (``dynamo=False``); the dynamo exporter is tried only when the
legacy one raises. Architectures that fail to export are skipped with the
reason printed. Exit status is 0 if at least one model was exported.

``--calibrate-bn N`` (default 0: off) re-estimates every BatchNorm's running
mean/variance from N batches of random N(0,1) inputs (train mode, cumulative
average) before switching to eval mode. The weights stay random; only the BN
statistics change. Without it many default-initialised nets (eval-mode BN with
mean 0 / var 1) let the signal vanish: mobilenet_v2's logits are ~1e-9,
efficientnet_b0's ~1e-14 and googlenet's output is just the FC bias, which
makes a numerical comparison against onnxruntime weak. With it the activations
have trained-like scales at every layer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

DEFAULT_ARCHS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "densenet121",
    "googlenet",
    "regnet_y_400mf",
    "mnasnet0_5",
    "convnext_tiny",
    "vgg11",
]

OPSET = 17


def build(arch: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"weights": None}
    if arch == "googlenet":
        # With weights=None googlenet defaults to aux_logits=True and
        # init_weights=True; aux heads are not used in eval mode anyway.
        kwargs.update(aux_logits=False, init_weights=True)
    if arch.startswith("inception"):
        kwargs.update(aux_logits=False, init_weights=True)
    model = torchvision.models.get_model(arch, **kwargs)
    model.eval()
    return model


def calibrate_bn(model, steps: int, batch: int = 8) -> None:
    """Re-estimate BatchNorm running statistics on random inputs (weights untouched)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or steps <= 0:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    gen = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(batch, 3, 224, 224, generator=gen))
    model.eval()


def export_one(arch: str, out_dir: str, bn_steps: int = 0, opset: int = OPSET) -> str:
    import torch

    model = build(arch)
    calibrate_bn(model, bn_steps)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = os.path.join(out_dir, f"{arch}.onnx")
    tmp = path + ".tmp"
    dyn = {"input": {0: "batch"}, "output": {0: "batch"}}
    with torch.no_grad():
        try:
            torch.onnx.export(
                model,
                (x,),
                tmp,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes=dyn,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
            how = "torchscript"
        except Exception as e:  # noqa: BLE001 - report and try dynamo
            print(f"  {arch}: legacy exporter failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}; trying dynamo", flush=True)
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(
                model,
                (x,),
                tmp,
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes={"x": {0: batch}},
                opset_version=max(opset, 18),  # the dynamo exporter starts at 18
                dynamo=True,
                external_data=False,
            )
            how = "dynamo"
    import onnx

    m = onnx.load(tmp)
    onnx.checker.check_model(m)
    os.replace(tmp, path)
    return how


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("archs", nargs="*", default=DEFAULT_ARCHS)
    ap.add_argument("--opset", type=int, default=OPSET, help="ONNX opset of the legacy exporter")
    ap.add_argument("--calibrate-bn", type=int, default=0, metavar="N", help="re-estimate BatchNorm statistics from N random batches")
    args = ap.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ok = 0
    for arch in args.archs:
        t0 = time.perf_counter()
        try:
            how = export_one(arch, args.out_dir, args.calibrate_bn, args.opset)
        except Exception as e:  # noqa: BLE001 - skip and say why
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"SKIP {arch}: {type(e).__name__}: {first}", flush=True)
            if os.environ.get("EXPORT_DEBUG"):
                traceback.print_exc()
            continue
        size = os.path.getsize(os.path.join(args.out_dir, f"{arch}.onnx"))
        print(f"OK   {arch}: {how}, {size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s", flush=True)
        ok += 1
    print(f"{ok}/{len(args.archs)} exported to {args.out_dir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
