"""The main job on a zoo model: compile for a Raspberry Pi 4, run it under qemu, check it.

Run with `make demo`. Prints the size of each bundle part, how closely the
emulated aarch64 outputs agree with onnxruntime, and the bundle's accuracy on
validation samples next to the float model's.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ZOO_MODEL = "mobilenetv2_digits"
ACCURACY_SAMPLES = 40  # one emulated run each


def main() -> int:
    import edgert
    from edgert.device import open_device
    from edgert.runtime import session
    from edgert.zoo import evaluate, get

    zoo = get(ZOO_MODEL)

    with tempfile.TemporaryDirectory(prefix="edgert-demo-") as tmp:
        out = Path(tmp) / f"{ZOO_MODEL}.rpi4.edgert"
        t0 = time.perf_counter()
        bundle = edgert.compile(zoo.onnx_path, target="rpi4", output=out)
        compile_s = time.perf_counter() - t0
        print(f"\nedgert demo: {ZOO_MODEL} ({zoo.task}) -> {bundle.target['name']} ({bundle.arch}) in {compile_s:.1f} s")
        print(f"  inputs : {', '.join(f'{s.name} {tuple(s.shape)} {s.dtype}' for s in bundle.inputs)}")
        print(f"  outputs: {', '.join(f'{s.name} {tuple(s.shape)} {s.dtype}' for s in bundle.outputs)}")
        print("  bundle parts:")
        sizes = bundle.sizes()
        for rel, size in sizes.items():
            print(f"    {rel:<28} {size / 1024:9.1f} KiB")
        print(f"    {'total':<28} {sum(sizes.values()) / 1024:9.1f} KiB")

        result = session.run_on_device(bundle, open_device("qemu"))
        print(f"  ran under qemu-aarch64: load {result.load_ms:.0f} ms, inference {result.run_ms[0]:.0f} ms (emulated, not device speed)")
        for a in session.check(result.outputs, bundle):
            print(f"  {a.name}: max|err| {a.max_abs_err:.2e} = {a.ratio:.1e} of max|ref| "
                  f"vs {bundle.manifest['golden']['reference']} -> {'OK' if a.ok else 'MISMATCH'}")
        ev = evaluate(ZOO_MODEL, bundle, device="qemu", limit=ACCURACY_SAMPLES)
        print(f"  accuracy under qemu on {ev.samples} validation samples: {ev.accuracy:.1%} "
              f"(agrees with the float model on {ev.agreement:.0%}; float model on the whole validation split: {zoo.float_accuracy:.1%})")
    print("\nNext: edgert compile YOUR.onnx --target rpi4 -o model.edgert && edgert run model.edgert --device qemu --check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
