"""Fuzz edgert with hostile models and inputs: every call works or raises an EdgertError.

Hypothesis strategies mutate small valid models (tests/data, the zoo, a built
shape-arithmetic model) and input files: truncated and flipped bytes, wrong
initializer sizes, dangling inputs, cycles, absurd dims (2^40 elements),
unknown ops and domains, missing or path-traversal external data, opset
absurdities, corrupt .tflite offsets, .npy files with the wrong dtype, shape,
NaN/Inf, corrupt headers or pickled objects, and broken images.

Each case runs in a worker process (``--worker``) under an address-space cap,
one entry point ("check") at a time: a crash (signal) or a hang (per-check
time limit) is recorded and the case saved, never a dead fuzzer. Outcomes per
check: ``ok``, the EdgertError class, ``other:<type>`` (a bug), ``crash``,
``timeout``. Writing checks also verify that their destination folder is
unchanged after a failure (``other:dirty-output``).

    python tools/fuzz_models.py --examples 5000 --seconds 270 [--compile 10] [--seed N] [--save DIR] [-v]
    python tools/fuzz_models.py --replay DIR/0042-onnx ...     # run saved failing cases again
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
ZOO = ROOT / "models_zoo"
HUGE = 1 << 40  # elements: nothing may try to allocate this
DEFAULT_MEM_MB = 3072  # the worker's address-space cap (TVM + onnxruntime + numba map ~1 GiB)
BAD = ("other", "crash", "timeout")  # outcome prefixes that are bugs


# ---------------------------------------------------------------- cases

@dataclass
class Case:
    """Files to write into a fresh folder, the file to open, and the entry points to try on it."""

    kind: str  # onnx | tflite | npy | image
    label: str  # how it was made (base model + mutation)
    files: dict[str, bytes]
    main: str
    checks: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _shape_model():
    """x(1,4) -> Reshape(x, s1) + ConstantOfShape(s2) -> Expand(., s3): every target shape is a mutable initializer."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("s1", [2, 2]), ("s2", [2, 2]), ("s3", [2, 2]))]
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r"]),
        helper.make_node("ConstantOfShape", ["s2"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        helper.make_node("Add", ["r", "c"], ["a"]),
        helper.make_node("Expand", ["a", "s3"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _tiny_conv():
    """One 3x3 conv + ReLU on a (1, 3, 8, 8) image: the bundle input cases are run through."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4, 8, 8))], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


_BASES: dict[str, dict[str, bytes]] = {}


def onnx_bases() -> dict[str, dict[str, bytes]]:
    """Small valid ONNX models: name -> {file: bytes}, the .onnx first."""
    if not _BASES:
        _BASES["convnet_tiny"] = {"model.onnx": _read(DATA / "convnet_tiny.onnx")}
        _BASES["digits_cnn"] = {"model.onnx": _read(ZOO / "digits_cnn" / "model.onnx")}
        _BASES["unsupported_ops"] = {"model.onnx": _read(DATA / "unsupported_ops.onnx")}
        # Its external data file keeps the name the model records.
        _BASES["convnet_extdata"] = {"model.onnx": _read(DATA / "convnet_extdata.onnx"),
                                     "convnet_extdata.onnx.data": _read(DATA / "convnet_extdata.onnx.data")}
        _BASES["shape_ops"] = {"model.onnx": _shape_model().SerializeToString()}
    return _BASES


def tflite_bases() -> dict[str, bytes]:
    return {"convnet_tiny": _read(DATA / "convnet_tiny.tflite"), "convnet_dynbatch": _read(DATA / "convnet_dynbatch.tflite")}


# ---------------------------------------------------------------- mutations

MUTATIONS = ("none", "init_size", "init_dims", "dangling", "cycle", "input_dims", "shape_target", "unknown_op",
             "unknown_domain", "external", "opset", "ir_version", "attr", "elem_type", "drop_output", "dup_output")
# Mutations that leave a model loadable often enough to reach the compiler.
MILD_MUTATIONS = ("none", "attr", "shape_target", "opset", "ir_version", "input_dims")


def _onnx_mutation(draw, proto, name: str, files: dict[str, bytes], kinds=MUTATIONS) -> str:
    """Apply one drawn structural mutation to ``proto`` in place; returns its description."""
    from hypothesis import strategies as st
    from onnx import TensorProto

    g = proto.graph
    kind = draw(st.sampled_from(kinds))
    node = draw(st.integers(0, max(len(g.node) - 1, 0)))
    inits = list(g.initializer)
    if kind == "init_size" and inits:
        t = g.initializer[draw(st.integers(0, len(inits) - 1))]
        raw = t.raw_data or _float_bytes(t)
        cut = draw(st.integers(0, len(raw) + 16))
        t.ClearField("float_data")
        t.ClearField("int64_data")
        t.raw_data = raw[:cut] + b"\0" * max(cut - len(raw), 0)
        return f"{kind}:{t.name}:{cut}/{len(raw)}"
    if kind == "init_dims" and inits:
        t = g.initializer[draw(st.integers(0, len(inits) - 1))]
        dims = draw(st.sampled_from([[HUGE], [1 << 20, 1 << 20], [0], [-1, 4], [1 << 62, 4], []]))
        del t.dims[:]
        t.dims.extend(dims)
        return f"{kind}:{t.name}:{dims}"
    if kind == "dangling" and g.node:
        n = g.node[node]
        if n.input:
            n.input[draw(st.integers(0, len(n.input) - 1))] = "no_such_tensor"
        return f"{kind}:{n.op_type}"
    if kind == "cycle" and len(g.node) > 1:
        later = draw(st.integers(node, len(g.node) - 1))
        n = g.node[node]
        if n.input:
            n.input[0] = g.node[later].output[0]
        return f"{kind}:{node}<-{later}"
    if kind == "input_dims":
        inp = g.input[0].type.tensor_type.shape
        dims = draw(st.sampled_from([[1, HUGE], [1 << 20, 1 << 20, 1 << 20], [0, 3, 32, 32], [-5], [1, 3, 1 << 31, 1 << 31]]))
        del inp.dim[:]
        for d in dims:
            inp.dim.add().dim_value = d
        return f"{kind}:{dims}"
    if kind == "shape_target":
        targets = [t for t in g.initializer if t.data_type == TensorProto.INT64]
        if targets:
            import numpy as np
            from onnx import numpy_helper

            t = targets[draw(st.integers(0, len(targets) - 1))]
            value = draw(st.sampled_from([[HUGE], [1 << 20, 1 << 20], [1 << 62, 1 << 62], [-3, 7], [0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9]]))
            t.CopyFrom(numpy_helper.from_array(np.array(value, np.int64), t.name))
            return f"{kind}:{t.name}={value}"
    if kind == "unknown_op" and g.node:
        g.node[node].op_type = draw(st.sampled_from(["FooBar", "", "conv", "Loop", "If"]))
        return f"{kind}:{g.node[node].op_type}"
    if kind == "unknown_domain" and g.node:
        g.node[node].domain = draw(st.sampled_from(["com.evil", "ai.onnx.ml", "com.microsoft"]))
        return f"{kind}:{g.node[node].domain}"
    if kind == "external" and inits:
        t = g.initializer[draw(st.integers(0, len(inits) - 1))]
        loc = draw(st.sampled_from(["../../etc/passwd", "/etc/passwd", "missing.bin", "sub/../../outside.bin",
                                    "data.bin", "data.bin", "", "./data.bin"]))
        offset = draw(st.sampled_from([0, 0, 3, 1 << 40, -1]))
        length = draw(st.sampled_from([None, 0, 7, 1 << 40]))
        files["data.bin"] = b"\x01" * 64
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key, value in (("location", loc), ("offset", offset), ("length", length)):
            if value is not None:
                e = t.external_data.add()
                e.key, e.value = key, str(value)
        return f"{kind}:{t.name}:{loc}@{offset}+{length}"
    if kind == "opset":
        del proto.opset_import[:]
        for domain, version in draw(st.sampled_from([[("", 0)], [("", 1)], [("", 6)], [("", 99)], [("", 1 << 40)],
                                                    [("", -1)], [], [("", 17), ("", 11)], [("com.evil", 1)]])):
            o = proto.opset_import.add()
            o.domain, o.version = domain, version
        return f"{kind}:{[(o.domain, o.version) for o in proto.opset_import]}"
    if kind == "ir_version":
        proto.ir_version = draw(st.sampled_from([0, 1, 3, 99, 1 << 40]))
        return f"{kind}:{proto.ir_version}"
    if kind == "attr" and g.node:
        n = g.node[node]
        if n.attribute:
            a = n.attribute[draw(st.integers(0, len(n.attribute) - 1))]
            value = draw(st.sampled_from([0, -1, 1 << 31, HUGE]))
            if a.ints:
                a.ints[draw(st.integers(0, len(a.ints) - 1))] = value
            elif a.type == a.INT:
                a.i = value
            elif a.type == a.FLOAT:
                a.f = value = draw(st.sampled_from([float("nan"), float("inf"), -1.0, 0.0]))
            else:
                n.attribute.remove(a)
            return f"{kind}:{n.op_type}.{a.name}={value}"
        return "attr:none"
    if kind == "elem_type":
        g.input[0].type.tensor_type.elem_type = draw(st.sampled_from([0, 8, 16, 999, TensorProto.INT64]))
        return f"{kind}:{g.input[0].type.tensor_type.elem_type}"
    if kind == "drop_output":
        del g.output[:]
        return kind
    if kind == "dup_output" and g.node:
        g.node[node].output.append(g.node[0].output[0])
        return kind
    return "none"


def _float_bytes(t) -> bytes:
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(t).tobytes()
    except Exception:  # noqa: BLE001 - a previous mutation may have broken it; any bytes will do
        return b""


def _byte_mutation(draw, data: bytes) -> tuple[bytes, str]:
    """Truncate, flip bytes, or overwrite an aligned 32-bit word (an offset, length or index) with an absurd value."""
    from hypothesis import strategies as st

    kind = draw(st.sampled_from(["none", "truncate", "flip", "word"]))
    if kind == "truncate":
        cut = draw(st.integers(0, len(data)))
        return data[:cut], f"truncate:{cut}/{len(data)}"
    buf = bytearray(data)
    if kind == "flip":
        spots = draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=8))
        for i in spots:
            buf[i] ^= draw(st.integers(1, 255))
        return bytes(buf), f"flip:{sorted(spots)[:4]}"
    if kind == "word":
        at = draw(st.integers(0, len(buf) // 4 - 1)) * 4
        value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(buf), len(buf) + 4, 0x80000000]))
        buf[at:at + 4] = value.to_bytes(4, "little")
        return bytes(buf), f"word:{at}={value:#x}"
    return data, "none"


# ---------------------------------------------------------------- strategies

ONNX_CHECKS = ("load", "host", "compress", "cli_host")


def onnx_cases(checks: tuple[str, ...] = ONNX_CHECKS, mild: bool = False):
    """ONNX models: one structural mutation, then maybe a byte-level one on the serialised file
    (``mild``: only mutations that often still load, and no byte damage)."""
    import onnx
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        bases = onnx_bases()
        name = draw(st.sampled_from(sorted(bases)))
        files = dict(bases[name])
        proto = onnx.ModelProto.FromString(files["model.onnx"])
        what = _onnx_mutation(draw, proto, name, files, MILD_MUTATIONS if mild else MUTATIONS)
        # Byte-level damage on a quarter of the cases: most of it stops at the parser.
        data = proto.SerializeToString()
        data, how = _byte_mutation(draw, data) if not mild and draw(st.integers(0, 3)) == 0 else (data, "none")
        files["model.onnx"] = data
        extra = {"compress": draw(st.sampled_from(["quantize", "prune", "lowrank"]))}
        return Case("onnx", f"{name} {what} {how}", files, "model.onnx", checks, extra)

    return build()


def tflite_cases():
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        bases = tflite_bases()
        name = draw(st.sampled_from(sorted(bases)))
        data, how = _byte_mutation(draw, bases[name])
        return Case("tflite", f"{name} {how}", {"model.tflite": data}, "model.tflite", ("load", "tflite_relax"))

    return build()


# The spec every input case is checked against (the tiny bundle's input: conftest's two-output conv).
INPUT_SHAPE = (1, 3, 8, 8)


def _npy_bytes(arr) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def input_cases(checks: tuple[str, ...] = ("input_load", "cli_bundle")):
    import numpy as np
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        rng = np.random.default_rng(draw(st.integers(0, 1000)))
        good = rng.random(INPUT_SHAPE, dtype=np.float32)
        kind = draw(st.sampled_from(["npy", "npy", "image"]))
        if kind == "image":
            return _image_case(draw, rng, checks)
        what = draw(st.sampled_from(["good", "dtype", "shape", "nan", "inf", "header", "truncate", "pickle",
                                     "huge_header", "fortran", "bigendian", "empty", "npz", "text"]))
        if what == "dtype":
            dt = draw(st.sampled_from(["float64", "int64", "int8", "bool", "complex64", "<U3", "f4,i4", "float16"]))
            arr = good.astype(dt) if dt != "f4,i4" else np.zeros(INPUT_SHAPE, dtype=dt)
            data = _npy_bytes(arr)
        elif what == "shape":
            data = _npy_bytes(rng.random(draw(st.sampled_from([(1, 3, 8), (3, 8, 8), (), (1, 3, 8, 9), (0, 3, 8, 8)])),
                                         dtype=np.float32))
        elif what in ("nan", "inf"):
            arr = good.copy()
            arr.flat[draw(st.integers(0, arr.size - 1))] = np.nan if what == "nan" else -np.inf
            data = _npy_bytes(arr)
        elif what == "pickle":
            data = _npy_bytes(np.array([{"a": 1}, None], dtype=object))
        elif what == "huge_header":
            # A header that promises 2^40 elements over 768 bytes of data: nothing may allocate them.
            data = _npy_bytes(good).replace(b"(1, 3, 8, 8)", f"({HUGE}, 3, 8, 8)".encode())
        elif what == "fortran":
            data = _npy_bytes(np.asfortranarray(good))
        elif what == "bigendian":
            data = _npy_bytes(good.astype(">f4"))
        elif what == "empty":
            data = b""
        elif what == "npz":
            import io

            buf = io.BytesIO()
            np.savez(buf, input=good)
            data = buf.getvalue()
        elif what == "text":
            data = b"1 2 3\n"
        else:
            data = _npy_bytes(good)
        if what in ("header", "truncate"):
            if what == "header":
                buf = bytearray(data)
                for i in draw(st.lists(st.integers(0, 127), min_size=1, max_size=4)):
                    buf[i] ^= draw(st.integers(1, 255))
                data = bytes(buf)
            else:
                data = data[:draw(st.integers(0, len(data) - 1))]
        return Case("npy", f"npy {what}", {"x.npy": data}, "x.npy", checks)

    return build()


def _image_case(draw, rng, checks) -> Case:
    import io

    from hypothesis import strategies as st
    from PIL import Image

    fmt = draw(st.sampled_from(["PNG", "JPEG", "BMP"]))
    size = draw(st.sampled_from([(8, 8), (31, 17), (1, 1)]))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype="uint8")).save(buf, fmt)
    data = buf.getvalue()
    what = draw(st.sampled_from(["good", "truncate", "flip", "not_image", "empty", "bomb"]))
    if what == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif what == "flip":
        data, _ = _byte_mutation(draw, data)
    elif what == "not_image":
        data = b"#!/bin/sh\necho not an image\n"
    elif what == "empty":
        data = b""
    elif what == "bomb":
        # A PNG whose header claims 2^16 x 2^16 pixels (decompression bomb): refused, not decoded.
        data = _png_header(1 << 16, 1 << 16)
        fmt = "PNG"
    suffix = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}[fmt]
    return Case("image", f"image {fmt} {what}", {f"x{suffix}": data}, f"x{suffix}", checks)


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- worker (runs the entry points)

class _Skip(Exception):
    """The check does not apply to this case (e.g. compress on a model that does not load)."""


def _snapshot(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


class _Worker:
    """Entry points on one case folder; state (a loaded model, the tiny bundle) is kept between checks."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.model = None
        self._bundle: Path | None = None

    def bundle(self) -> Path:
        if self._bundle is None:
            import edgert
            from edgert.compiler.build import CompileOptions

            (self.scratch / "tiny.onnx").write_bytes(_tiny_conv().SerializeToString())
            self._bundle = edgert.compile(self.scratch / "tiny.onnx", target="host", output=self.scratch / "tiny.edgert",
                                          options=CompileOptions(schedules="naive"), log=lambda *_: None).path
        return self._bundle

    def run(self, check: str, folder: Path, case: dict[str, Any]) -> None:
        getattr(self, f"check_{check}")(folder / case["main"], folder, case)

    # ONNX / TFLite
    def check_load(self, path: Path, folder: Path, case) -> None:
        from edgert.model import load

        self.model = None
        self.model = load(path)

    def check_host(self, path: Path, folder: Path, case) -> None:
        from edgert.host.run import HostRunConfig, run_host

        run_host(HostRunConfig(model=path, threads=1))

    def check_compress(self, path: Path, folder: Path, case) -> None:
        import numpy as np

        if self.model is None:
            raise _Skip
        calib = folder / "calib.npz"
        samples = [self.model.random_inputs(seed) for seed in range(2)]
        np.savez(calib, **{s.name: np.stack([f[s.name] for f in samples]) for s in self.model.inputs})
        how = case["extra"].get("compress", "quantize")
        if how == "quantize":
            from edgert.compress.quantize import parse_spec, quantize

            quantize(self.model, parse_spec("int8"), str(calib))
        elif how == "prune":
            from edgert.compress.prune import parse_spec, prune

            prune(self.model, parse_spec("structured:keep=0.6"), str(calib))
        else:
            from edgert.compress.lowrank import lowrank, parse_spec

            lowrank(self.model, parse_spec("keep=0.6"), str(calib))

    def check_compile(self, path: Path, folder: Path, case) -> None:
        import edgert
        from edgert.compiler.build import CompileOptions

        if self.model is None:
            raise _Skip
        out = folder / "out"
        out.mkdir(exist_ok=True)
        before = _snapshot(out)
        try:
            edgert.compile(self.model, target="host", output=out / "m.edgert", options=CompileOptions(schedules="naive"),
                           log=lambda *_: None)
        except BaseException:
            _require_unchanged(out, before)
            raise

    def check_tflite_relax(self, path: Path, folder: Path, case) -> None:
        from edgert import tflite

        if self.model is None:
            raise _Skip
        tflite.to_relax(self.model)

    def check_cli_host(self, path: Path, folder: Path, case) -> None:
        out = folder / "out"
        out.mkdir(exist_ok=True)
        _cli(["run", str(path), "--backend", "host", "--threads", "1", "--output-dir", str(out)], out)

    # The harness's own test: what a segfault, a hang and a huge allocation look like to the driver.
    def check_selftest_crash(self, path: Path, folder: Path, case) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    def check_selftest_hang(self, path: Path, folder: Path, case) -> None:
        time.sleep(3600)

    def check_selftest_dirty(self, path: Path, folder: Path, case) -> None:
        out = folder / "out"
        out.mkdir(exist_ok=True)
        before = _snapshot(out)
        (out / "half.npy").write_bytes(b"\x93NUMPY")  # what a failed write must never leave
        _require_unchanged(out, before)

    def check_selftest_alloc(self, path: Path, folder: Path, case) -> None:
        import numpy as np

        np.ones(1 << 33, np.float32)  # 32 GiB, touched: must hit the address-space cap

    # inputs
    def check_input_load(self, path: Path, folder: Path, case) -> None:
        from edgert.compiler.build import ImageConfig
        from edgert.model import TensorSpec
        from edgert.runtime.inputs import load_input

        spec = TensorSpec("input", INPUT_SHAPE, "float32")
        load_input(path, spec, ImageConfig().for_input(spec))

    def check_cli_bundle(self, path: Path, folder: Path, case) -> None:
        out = folder / "out"
        out.mkdir(exist_ok=True)
        _cli(["run", case.get("bundle") or str(self.bundle()), "--input", f"input={path}", "--output-dir", str(out)], out)


class _CliExit(Exception):
    """A CLI call that failed cleanly: one 'error:' line and an EdgertError exit code."""

    def __init__(self, code: int, line: str):
        super().__init__(line)
        self.code = code


class _CliBug(Exception):
    """A CLI call that failed with a traceback, an unexpected exception or a multi-line message."""


class _DirtyOutput(Exception):
    """A failed call changed its destination folder."""


def _require_unchanged(folder: Path, before: dict[str, str]) -> None:
    after = _snapshot(folder)
    if after != before:
        raise _DirtyOutput(f"{folder.name} changed: {sorted(set(after.items()) ^ set(before.items()))[:3]}")


def _cli(args: list[str], out: Path) -> None:
    from click.testing import CliRunner

    from edgert.cli import main

    (out / "keep.txt").write_text("untouched\n")
    before = _snapshot(out)
    result = CliRunner().invoke(main, args, env={"EDGERT_DEBUG": ""})
    if result.exit_code == 0:
        return
    _require_unchanged(out, before)
    if not isinstance(result.exception, SystemExit):
        exc = result.exception
        raise _CliBug(f"{type(exc).__name__}: {exc}")
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if len(errors) != 1 or "Traceback" in result.output or len(errors[0]) < 20:
        raise _CliBug(f"exit {result.exit_code} without one clear error line: {result.output[-300:]!r}")
    raise _CliExit(result.exit_code, errors[0])


def _outcome(exc: BaseException | None) -> tuple[str, str]:
    from edgert.errors import EdgertError

    if exc is None:
        return "ok", ""
    if isinstance(exc, _Skip):
        return "skip", ""
    if isinstance(exc, _CliExit):
        return f"exit {exc.code}", str(exc)
    if isinstance(exc, _DirtyOutput):
        return "other:dirty-output", str(exc)
    if isinstance(exc, _CliBug):
        return "other:cli", str(exc)
    if isinstance(exc, EdgertError):
        message = str(exc)
        if not message.strip():
            return f"other:empty-message:{type(exc).__name__}", ""
        return type(exc).__name__, message.splitlines()[0]
    import traceback

    return f"other:{type(exc).__name__}", "".join(traceback.format_exception(exc))[-2000:]


def worker_main(mem_mb: int) -> None:
    """Read one case per stdin line (JSON), answer JSON lines on the original stdout; library prints go to stderr."""
    import faulthandler
    import resource

    faulthandler.enable()  # a crash prints the Python stack into the worker log
    faulthandler.register(signal.SIGUSR1)  # the parent asks for the stack of a hang
    limit = mem_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    scratch = Path(tempfile.mkdtemp(prefix="worker-", dir=Path.cwd()))  # inside the parent's folder: removed with it
    worker = _Worker(scratch)
    try:
        for line in sys.stdin:
            case = json.loads(line)
            folder = Path(case["dir"])
            worker.model = None
            for check in case["checks"]:
                print(json.dumps({"start": check}), file=proto)
                try:
                    worker.run(check, folder, case)
                    outcome, message = _outcome(None)
                except BaseException as exc:  # noqa: BLE001 - classifying every outcome is the point
                    outcome, message = _outcome(exc)
                print(json.dumps({"check": check, "outcome": outcome, "message": message}), file=proto)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(json.dumps({"done": True, "max_rss_kb": rss}), file=proto)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- driver (parent side)

@dataclass
class Result:
    label: str
    outcomes: dict[str, str]  # check -> outcome
    messages: dict[str, str]
    saved: Path | None = None

    @property
    def bad(self) -> dict[str, str]:
        return {c: o for c, o in self.outcomes.items() if o.startswith(BAD)}


class Fuzzer:
    """Runs cases in a worker process (restarted after a crash or hang) and keeps the counts."""

    def __init__(self, save_dir: Path, mem_mb: int = DEFAULT_MEM_MB, check_timeout: float = 120.0,
                 verbose: bool = False, bundle: Path | None = None):
        self.save_dir = Path(save_dir)
        self.bundle = bundle  # for 'cli_bundle': a compiled bundle with one (1, 3, 8, 8) float input named "input"
        self.verbose = verbose
        self.mem_mb = mem_mb
        self.check_timeout = check_timeout
        self.counts: dict[str, Counter] = {}
        self.tried = 0
        self.failures: list[Result] = []
        self.examples: dict[tuple[str, str], str] = {}  # (check, outcome) -> first message
        self.max_rss_kb = 0
        self._proc: subprocess.Popen | None = None
        self._stderr = None  # the worker's log file
        self._work = Path(tempfile.mkdtemp(prefix="edgert-fuzz-"))

    def __enter__(self) -> Fuzzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop()
        if self._stderr is not None:
            self._stderr.close()
        shutil.rmtree(self._work, ignore_errors=True)

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            if self._stderr is not None:
                self._stderr.close()
            self._stderr = open(self._work / "worker.log", "ab")  # noqa: SIM115 - lives as long as the worker
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--worker", "--mem-mb", str(self.mem_mb)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=self._work,
                start_new_session=True,
            )
            self._buf = b""
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            self._proc = None

    def _log_tail(self) -> str:
        self._stderr.flush()
        return (self._work / "worker.log").read_bytes()[-3000:].decode(errors="replace")

    def _readline(self, proc: subprocess.Popen, timeout: float) -> dict | None:
        """One answer line; None on EOF (the worker died). Raises TimeoutError.

        Reads the pipe with os.read into our own buffer: a buffered readline could swallow the
        next line, which select() would then never report."""
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def run(self, case: Case) -> Result:
        folder = Path(tempfile.mkdtemp(prefix="case-", dir=self._work))
        for name, data in case.files.items():
            (folder / name).write_bytes(data)
        proc = self._start()
        msg = {"dir": str(folder), "main": case.main, "checks": list(case.checks), "extra": case.extra,
               "bundle": str(self.bundle) if self.bundle else None}
        result = Result(case.label, {}, {})
        current = None
        started = time.monotonic()
        try:
            proc.stdin.write((json.dumps(msg) + "\n").encode())
            proc.stdin.flush()
            while True:
                answer = self._readline(proc, self.check_timeout)
                if answer is None:
                    code = proc.wait()
                    result.outcomes[current or "?"] = f"crash:{-code if code < 0 else code}"
                    self._proc = None
                    break
                if "start" in answer:
                    current = answer["start"]
                elif "check" in answer:
                    result.outcomes[answer["check"]] = answer["outcome"]
                    result.messages[answer["check"]] = answer["message"]
                    current = None
                else:
                    self.max_rss_kb = max(self.max_rss_kb, answer["max_rss_kb"])
                    break
        except TimeoutError:
            result.outcomes[current or "?"] = "timeout"
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(1.0)
            self._stop()
        except BrokenPipeError:
            result.outcomes[current or "?"] = f"crash:{proc.wait()}"
            self._proc = None
        for check, outcome in result.outcomes.items():
            if outcome.startswith(("crash", "timeout")):
                result.messages[check] = self._log_tail()
        self.tried += 1
        if self.verbose:
            print(f"{self.tried:4d} {time.monotonic() - started:6.1f}s {case.label}: {result.outcomes}", file=sys.stderr)
        for check, outcome in result.outcomes.items():
            if outcome == "skip":
                continue
            self.counts.setdefault(check, Counter())[outcome] += 1
            self.examples.setdefault((check, outcome), result.messages.get(check, ""))
        if result.bad:
            result.saved = self.save_dir / f"{self.tried:04d}-{case.kind}"
            shutil.copytree(folder, result.saved, dirs_exist_ok=True)
            (result.saved / "case.json").write_text(json.dumps(
                {"label": case.label, "outcomes": result.outcomes, "messages": result.messages, **msg}, indent=1))
            self.failures.append(result)
        shutil.rmtree(folder, ignore_errors=True)
        return result

    def table(self) -> str:
        """Inputs tried and outcome counts per entry point (errors by class)."""
        lines = [f"{self.tried} inputs tried; worker peak RSS {self.max_rss_kb / 1024:.0f} MiB "
                 f"(address-space cap {self.mem_mb} MiB)"]
        lines.append(f"{'check':<14}{'tried':>6}{'ok':>6}{'other':>7}{'crash':>7}{'timeout':>9}  errors by class")
        for check in sorted(self.counts):
            c = self.counts[check]
            other = sum(n for o, n in c.items() if o.startswith("other"))
            crash = sum(n for o, n in c.items() if o.startswith("crash"))
            errors = ", ".join(f"{o} {n}" for o, n in sorted(c.items()) if not o.startswith(BAD) and o != "ok")
            lines.append(f"{check:<14}{sum(c.values()):>6}{c['ok']:>6}{other:>7}{crash:>7}{c['timeout']:>9}  {errors}")
        for r in self.failures:
            lines.append(f"FAILED {r.label}: {r.bad} (saved in {r.saved})")
            for check in r.bad:
                lines.append("    " + (r.messages.get(check) or "").strip().replace("\n", "\n    ")[-1500:])
        return "\n".join(lines)


def load_case(folder: Path) -> Case:
    """A case saved by ``Fuzzer.run`` (its files and case.json), to run again."""
    meta = json.loads((folder / "case.json").read_text())
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "case.json"}
    kind = folder.name.split("-", 1)[-1]
    return Case(kind, meta["label"], files, meta["main"], tuple(meta["checks"]), meta.get("extra", {}))


def fuzz(fuzzer: Fuzzer, strategy, examples: int, seconds: float, seed: int | None = None) -> None:
    """Feed ``examples`` cases drawn from ``strategy`` to ``fuzzer``, stopping after ``seconds``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    stop = time.monotonic() + seconds

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case: Case) -> None:
        if time.monotonic() < stop:
            fuzzer.run(case)

    if seed is not None:
        one = hseed(seed)(one)
    one()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=200, help="cases per family (onnx, tflite, inputs)")
    p.add_argument("--seconds", type=float, default=240.0, help="stop every family after this many seconds in all")
    p.add_argument("--compile", type=int, default=3, help="ONNX mutants that also go through TVM compile (slow)")
    p.add_argument("--mem-mb", type=int, default=DEFAULT_MEM_MB, help="the worker's address-space cap")
    p.add_argument("--save", type=Path, default=Path("fuzz-failures"), help="where failing cases are copied")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--verbose", "-v", action="store_true", help="one line per case")
    p.add_argument("--replay", type=Path, nargs="+", metavar="CASE_DIR", help="run saved failing cases again")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main(args.mem_mb)
        return 0
    if args.replay:
        with Fuzzer(args.save, args.mem_mb, verbose=True) as fuzzer:
            for case in map(load_case, args.replay):
                fuzzer.run(case)
            print(fuzzer.table())
            return 1 if fuzzer.failures else 0
    start = time.monotonic()
    with Fuzzer(args.save, args.mem_mb, verbose=args.verbose) as fuzzer:
        share = args.seconds / 3
        fuzz(fuzzer, onnx_cases(), args.examples, share, args.seed)
        if args.compile:
            fuzz(fuzzer, onnx_cases(("load", "compile"), mild=True), args.compile, share / 2, args.seed)
        fuzz(fuzzer, tflite_cases(), args.examples, args.seconds / 6 + max(0.0, start + 2 * share - time.monotonic()),
             args.seed)
        fuzz(fuzzer, input_cases(), args.examples, max(0.0, start + args.seconds - time.monotonic()), args.seed)
        print(fuzzer.table())
        print(f"{time.monotonic() - start:.0f} s")
        return 1 if fuzzer.failures else 0


if __name__ == "__main__":
    sys.exit(main())
