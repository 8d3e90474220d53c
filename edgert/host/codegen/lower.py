"""Lowering of one executor step to lines of the generated whole-graph function, by op type.

A lowering sees the step's NodeContext, its inputs and outputs as ``Val`` (static shape, dtype, and the
array when the value is a constant) and emits Python lines through ``Gen``; it raises ``NotLowerable``
(with the reason) for any case it does not cover, and the executor keeps interpreting that model.
Every runtime value of a generated function is a C-contiguous float32 array.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgert.host.codegen.gen import Gen, NotLowerable, Val, f32
from edgert.host.im2col import window_geometry
from edgert.host.ops.conv import DEPTHWISE_LANES, DEPTHWISE_WIDE, depthwise_band, depthwise_phases

LOWERINGS: dict[str, Callable[[Gen, object, list, list], None]] = {}
_INF = (-math.inf, math.inf)


def lowering(*op_types: str):
    def wrap(fn):
        for t in op_types:
            LOWERINGS[t] = fn
        return fn

    return wrap


def _dense_weight(ctx) -> None:
    if ctx.cache.get("csr") is not None:
        raise NotLowerable(f"{ctx.op_type} node '{ctx.name}' has a sparse weight: its CSR kernel runs in the interpreter")


def _const(v: Val | None, what: str) -> np.ndarray:
    if v is None or v.const is None:
        raise NotLowerable(f"{what} is not a constant")
    return v.const


def _ints(v: Val | None, what: str) -> list[int]:
    return [int(i) for i in np.asarray(_const(v, what)).reshape(-1)]


@lowering("Conv")
def conv(g: Gen, ctx, ins: list, outs: list) -> None:
    _dense_weight(ctx)
    x, w = ins[0], _const(ins[1], "the weight")
    b = ins[2] if len(ins) > 2 else None
    if x.const is not None or len(x.shape) not in (3, 4) or w.dtype != np.float32:
        raise NotLowerable("Conv: only 1-D/2-D float convolutions of a computed input with a constant weight")
    bias = _const(b, "the bias") if b is not None else np.zeros(w.shape[0], np.float32)
    kernel_shape = tuple(ctx.attr("kernel_shape") or w.shape[2:])
    strides, dilations, begin, _, out_shape = window_geometry(ctx, x.shape[2:], kernel_shape)
    lo, hi = ctx.cache.get("clip") or _INF
    group = ctx.attr("group", 1)
    n, c = x.shape[:2]
    cout = w.shape[0]
    xv = g.ref(x)
    if len(x.shape) == 3:  # 1-D as 2-D with one row
        xv = g.view(x, (n, c, 1, x.shape[2]))
        kernel_shape, strides, dilations, begin, out_shape = ((1, *kernel_shape), (1, *strides), (1, *dilations),
                                                              (0, *begin), (1, *out_shape))
        w = w.reshape(cout, w.shape[1], 1, -1)
    (kh, kw), (sh, sw), (dh, dw), (top, left), (oh, ow) = kernel_shape, strides, dilations, begin, out_shape
    if group == 1:
        expr = (f"{g.kernel('conv2d')}({xv}, {g.const(w.reshape(cout, -1))}, {g.const(bias)}, {kh}, {kw}, {sh}, {sw}, "
                f"{dh}, {dw}, {top}, {left}, {oh}, {ow}, {f32(lo)}, {f32(hi)})")
    elif group == c == cout and w.shape[1] == 1:
        # edgert.host.ops.conv's depthwise kernels, chosen as depthwise2d does: channel blocks transposed to
        # channel-last (a vector FMA per tap), or per channel plane for few channels on wide planes.
        expr = g.temp(f"np.empty(({n}, {c}, {oh}, {ow}), dtype=np.float32)")
        if c < DEPTHWISE_LANES and x.shape[-1] >= DEPTHWISE_WIDE:
            name, sizes = "depthwise2d_wide", depthwise_phases((oh, ow), (kh, kw), (sh, sw), (dh, dw))
        else:
            name, sizes = "depthwise2d", (depthwise_band((oh, ow), (kh, kw), (sh, sw), (dh, dw)),)
        g.emit(f"{g.kernel(name)}({xv}, {g.const(w[:, 0])}, {g.const(bias)}, {f32(lo)}, {f32(hi)}, {expr}, "
               f"{sh}, {sw}, {dh}, {dw}, {top}, {left}, {', '.join(map(str, sizes))}, 0, {n * c})")
    else:
        raise NotLowerable("Conv: grouped convolution other than depthwise")
    g.define(outs[0], expr, (n, cout, oh, ow))


@lowering("MaxPool")
def max_pool(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    if len(x.shape) != 4 or any(o is not None for o in outs[1:]):
        raise NotLowerable("MaxPool: 2-D without the Indices output only")
    kernel_shape = tuple(ctx.attr("kernel_shape"))
    strides, dilations, begin, _, out_shape = window_geometry(ctx, x.shape[2:], kernel_shape, bool(ctx.attr("ceil_mode", 0)))
    args = ", ".join(str(v) for v in (*kernel_shape, *strides, *dilations, *begin, *out_shape))
    g.define(outs[0], f"{g.kernel('max_pool2d')}({g.ref(x)}, {args})", (*x.shape[:2], *out_shape))


def _dense(g: Gen, a: str, w: np.ndarray, bias: np.ndarray | None) -> str:
    bias = np.zeros(w.shape[1], np.float32) if bias is None else bias
    return f"{g.kernel('dense')}({a}, {g.const(w)}, {g.const(bias)}, {f32(-math.inf)}, {f32(math.inf)})"


@lowering("Gemm")
def gemm(g: Gen, ctx, ins: list, outs: list) -> None:
    _dense_weight(ctx)
    a, b = ins[0], _const(ins[1], "Gemm's B")
    if ctx.attr("transA", 0) or a.const is not None or b.ndim != 2:
        raise NotLowerable("Gemm: transA or a constant A")
    w = (b.T if ctx.attr("transB", 0) else b) * np.float32(ctx.attr("alpha", 1.0))
    bias = None
    if len(ins) > 2 and ins[2] is not None:
        c = _const(ins[2], "Gemm's C") * np.float32(ctx.attr("beta", 1.0))
        if c.size not in (1, w.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
            raise NotLowerable("Gemm: C is not a row vector")
        bias = np.broadcast_to(c.reshape(-1), (w.shape[1],))
    g.define(outs[0], _dense(g, g.ref(a), w.astype(np.float32), bias), (a.shape[0], w.shape[1]))


@lowering("MatMul")
def matmul(g: Gen, ctx, ins: list, outs: list) -> None:
    _dense_weight(ctx)
    a, b = ins
    if a.const is not None:
        raise NotLowerable("MatMul: a constant left operand")
    out = outs[0].shape
    if b.const is not None and b.const.ndim == 2 and len(a.shape) >= 2:
        rows = math.prod(a.shape[:-1])
        g.define(outs[0], _dense(g, g.view(a, (rows, a.shape[-1])), b.const, None), (rows, b.const.shape[1]))
        return
    if len(a.shape) == len(b.shape) >= 2 and a.shape[:-2] == b.shape[:-2]:
        batch = math.prod(a.shape[:-2])
        expr = (f"{g.kernel('batched_matmul')}({g.view(a, (batch, *a.shape[-2:]))}, "
                f"{g.view(b, (batch, *b.shape[-2:]))})")
        g.define(outs[0], expr, (batch, a.shape[-2], b.shape[-1]))
        return
    raise NotLowerable(f"MatMul: broadcast batch axes ({out})")


_BINARY = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Div": "DIV"}


def _broadcast4(shapes: list[tuple[int, ...]], out: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Each shape (NumPy-broadcast to ``out``) and ``out`` as 4-D shapes: size-1 output axes dropped,
    neighbouring axes merged where every operand is whole on both or broadcast on both."""
    if 0 in out:
        raise NotLowerable("an empty tensor")
    full = [(1,) * (len(out) - len(s)) + tuple(s) for s in shapes]
    groups: list[tuple[tuple[bool, ...], int]] = []  # (which operands are whole on these axes, output size)
    for i, d in enumerate(out):
        if d == 1:
            continue
        whole = tuple(s[i] == d for s in full)
        if groups and groups[-1][0] == whole:
            groups[-1] = (whole, groups[-1][1] * d)
        else:
            groups.append((whole, d))
    if len(groups) > 4:
        raise NotLowerable("a broadcast over more than 4 alternating axes")
    pad = [(tuple(True for _ in shapes), 1)] * (4 - len(groups))
    groups = pad + groups
    return [tuple(n if whole[k] else 1 for whole, n in groups) for k in range(len(shapes))] + [tuple(n for _, n in groups)]


@lowering(*_BINARY)
def binary(g: Gen, ctx, ins: list, outs: list) -> None:
    *shapes4, out4 = _broadcast4([tuple(v.shape) for v in ins], tuple(outs[0].shape))
    a, b = (g.view(v, s) for v, s in zip(ins, shapes4, strict=True))
    g.define(outs[0], f"{g.kernel('binary4')}({a}, {b}, {g.code(_BINARY[ctx.op_type])}, {out4})", out4)


_UNARY = {"Relu": "RELU", "Sigmoid": "SIGMOID", "Tanh": "TANH", "Exp": "EXP", "Sqrt": "SQRT", "Abs": "ABS", "Neg": "NEG",
          "Erf": "ERF", "Clip": "CLIP", "HardSigmoid": "HARD_SIGMOID", "HardSwish": "HARD_SWISH"}


@lowering(*_UNARY)
def unary(g: Gen, ctx, ins: list, outs: list) -> None:
    p, q = 0.0, 0.0
    if ctx.op_type == "Clip" and ctx.opset < 11:
        p, q = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
    elif ctx.op_type == "Clip":
        bound = [ins[i] if len(ins) > i else None for i in (1, 2)]
        p, q = (float(_const(v, "a Clip bound")) if v is not None else d for v, d in zip(bound, _INF, strict=True))
    elif ctx.op_type == "HardSigmoid":
        p, q = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    elif ctx.op_type == "HardSwish":
        p, q = 1 / 6, 0.5
    g.define(outs[0], f"{g.kernel('unary')}({g.ref(ins[0])}, {g.code(_UNARY[ctx.op_type])}, {f32(p)}, {f32(q)})",
             ins[0].shape)


@lowering("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
def reshape(g: Gen, ctx, ins: list, outs: list) -> None:
    if len([o for o in outs if o is not None]) > 1:
        raise NotLowerable("Dropout: the mask output")
    g.define(outs[0], g.ref(ins[0]), ins[0].shape)


@lowering("Transpose")
def transpose(g: Gen, ctx, ins: list, outs: list) -> None:
    shape = tuple(ins[0].shape)
    perm = tuple(ctx.attr("perm") or range(len(shape))[::-1])
    if perm == tuple(range(len(perm))):
        g.define(outs[0], g.ref(ins[0]), shape)
        return
    if len(shape) > 6:
        raise NotLowerable("Transpose of more than 6 axes")
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    pad = 6 - len(shape)
    out6 = (1,) * pad + tuple(shape[p] for p in perm)
    strides6 = (0,) * pad + tuple(strides[p] for p in perm)
    g.define(outs[0], f"{g.kernel('transpose6')}({g.ref(ins[0])}, {out6}, {strides6})", out6)


@lowering("Gather")
def gather(g: Gen, ctx, ins: list, outs: list) -> None:
    x, idx = ins[0], _const(ins[1], "Gather's indices")
    if ctx.attr("axis", 0) % len(x.shape) != 0 or idx.ndim != 0 or len(x.shape) < 2:
        raise NotLowerable("Gather: only one constant index on the first axis")
    g.define(outs[0], f"{g.ref(x)}[{int(idx) % x.shape[0]}]", x.shape[1:])


@lowering("LayerNormalization")
def layer_norm(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    if len(outs) > 1 and any(o is not None for o in outs[1:]):
        raise NotLowerable("LayerNormalization: the Mean/InvStdDev outputs")
    axis = ctx.attr("axis", -1) % len(x.shape)
    d = math.prod(x.shape[axis:])
    bias = ins[2] if len(ins) > 2 and ins[2] is not None else Val("", (d,), np.dtype(np.float32), np.zeros(d, np.float32))
    params = [ins[1], bias]
    if any(math.prod(p.shape) != d for p in params):
        raise NotLowerable("LayerNormalization: broadcast scale/bias")
    scale, bias = (g.view(p, (d,)) for p in params)
    rows = math.prod(x.shape[:axis])
    expr = f"{g.kernel('layer_norm')}({g.view(x, (rows, d))}, {scale}, {bias}, {f32(ctx.attr('epsilon', 1e-5))})"
    g.define(outs[0], expr, (rows, d))


@lowering("Softmax")
def softmax(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    nd = len(x.shape)
    axis = ctx.attr("axis", -1 if ctx.opset >= 13 else 1) % max(1, nd)
    if ctx.opset >= 13 and axis != nd - 1:
        raise NotLowerable("Softmax: over an axis other than the last")
    rows = math.prod(x.shape[:axis])
    shape2 = (rows, math.prod(x.shape) // max(rows, 1))
    g.define(outs[0], f"{g.kernel('softmax_rows')}({g.view(x, shape2)})", shape2)


@lowering("ReduceMean", "GlobalAveragePool")
def reduce_mean(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    nd = len(x.shape)
    if ctx.op_type == "GlobalAveragePool":
        axes = list(range(2, nd))
    elif ctx.opset >= 18:
        axes = _ints(ins[1], "ReduceMean's axes") if len(ins) > 1 and ins[1] is not None else []
    else:
        axes = list(ctx.attr("axes") or [])
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            raise NotLowerable("ReduceMean: noop_with_empty_axes")
        axes = list(range(nd))
    axes = sorted(a % nd for a in axes)
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise NotLowerable("ReduceMean: axes that are not adjacent")
    a, r, b = math.prod(x.shape[:axes[0]]), math.prod(x.shape[axes[0]:axes[-1] + 1]), math.prod(x.shape[axes[-1] + 1:])
    g.define(outs[0], f"{g.kernel('mean_middle')}({g.view(x, (a, r, b))})", (a, b))


@lowering("Pad")
def pad(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    nd = len(x.shape)
    if ctx.attr("mode", "constant") != "constant" or nd > 4:
        raise NotLowerable("Pad: only constant mode, up to 4-D")
    if ctx.opset < 11:
        pads, value, axes = list(ctx.attr("pads")), float(ctx.attr("value", 0.0)), list(range(nd))
    else:
        pads = _ints(ins[1], "the pads")
        cv = ins[2] if len(ins) > 2 else None
        value = float(np.asarray(_const(cv, "the pad value")).reshape(-1)[0]) if cv is not None and cv.const.size else 0.0
        axes = [a % nd for a in _ints(ins[3], "the axes")] if len(ins) > 3 and ins[3] is not None else list(range(nd))
    if min(pads, default=0) < 0:
        raise NotLowerable("Pad: negative pads (cropping)")
    begin = [0] * nd
    for i, a in enumerate(axes):
        begin[a] = pads[i]
    lead = (1,) * (4 - nd)
    expr = (f"{g.kernel('pad4')}({g.view(x, lead + tuple(x.shape))}, {lead + tuple(outs[0].shape)}, "
            f"{(0,) * (4 - nd) + tuple(begin)}, {f32(value)})")
    g.define(outs[0], expr, lead + tuple(outs[0].shape))


@lowering("Concat")
def concat(g: Gen, ctx, ins: list, outs: list) -> None:
    shape = tuple(outs[0].shape)
    axis = ctx.attr("axis") % len(shape)
    outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    out = g.temp(f"np.empty(({outer}, {shape[axis]}, {inner}), dtype=np.float32)")
    offset = 0
    for v in ins:
        if v is None or v.shape[axis] == 0:
            continue
        g.emit(f"{g.kernel('place3')}({out}, {g.view(v, (outer, v.shape[axis], inner))}, {offset})")
        offset += v.shape[axis]
    g.define(outs[0], out, (outer, shape[axis], inner))


@lowering("BatchNormalization")
def batch_norm(g: Gen, ctx, ins: list, outs: list) -> None:
    x = ins[0]
    scale, bias, mean, var = (_const(v, "a BatchNormalization parameter") for v in ins[1:5])
    if ctx.attr("training_mode", 0) or len(x.shape) < 2:
        raise NotLowerable("BatchNormalization: training mode")
    mul = (scale / np.sqrt(var + np.float32(ctx.attr("epsilon", 1e-5)))).astype(np.float32)
    add = (bias - mean * mul).astype(np.float32)
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    g.define(outs[0], f"{g.kernel('channel_affine')}({g.view(x, (n, c, s))}, {g.const(mul)}, {g.const(add)})", (n, c, s))
