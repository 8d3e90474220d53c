"""Int8 bundles: QDQ models compute with int8 × int8 → int32 and agree with onnxruntime.

The QDQ models are made by onnxruntime's own ``quantize_static`` (per-channel int8 weights;
uint8 asymmetric or int8 symmetric activations), independently of edgert's quantiser.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

ZOO_CASES = [("digits_cnn", "uint8"), ("digits_cnn", "int8"), ("mobilenetv2_digits", "int8"), ("tcn_kws", "uint8")]


def qdq(src, dst, calib: dict[str, np.ndarray], activation: str):
    """``src`` quantised by onnxruntime to QDQ (per-channel int8 weights) at ``dst``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            name, x = next(iter(calib.items()))
            self.samples = iter([{name: x[i : i + 1].astype(np.float32)} for i in range(len(x))])

        def get_next(self):
            return next(self.samples, None)

    signed = activation == "int8"
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8, extra_options={"ActivationSymmetric": signed},
    )
    return dst


def output_step(path) -> float:
    """The scale of the DequantizeLinear that produces the model's output: one quantisation step."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    node = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.output[0] == g.output[0].name)
    return float(inits[node.input[1]])


@pytest.fixture(scope="module")
def zoo_qdq(tmp_path_factory):
    """zoo_qdq(name, activation) -> path of the zoo model quantised by onnxruntime (cached)."""
    from edgert.zoo import get
    from edgert.zoo.harness import calibration_data

    root = tmp_path_factory.mktemp("qdq")
    cache = {}

    def make(name: str, activation: str):
        if (name, activation) not in cache:
            cache[(name, activation)] = qdq(get(name).onnx_path, root / f"{name}_{activation}.onnx",
                                            calibration_data(name, 32), activation)
        return cache[(name, activation)]

    return make


def big_dense(path, width: int = 1024):
    """Two 1024x1024 Gemm layers: weights dominate the library, as in real models."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((width, width)) / 32).astype(np.float32), f"w{i}") for i in (0, 1)]
    inits += [numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) / 10, f"b{i}") for i in (0, 1)]
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Gemm", ["r", "w1", "b1"], ["y"], transB=1),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, width))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, width))],
        inits,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _build(path, target: str = "host"):
    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    model = load(path)
    return model, pipeline.build(to_relax(model), load_target(target), "default")[0]


def _ort(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize(("name", "activation"), ZOO_CASES)
def test_int8_outputs_agree_with_onnxruntime_within_one_step(zoo_qdq, name, activation):
    import tvm
    from tvm import relax

    from edgert.zoo.harness import validation_data

    path = zoo_qdq(name, activation)
    model, ex = _build(path)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    spec = model.inputs[0]
    x = validation_data(name).x[:16].reshape(16, *spec.shape[1:]).astype(np.float32)
    step = output_step(path)
    within = []
    for i in range(len(x)):
        sample = x[i : i + 1]
        got = vm["main"](tvm.runtime.tensor(sample)).numpy()
        within.append(np.abs(got - _ort(path, {spec.name: sample})) <= step * 1.001)
    frac = float(np.mean(np.concatenate([w.ravel() for w in within])))
    assert frac >= 0.99, f"{name} ({activation}): only {frac:.1%} of outputs within one step ({step:.4g}) of onnxruntime"


def _layer_calls(mod):
    from tvm import relax

    calls = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") in ("relax.nn.conv2d", "relax.matmul"):
            calls.append(e)

    relax.analysis.post_order_visit(mod["main"], visit)
    return calls


def test_int8_layers_accumulate_in_int32_and_use_vnni(zoo_qdq):
    from edgert.compiler import int8, pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.schedules import CpuInfo
    from edgert.compiler.targets import load_target
    from edgert.model import load

    tgt = load_target("host")
    mod = to_relax(load(zoo_qdq("digits_cnn", "int8")))
    assert all(str(c.ty.dtype) == "float32" for c in _layer_calls(mod))  # as the frontend imports QDQ
    integer, report = int8.integerize(mod, tgt)
    # 2 convs and the classifier; the 1-channel stem conv runs in float32 on the dequantized int8
    # weights (nothing to sum over channels: the integer form would pad 3 channels of zeros).
    assert report.to_json()["integer_layers"] == 3
    assert len(report.skipped) == 1 and "one input channel" in report.skipped[0]
    calls = _layer_calls(integer)
    assert [str(c.ty.dtype) for c in calls].count("int32") == 3 and len(calls) == 4
    for c in calls:
        if str(c.ty.dtype) == "int32":
            assert [str(a.ty.dtype) for a in c.args] == [int8.activation_dtype(tgt), "int8"], c
        else:  # the stem: its weights are the int8 ones times their scales
            assert [str(a.ty.dtype) for a in c.args] == ["float32", "float32"], c
            assert int(c.args[1].ty.shape[1]) == 1
    lowered, report = pipeline.lower(mod, tgt, mode="default")
    convs = {gv.name_hint: f.script() for gv, f in lowered.functions.items() if "conv2d" in gv.name_hint}
    assert len(convs) == 3 and not report.counts.naive
    integer_convs = [t for t in convs.values() if 'T.Cast("int32"' in t or "vpdpbusd" in t]
    assert len(integer_convs) == 2  # integer products summed in int32 (or the VNNI instruction)
    if CpuInfo.from_target(tgt).dot == "vnni":
        assert all("vpdpbusd" in t for t in integer_convs)


def test_int8_residual_adds_and_shifts_fuse_into_the_convs(zoo_qdq):
    """The residual adds stay float (dequantize → add → quantize) but as element-wise ops: they keep
    the conv's layout and fuse into the projection conv, and the uint8 copy a block output needs
    for the next VNNI conv is made by the kernel that computes it (no kernel of their own)."""
    import tvm

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    tgt = load_target("host")
    lowered, report = pipeline.lower(to_relax(load(zoo_qdq("mobilenetv2_digits", "int8"))), tgt, mode="default")
    names = [gv.name_hint for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert not report.counts.naive
    assert not [n for n in names if "quantize" in n], names  # QDQ ops only as element-wise arithmetic
    # Besides the convs: the input's quantize (with its one layout transpose), the pooling, the classifier.
    others = [n for n in names if "conv2d" not in n]
    assert len(others) == 3 and sum("transpose" in n for n in names) == 1, others
    assert any("mean" in n for n in others) and any("matmul" in n for n in others), others
    residual = [n for n in names if "conv2d" in n and n.index("conv2d") > len("fused_")]
    assert len(residual) == 3, names  # the three residual adds, each inside its projection conv


def _output_writers_unvectorized(func) -> list[str]:
    """Blocks of ``func`` that write its output buffer outside any vectorized loop."""
    from tvm import s_tir
    from tvm.tirx import ForKind

    sch = s_tir.Schedule(func)
    out_name = func.params[-1].name
    bad = []
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(b)
        if not any(w.source.name == out_name for w in stmt.writes):
            continue
        if not any(sch.get(lp).kind == ForKind.VECTORIZED for lp in sch.get_loops(b)):
            bad.append(stmt.name_hint)
    return bad


def test_int8_long_epilogues_are_written_from_the_register_tile(zoo_qdq):
    """onnxruntime's uint8 recipe on a TCN block fuses requantize, dequantize, the residual add,
    requantize and dequantize again (17 element-wise blocks) into the conv: all of them run on
    the register tile and the output is stored by a vector loop (a block left behind ran as a
    scalar loop over the whole output: 3 us per conv instead of 1.3)."""
    import tvm

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    lowered, report = pipeline.lower(to_relax(load(zoo_qdq("tcn_kws", "uint8"))), load_target("host"), mode="default")
    convs = {gv.name_hint: f for gv, f in lowered.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and "conv1d" in gv.name_hint}
    assert len(convs) == 4 and not report.counts.naive, list(convs)
    residual = [n for n in convs if n.count("add") >= 2]
    assert residual, list(convs)  # the long epilogues this test is about
    for name, func in convs.items():
        assert not _output_writers_unvectorized(func), (name, _output_writers_unvectorized(func))


def narrow_convs(path):
    """1x1 convs 32 -> 24 -> 12 -> 16 channels: the first two have output counts that 16 lanes
    do not divide; the last is the full-width form (its epilogue was the one left scalar)."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(2)
    chans = [32, 24, 12, 16]
    nodes, inits, src = [], [], "x"
    for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
        w = (rng.standard_normal((cout, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [src, f"w{i}"], [f"c{i}"]))
        src = f"c{i}"
        if i < len(chans) - 2:
            nodes.append(helper.make_node("Relu", [src], [f"r{i}"]))
            src = f"r{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, "narrow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 32, 8, 8))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 16, 8, 8))], inits,
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_int8_narrow_layers_use_the_narrower_vnni_forms_with_a_vector_epilogue(tmp_path):
    import re

    import tvm
    from tvm import relax

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.schedules import CpuInfo
    from edgert.compiler.targets import load_target
    from edgert.compiler.tuning import task_module
    from edgert.model import load

    tgt = load_target("host")
    if CpuInfo.from_target(tgt).dot != "vnni":
        pytest.skip("this host has no AVX-512 VNNI (the Arm sdot form is tested under qemu)")
    rng = np.random.default_rng(3)
    path = qdq(narrow_convs(tmp_path / "narrow.onnx"), tmp_path / "narrow_qdq.onnx",
               {"x": rng.standard_normal((16, 32, 8, 8)).astype(np.float32)}, "uint8")
    lowered, _ = pipeline.lower(to_relax(load(path)), tgt, mode="default")
    convs = {gv.name_hint: f for gv, f in lowered.functions.items() if "conv2d" in gv.name_hint}
    texts = sorted(f.script() for f in convs.values())
    assert len(texts) == 3
    assert any("vpdpbusd.256" in t for t in texts), "24 output channels: the 8-lane form"
    assert any("vpdpbusd.128" in t for t in texts), "12 output channels: the 4-lane form"
    for name, func in convs.items():
        asm = tvm.compile(task_module(func), target=tgt.tvm_target()).mod.inspect_source("asm")
        # The requantize (round half to even) runs on vectors, not one scalar per output.
        # (LLVM's fallback for a scalarised loop: per-element converts, or gathers and byte extracts.)
        scalar = [ln for ln in asm.splitlines() if re.match(r"\s+v(cvtsi2ss\w*|roundss|rndscaless|pgather\w+|pextrb)\s", ln)]
        assert not scalar, f"{name}: scalarised epilogue {scalar[:3]}"

    ex = pipeline.build(to_relax(load(path)), tgt, "default")[0]
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = rng.standard_normal((1, 32, 8, 8)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    within = np.abs(got - _ort(path, {"x": x})) <= output_step(path) * 1.001
    assert within.mean() >= 0.99, f"only {within.mean():.1%} within one step"


@pytest.mark.parametrize("quantizer", ["onnxruntime", "edgert"])
def test_int8_weights_stay_int8_in_the_library(tmp_path, quantizer):
    """Also with edgert's recipe, whose last Gemm has a float output (no QuantizeLinear after it)."""
    import edgert
    from edgert.compiler.build import CompileOptions
    from edgert.compress import QuantizeSpec, quantize

    float_path = big_dense(tmp_path / "dense.onnx")
    rng = np.random.default_rng(1)
    calib = {"x": rng.standard_normal((8, 1024)).astype(np.float32)}
    q_path = tmp_path / "dense_qdq.onnx"
    if quantizer == "onnxruntime":
        qdq(float_path, q_path, calib, "uint8")
    else:
        quantize(edgert.load(float_path), QuantizeSpec(), calib)[0].save(q_path)
    opts = CompileOptions(schedules="default")
    f = edgert.compile(float_path, target="host", output=tmp_path / "f.edgert", options=opts, log=lambda _: None)
    q = edgert.compile(q_path, target="host", output=tmp_path / "q.edgert", options=opts, log=lambda _: None)
    f_size = (f.path / "lib" / "model.so").stat().st_size
    q_size = (q.path / "lib" / "model.so").stat().st_size
    x = rng.standard_normal((1, 1024)).astype(np.float32)
    got, ref = q.run({"x": x})["y"], _ort(q_path, {"x": x})
    # One hidden-layer step apart at most here and there, through a 1024-wide float head.
    err = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert err <= 1e-3, f"int8 bundle vs onnxruntime: max|err| {err:.2%} of max|ref|"
    assert f_size > 8_000_000  # two 4 MB float weights
    assert q_size <= 0.3 * f_size, f"int8 library {q_size} bytes vs float {f_size}"


@pytest.mark.qemu
def test_rpi5_bundle_uses_sdot_and_runs_under_qemu(qemu, zoo_qdq, tmp_path):
    import edgert
    from edgert.zoo import evaluate

    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.fail("aarch64-linux-gnu-objdump is missing; run 'make install' (binutils-aarch64-linux-gnu)")
    path = zoo_qdq("digits_cnn", "int8")
    bundle = edgert.compile(path, target="rpi5", output=tmp_path / "rpi5.edgert", log=lambda _: None)
    asm = subprocess.run([objdump, "-d", str(bundle.path / "lib" / "model.so")], capture_output=True, text=True, check=True).stdout
    assert asm.count("sdot\t") >= 8, "no Arm dot-product instructions in the rpi5 int8 library"
    host = evaluate("digits_cnn", path, limit=8)  # onnxruntime on the QDQ model
    emulated = evaluate("digits_cnn", bundle, device="qemu", limit=8)
    assert emulated.samples == 8 and emulated.accuracy == host.accuracy
