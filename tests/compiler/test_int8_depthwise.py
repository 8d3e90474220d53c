"""The packed VNNI depthwise conv: bit-exact against numpy, and which convs it takes."""
from __future__ import annotations

import numpy as np
import pytest


def _host():
    from edgert.compiler.schedules import CpuInfo
    from edgert.compiler.targets import load_target

    tgt = load_target("host")
    if CpuInfo.from_target(tgt).dot != "vnni":
        pytest.skip("the packed depthwise conv needs AVX-512 VNNI, which this CPU lacks")
    return tgt


def _module(x_shape, dtype, w, strides, padding):
    """``conv2d(x, w, groups=C)`` in NHWC/HWIO with int32 output, as the int8 pass leaves it."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, dtype))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(
                x, relax.const(w), strides=strides, padding=padding, groups=x_shape[3], data_layout="NHWC",
                kernel_layout="HWIO", out_dtype="int32"))
        bb.emit_func_output(y)
    return bb.get()


def _reference(x, w, strides, padding):
    """The int32 depthwise conv in numpy; ``padding`` (top, left, bottom, right) pads zeros."""
    top, left, bottom, right = padding
    xp = np.pad(x.astype(np.int64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    sh, sw = strides
    oh = (xp.shape[1] - kh) // sh + 1
    ow = (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]), np.int64)
    for a in range(kh):
        for b in range(kw):
            out += xp[:, a:a + (oh - 1) * sh + 1:sh, b:b + (ow - 1) * sw + 1:sw] * w[a, b, 0].astype(np.int64)
    return out


CASES = [
    # (H, W, C, dtype, kernel, strides, padding)
    ((16, 16), 64, "int8", (3, 3), (1, 1), (1, 1, 1, 1)),  # mobilenetv2_digits' widest layer
    ((16, 16), 64, "uint8", (3, 3), (2, 2), (1, 1, 1, 1)),  # onnxruntime's uint8 recipe, strided
    ((7, 7), 32, "int8", (3, 3), (1, 1), (1, 1, 1, 1)),  # a row width 4 does not divide
    ((9, 6), 16, "int8", (3, 3), (2, 1), (0, 1, 2, 0)),  # uneven strides and padding
    ((8, 8), 48, "uint8", (5, 2), (1, 1), (2, 0, 2, 1)),  # tall and narrow kernel
]


@pytest.mark.parametrize(("hw", "channels", "dtype", "kernel", "strides", "padding"), CASES)
def test_packed_depthwise_is_exact(hw, channels, dtype, kernel, strides, padding):
    import tvm
    from tvm import relax

    from edgert.compiler import pipeline

    tgt = _host()
    rng = np.random.default_rng(sum(hw) + channels)
    lo, hi = (-128, 128) if dtype == "int8" else (0, 256)
    x = rng.integers(lo, hi, (1, *hw, channels)).astype(dtype)
    w = rng.integers(-128, 128, (*kernel, 1, channels)).astype(np.int8)
    mod = _module(x.shape, dtype, w, strides, padding)
    lowered, report = pipeline.lower(mod, tgt, mode="default")
    funcs = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert len(funcs) == 1 and not report.counts.naive, funcs.keys()
    name, func = next(iter(funcs.items()))
    assert name.startswith("conv2d_depthwise_vnni") and "vpdpbusd" in func.script(), name
    ex = pipeline.build(mod, tgt, "default")[0]
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _reference(x, w, strides, padding))


def test_depthwise_convs_that_do_not_fit_keep_the_generic_template():
    """24 channels (not a multiple of 16) and a 5-wide kernel (more columns than a lane's 4
    bytes) stay ordinary convs, and are still exact."""
    import tvm
    from tvm import relax

    from edgert.compiler import int8_depthwise, pipeline
    from edgert.compiler.schedules import CpuInfo

    tgt = _host()
    rng = np.random.default_rng(5)
    for channels, kernel in ((24, (3, 3)), (16, (5, 5))):
        x = rng.integers(-128, 128, (1, 8, 8, channels)).astype(np.int8)
        w = rng.integers(-128, 128, (*kernel, 1, channels)).astype(np.int8)
        pad = (kernel[0] // 2,) * 4
        mod = _module(x.shape, "int8", w, (1, 1), pad)
        assert int8_depthwise.rewrite(mod, CpuInfo.from_target(tgt)).script() == mod.script()
        ex = pipeline.build(mod, tgt, "default")[0]
        got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_array_equal(got, _reference(x, w, (1, 1), pad))


def test_the_rewrite_leaves_targets_without_vnni_alone():
    """An Arm target (sdot) keeps its depthwise convs as they are."""
    from edgert.compiler import int8_depthwise
    from edgert.compiler.schedules import CpuInfo
    from edgert.compiler.targets import load_target

    w = np.ones((3, 3, 1, 16), np.int8)
    mod = _module((1, 8, 8, 16), "int8", w, (1, 1), (1, 1, 1, 1))
    cpu = CpuInfo.from_target(load_target("rpi5"))
    assert cpu.dot != "vnni"
    assert int8_depthwise.rewrite(mod, cpu).script() == mod.script()
