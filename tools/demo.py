"""The main job on a bundled model: compile for a Raspberry Pi 4, run it under qemu, check it.

Run with `make demo`. Prints the size of each bundle part and how closely
the emulated aarch64 outputs agree with onnxruntime.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "mobilenetv2_mini.onnx"


def main() -> int:
    import edgert
    from edgert.device.local import open_device
    from edgert.runtime import session

    with tempfile.TemporaryDirectory(prefix="edgert-demo-") as tmp:
        out = Path(tmp) / "mobilenetv2_mini.rpi4.edgert"
        t0 = time.perf_counter()
        bundle = edgert.compile(MODEL, target="rpi4", output=out)
        compile_s = time.perf_counter() - t0
        print(f"\nedgert demo: {MODEL.name} -> {bundle.target['name']} ({bundle.arch}) in {compile_s:.1f} s")
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
    print("\nNext: edgert compile YOUR.onnx --target rpi4 -o model.edgert && edgert run model.edgert --device qemu --check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
