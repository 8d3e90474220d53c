"""Int8 depthwise convolutions on x86 VNNI: the kernel's columns packed into each lane's 4 bytes.

A depthwise conv has no sum over channels, which is what ``vpdpbusd`` (4 uint8×int8
products summed into each int32 lane) is built for, so the generic template computes it
one product per lane: no faster than float (the int8 bottleneck of MobileNet-style nets).
Here each lane is one channel and its 4 bytes are 4 neighbouring input columns of one
kernel row, against that row's taps (a 3-wide kernel gets a 4th zero tap):

    acc[n, i, j, c] = Σ_ky Σ_k pad[n, c/16, i·sh + ky, j·sw + k, c%16] · w4[ky, c, k]

``pad`` is the input, padded with the value of zero, in channel blocks of 16 with the
columns of a row contiguous, so the 4 columns × 16 channels an instruction reads are one
64-byte load; one byte permute interleaves them. A 3x3 kernel is 3 instructions per 16
channels and output pixel, against 9 float FMAs (mobilenetv2_digits' 16x16x64 layer:
1.9 µs against 4.4 µs for the generic int8 template, bit-exact). VNNI multiplies unsigned
activations, so an int8 input is shifted to uint8 (``x ^ 0x80 = x + 128``) while it is
padded, and ``128·Σw`` per channel is subtracted after the sum.

``rewrite`` runs after layout conversion (the convs are NHWC/HWIO then) and replaces each
integer depthwise conv that fits by this computation; ``schedules.int8_depthwise``
schedules it.
"""
from __future__ import annotations

import numpy as np

FUNC_NAME = "conv2d_depthwise_vnni"  # "conv2d" first: fused kernels read as the conv they are
PAD_BLOCK = "edgert_dw_pad"
ACC_BLOCK = "edgert_dw_acc"
LANES = 16  # channels per instruction (the 512-bit form)
TAPS = 4  # bytes per lane: kernels up to 4 columns wide
_OUT_ELEMWISE_FUSABLE = 4  # relay/relax OpPatternKind kOutEWiseFusable


def rewrite(mod, cpu):
    """Integer depthwise ``relax.nn.conv2d`` calls of ``mod`` → the packed VNNI computation.

    Only on CPUs with the 16-lane VNNI form; only NHWC convs with int32 output, a constant
    weight, channels a multiple of 16, no dilation and at most 4 kernel columns. Others stay.
    """
    import tvm
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor

    from edgert.compiler.relax_rewrites import rewrite_functions

    if cpu.dot != "vnni" or LANES not in cpu.dot_lanes:
        return mod
    conv_op = tvm.ir.Op.get("relax.nn.conv2d")
    rewritten = []

    @expr_functor.mutator
    class _Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call, relax.Call) and call.op.same_as(conv_op)):
                return call
            x, w = call.args
            weight = self.constant(w)
            plan = _plan(call, x, weight)
            if plan is None:
                return call
            w4, off = plan
            rewritten.append(call)
            args = [x, relax.const(w4)] + ([relax.const(off)] if off is not None else [])
            a = call.attrs
            return self.builder_.call_te(
                _compute, *args, strides=[int(s) for s in a.strides], padding=[int(p) for p in a.padding],
                kernel_width=int(weight.shape[1]),
                primfunc_name_hint=FUNC_NAME,
            )

        def constant(self, e) -> np.ndarray | None:
            """``e`` as a numpy array when it is a constant, possibly behind a var or transpose."""
            for _ in range(8):
                if isinstance(e, relax.Var):
                    bound = self.lookup_binding(e)
                    if bound is None:
                        return None
                    e = bound
                elif isinstance(e, tvm.ir.GenericConst):
                    return e.value.numpy()
                elif isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.permute_dims":
                    inner = self.constant(e.args[0])
                    if inner is None:
                        return None
                    axes = None if e.attrs.axes is None else [int(v) for v in e.attrs.axes]
                    return np.transpose(inner, axes)
                else:
                    return None
            return None

    new = rewrite_functions(_Rewriter(mod), mod)
    if not rewritten:
        return mod
    mod = new
    from edgert.compiler.schedules.int8_depthwise import register_intrinsic

    register_intrinsic()
    # A reduction whose reads are not element-wise: FuseOps may append the requantize to it
    # (what AnnotateTIROpPattern infers for conv2d; it keeps a pattern already set).
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tvm.tirx.PrimFunc) and gvar.name_hint.startswith(FUNC_NAME):
            mod[gvar] = func.with_attr("op_pattern", _OUT_ELEMWISE_FUSABLE)
    return relax.transform.DeadCodeElimination()(mod)


def _plan(call, x, weight):
    """``(w4, off)`` for a conv that fits (``off`` None for a uint8 input), else None."""
    a = call.attrs
    shape = getattr(x.ty, "shape", None)
    try:
        dims = [int(d) for d in shape]
    except (TypeError, ValueError):
        return None
    x_dtype = str(x.ty.dtype)
    if (weight is None or str(a.data_layout) != "NHWC" or str(a.kernel_layout) != "HWIO"
            or str(a.out_layout) != "NHWC" or str(a.out_dtype) != "int32" or x_dtype not in ("int8", "uint8")
            or str(weight.dtype) != "int8" or len(dims) != 4):
        return None
    channels = dims[3]
    kh, kw = weight.shape[:2]
    if (int(a.groups) != channels or weight.shape[2:] != (1, channels) or channels % LANES
            or any(int(d) != 1 for d in a.dilation) or kw > TAPS):
        return None
    w4 = np.zeros((kh, channels, TAPS), np.int8)
    w4[:, :, :kw] = weight[:, :, 0, :].transpose(0, 2, 1)
    # An int8 input is read as uint8 (x + 128): take 128·Σw back off each channel.
    off = (128 * weight.astype(np.int64).sum(axis=(0, 1, 2))).astype(np.int32) if x_dtype == "int8" else None
    return w4, off


def _compute(x, w4, off=None, *, strides, padding, kernel_width):
    """The TE computation (see the module docstring); ``padding`` is (top, left, bottom, right)."""
    from tvm import te, tirx

    n, h, w, c = (int(d) for d in x.shape)
    kh = int(w4.shape[0])
    sh, sw = strides
    top, left, bottom, right = padding
    oh = (h + top + bottom - kh) // sh + 1
    ow = (w + left + right - kernel_width) // sw + 1
    # Rows and columns the sums read; columns past the kernel's own are read against zero weights.
    hp, wp = (oh - 1) * sh + kh, (ow - 1) * sw + TAPS
    signed = str(x.dtype) == "int8"
    zero = tirx.const(128 if signed else 0, "uint8")

    def padded(b, cb, r, col, cc):
        v = x[b, r - top, col - left, cb * LANES + cc]
        if signed:
            v = (v ^ tirx.const(-128, "int8")).astype("uint8")
        return tirx.if_then_else(tirx.all(r >= top, r < h + top, col >= left, col < w + left), v, zero)

    pad = te.compute((n, c // LANES, hp, wp, LANES), padded, name=PAD_BLOCK)
    ky = te.reduce_axis((0, kh), "ky")
    k = te.reduce_axis((0, TAPS), "k")
    acc = te.compute(
        (n, oh, ow, c),
        lambda b, i, j, ch: te.sum(
            pad[b, ch // LANES, i * sh + ky, j * sw + k, ch % LANES].astype("int32") * w4[ky, ch, k].astype("int32"),
            axis=[ky, k],
        ),
        name=ACC_BLOCK,
    )
    if off is None:
        return acc
    return te.compute(acc.shape, lambda b, i, j, ch: acc[b, i, j, ch] - off[ch], name="edgert_dw_offset")
