"""Integer arithmetic for quantised (QDQ) models: a Relax pass run before layout conversion.

TVM's ONNX frontend imports a QDQ graph as ``dequantize → float op → quantize``, so a
quantised model compiled as it is computes in float (no faster, weights re-expanded). This
pass rewrites, on the module exactly as ``from_onnx`` gives it (weights bound as constants):

    quantize(act(dequantize(x) ⊛ dequantize(W) + bias), sy, zy)
        → requantize(conv2d/matmul(x', W, out_dtype="int32"))

``⊛`` is a 2-D convolution (any groups) or a matmul with a constant weight, ``act`` is
nothing, ReLU or a clip. The int8 weight stays int8; ``x'`` is ``x`` in the activation
dtype the target's dot-product instruction takes (x86 VNNI: uint8 × int8, Arm sdot:
int8 × int8), shifted by 128 when the model's dtype differs. With zero points,

    Σ (x - zx)·w = Σ x·w - zx·Σw      (the second term is a per-channel constant)

as long as padding pads ``x`` with ``zx`` (an explicit pad). The requantize is element-wise
(it fuses into the kernel's epilogue): ``clamp(round(acc·M[c] + B[c]), lo, hi)`` with
``M = sx·sw[c]/sy`` and ``B`` folding the bias, ``zy`` and the ``zx·Σw`` correction; ReLU and
clip become the clamp bounds. ``quantize(f(dequantize(a)))`` for ops that commute with the
affine map at an unchanged scale (reshape, transpose, max pooling, ReLU) becomes ``f(a)``
on the integers. Everything else keeps ``dequantize → float op → quantize``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Ops that commute with dequantize at an unchanged scale and zero point: run on the integers.
_PASS_THROUGH = {
    "relax.reshape",
    "relax.permute_dims",
    "relax.squeeze",
    "relax.expand_dims",
    "relax.flatten",
    "relax.nn.max_pool2d",
    "relax.nn.max_pool1d",
}
_QRANGE = {"int8": (-128, 127), "uint8": (0, 255)}
_LAYERS = {"relax.nn.conv2d": "conv2d", "relax.nn.conv1d": "conv1d", "relax.matmul": "matmul"}


@dataclass
class Int8Report:
    """What the pass made integer, and which quantised ops stayed float (and why)."""

    layers: list[dict[str, Any]] = field(default_factory=list)  # integer conv/matmul layers
    passthrough: int = 0  # reshape/pool/relu ops run on the integers
    skipped: list[str] = field(default_factory=list)  # "op: reason" for quantised ops left float

    def to_json(self) -> dict[str, Any]:
        return {"integer_layers": len(self.layers), "passthrough": self.passthrough, "layers": self.layers,
                "float": self.skipped}


def activation_dtype(tgt) -> str:
    """The activation dtype of the target's int8 dot product: uint8 on x86 (VNNI), int8 on Arm (sdot)."""
    return "uint8" if tgt.arch in ("x86_64", "amd64", "native") else "int8"


def is_quantized(mod) -> bool:
    """Whether ``mod`` holds any dequantize (a QDQ model)."""
    from tvm import relax

    found = []

    def visit(e):
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.dequantize":
            found.append(e)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
            if found:
                return True
    return False


def integerize(mod, tgt):
    """``(mod, Int8Report)``: QDQ conv/matmul layers of ``mod`` computed with int8 × int8 → int32."""
    from tvm import relax

    from edgert.compiler.relax_rewrites import clip_calls_to_ops

    report = Int8Report()
    if not is_quantized(mod):
        return mod, report
    # Clip arrives as call_tir(maximum/minimum): as Relax ops it can be matched as an activation.
    mod = clip_calls_to_ops(mod)
    rewriter = _make_rewriter(mod, activation_dtype(tgt), report)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewriter.scan(func)
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get()), report


# ------------------------------------------------------------------------------------ matching


@dataclass
class _QParams:
    scale: np.ndarray  # float32, scalar or per channel
    zero: np.ndarray  # integer, same shape as scale
    axis: int
    dtype: str  # the quantised tensor's dtype


@dataclass
class _Layer:
    kind: str  # "conv2d" | "matmul"
    call: Any  # the float conv2d/matmul
    x: Any  # the quantised activation (a Relax expr)
    xq: _QParams
    w: np.ndarray  # int8 weight, conv OIHW or matmul [K, N]
    wq: _QParams  # weight scale per output channel (flattened to [C_out])
    bias: np.ndarray | None  # float, per output channel
    lo: float  # activation clamp bounds in float (ReLU/clip), -inf/inf when none
    hi: float


def _op_name(e) -> str:
    return getattr(getattr(e, "op", None), "name", "")


def _make_rewriter(mod, act_dtype: str, report: Int8Report):
    import tvm
    from tvm import relax

    op = relax.op

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.bindings: dict = {}
            self.uses: dict = {}
            self.shifts: list = []  # (activation, its copy in the dot product's dtype, the shift)

        def scan(self, func):
            for block in func.body.blocks:
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding):
                        self.bindings[b.var] = b.value
                        for v in relax.analysis.free_vars(b.value):
                            self.uses.setdefault(v, []).append(b.var)
            for v in relax.analysis.free_vars(func.body.body):
                self.uses.setdefault(v, []).append(None)

        # ---------------------------------------------------------------- helpers
        def value(self, e):
            for _ in range(64):
                if isinstance(e, relax.Var) and e in self.bindings:
                    e = self.bindings[e]
                else:
                    break
            return e

        def sole(self, var) -> bool:
            """``var`` is internal to its dataflow block and has exactly one user."""
            return isinstance(var, relax.DataflowVar) and len(self.uses.get(var, [])) == 1 and self.uses[var][0] is not None

        def const(self, e) -> np.ndarray | None:
            e = self.value(e)
            if isinstance(e, tvm.ir.GenericConst):
                return e.value.numpy()
            # The frontend's Clip bounds: where(isnan(c), ±inf, c).
            if _op_name(e) == "relax.isnan":
                inner = self.const(e.args[0])
                return None if inner is None else np.isnan(inner)
            if _op_name(e) == "relax.where":
                parts = [self.const(a) for a in e.args]
                return None if any(p is None for p in parts) else np.where(*parts)
            if _op_name(e) in ("relax.reshape", "relax.permute_dims"):
                inner = self.const(e.args[0])
                if inner is None:
                    return None
                if e.op.name == "relax.reshape":
                    return inner.reshape([int(d) for d in e.ty.shape])
                axes = e.attrs.axes
                return np.transpose(inner, None if axes is None else [int(a) for a in axes])
            if _op_name(e) == "relax.dequantize":
                q = self.qparams(e)
                raw = self.const(e.args[0])
                if q is None or raw is None:
                    return None
                shape = [1] * raw.ndim
                if q.scale.size > 1:
                    shape[q.axis] = -1
                return ((raw.astype(np.float64) - q.zero.reshape(shape)) * q.scale.reshape(shape)).astype(np.float32)
            return None

        def qparams(self, call) -> _QParams | None:
            s, z = self.const(call.args[1]), self.const(call.args[2])
            if s is None or z is None:
                return None
            rank = len(call.args[0].ty.shape)
            axis = int(call.attrs.axis)
            return _QParams(s.astype(np.float32).reshape(-1), z.astype(np.int64).reshape(-1), axis % max(rank, 1),
                            str(call.args[0].ty.dtype))

        def dequantized(self, e):
            """(quantised expr, _QParams) when ``e`` is dequantize(x) of a per-tensor int8/uint8 x."""
            d = self.value(e)
            if _op_name(d) != "relax.dequantize":
                return None
            q = self.qparams(d)
            if q is None or q.dtype not in _QRANGE or q.scale.size != 1:
                return None
            return d.args[0], q

        # ---------------------------------------------------------------- rewrite
        def visit_var_binding_(self, binding):
            value = binding.value
            if _op_name(value) == "relax.quantize":
                new = self.rewrite_quantize(value)
                if new is not None:
                    self.set_var_remap(binding.var, self.builder_.emit(new))
                    return
            if _op_name(value) in ("relax.quantize", "relax.dequantize"):
                # What stays float (a residual add, pooling) gets its quantize/dequantize as
                # element-wise ops: layout conversion has no rule for the QDQ ops themselves
                # (each would get transposes around it), element-wise ops keep the packed
                # layout and fuse into the producing conv's epilogue.
                new = self.elementwise_qdq(value)
                if new is not None:
                    # A model output (the final dequantize) must stay visible outside the dataflow block.
                    dataflow = isinstance(binding.var, relax.DataflowVar)
                    self.set_var_remap(binding.var, self.builder_.emit(new) if dataflow else self.builder_.emit_output(new))
                    return
            elif _op_name(value) in _LAYERS and not self.leads_to_quantize(binding.var):
                # A layer whose output stays float (a classifier before softmax): integer
                # product, then one per-channel scale back to float.
                layer = self.match_layer(binding.var, -np.inf, np.inf, bare=True)
                if layer is not None:
                    self.set_var_remap(binding.var, self.builder_.emit(self.emit_layer(layer, None, "float32")))
                    return
            super().visit_var_binding_(binding)

        def shifted(self, x, want: str):
            """``(x + shift as want, shift)``: x in the dot product's activation dtype, made once per
            tensor (a block output feeds the next expand conv and, as the skip, a residual add)."""
            for src, made, shift in self.shifts:
                if src.same_as(x):
                    return made, shift
            shift = 128 if want == "uint8" else -128
            made = self.builder_.emit(op.astype(op.add(op.astype(x, "int16"), relax.const(shift, "int16")), want))
            self.shifts.append((x, made, shift))
            return made, shift

        def feeds_dot_product(self, var) -> bool:
            """Whether a dequantize of ``var`` is the data input of a conv (over channels) or matmul."""
            for user in self.uses.get(var, []):
                if user is None or _op_name(self.value(user)) != "relax.dequantize":
                    continue
                for layer in self.uses.get(user, []):
                    e = None if layer is None else self.value(layer)
                    if _op_name(e) in _LAYERS and e.args[0].same_as(user) and (
                            _op_name(e) == "relax.matmul" or int(e.attrs.groups) == 1):
                        return True
            return False

        def elementwise_qdq(self, call):
            """A per-tensor quantize/dequantize as the element-wise ops TVM legalizes it to."""
            q = self.qparams(call)
            if q is None or q.scale.size != 1:
                return None
            x = self.visit_expr(call.args[0])
            if call.op.name == "relax.dequantize":
                if q.dtype not in _QRANGE or str(call.ty.dtype) != "float32":
                    return None
                zero = int(q.zero[0])
                # Read the shifted copy when a dot-product layer needs one anyway: the same values, and
                # the unshifted tensor's only reader is then the shift, which fuses into the kernel
                # that makes it (instead of a kernel of its own).
                if q.dtype != act_dtype and self.feeds_dot_product(call.args[0]):
                    x, shift = self.shifted(x, act_dtype)
                    zero += shift
                return dequantize_ops(x, zero, np.float32(q.scale[0]))
            out_dtype = str(call.ty.dtype)
            if out_dtype not in _QRANGE or str(call.args[0].ty.dtype) != "float32":
                return None
            return quantize_ops(x, np.float32(q.scale[0]), int(q.zero[0]), *_QRANGE[out_dtype], out_dtype)

        def leads_to_quantize(self, var) -> bool:
            """Whether ``var`` reaches a quantize through single-use bias adds and clamps
            (then ``rewrite_quantize`` makes the whole chain integer)."""
            for _ in range(8):
                users = self.uses.get(var, [])
                if len(users) != 1 or users[0] is None:
                    return False
                var = users[0]
                name = _op_name(self.value(var))
                if name == "relax.quantize":
                    return True
                if name not in ("relax.add", "relax.nn.relu", "relax.maximum", "relax.minimum", "relax.call_tir"):
                    return False
            return False

        def rewrite_quantize(self, qcall):
            yq = self.qparams(qcall)
            out_dtype = str(qcall.ty.dtype)
            if yq is None or yq.scale.size != 1 or out_dtype not in _QRANGE:
                return None
            var, lo, hi = self.activation(qcall.args[0])
            if var is None:
                return None
            produced = self.value(var)
            name = _op_name(produced)
            # quantize(clamp(f(dequantize(a)))) at an unchanged scale: f and the clamp on the integers.
            if name == "relax.dequantize" or (name in _PASS_THROUGH and not np.isfinite([lo, hi]).any() and self.sole(var)):
                src = var if name == "relax.dequantize" else produced.args[0]
                dq = self.dequantized(src) if (name == "relax.dequantize" or self.sole(src)) else None
                if dq is not None and _same(dq[1], yq) and dq[1].dtype == out_dtype:
                    a = self.visit_expr(dq[0])
                    report.passthrough += 1
                    if name != "relax.dequantize":
                        return relax.Call(produced.op, [a, *produced.args[1:]], produced.attrs, produced.ty_args)
                    qlo, qhi = _bounds(lo, hi, yq, out_dtype)
                    if qlo > _QRANGE[out_dtype][0]:
                        a = op.maximum(a, relax.const(qlo, out_dtype))
                    if qhi < _QRANGE[out_dtype][1]:
                        a = op.minimum(a, relax.const(qhi, out_dtype))
                    return a
            layer = self.match_layer(var, lo, hi)
            if layer is None:
                if name and name != "relax.dequantize":
                    report.skipped.append(f"{name.removeprefix('relax.')}: no integer form here")
                return None
            return self.emit_layer(layer, yq, out_dtype)

        def minmax(self, v):
            """("max"|"min", x, bound) for maximum/minimum by a scalar constant (Relax op or the frontend's call_tir)."""
            name = _op_name(v)
            if name in ("relax.maximum", "relax.minimum"):
                x, b = v.args
                kind = name.removeprefix("relax.")[:3]
            elif name == "relax.call_tir" and isinstance(v.args[1], relax.Tuple) and len(v.args[1].fields) == 2:
                kind = getattr(v.args[0], "name_hint", "").rstrip("0123456789")[:3]
                x, b = v.args[1].fields
            else:
                return None
            c = self.const(b)
            if kind not in ("max", "min") or c is None or c.size != 1:
                return None
            return kind, x, float(c.reshape(()))

        def activation(self, var):
            """Peel ReLU/clip (max/min by constants) off ``var``: (inner var, lo, hi); (None, ..) if not single-use."""
            lo, hi = -np.inf, np.inf
            for _ in range(4):
                v = self.value(var)
                mm = self.minmax(v)
                if _op_name(v) != "relax.nn.relu" and mm is None:
                    break
                if not (isinstance(var, relax.Var) and self.sole(var)):
                    return None, lo, hi
                if mm is None:
                    lo, var = max(lo, 0.0), v.args[0]
                else:
                    kind, var, c = mm
                    lo, hi = (max(lo, c), hi) if kind == "max" else (lo, min(hi, c))
            return (var if isinstance(var, relax.Var) else None), lo, hi

        def match_layer(self, var, lo: float, hi: float, bare: bool = False) -> _Layer | None:
            """``var`` = [bias add of] a conv/matmul of a dequantized activation and a dequantized int8 weight.

            ``bare``: ``var`` is the conv/matmul itself, and may have any number of users.
            """
            bias = None
            if not bare and not self.sole(var):
                return None
            v = self.value(var)
            if _op_name(v) == "relax.add" and not bare:
                a, b = v.args
                for core, other in ((a, b), (b, a)):
                    c = self.const(other)
                    if c is not None and isinstance(core, relax.Var) and _op_name(self.value(core)) in _LAYERS:
                        bias, var = c, core
                        break
                else:
                    return None
                if not self.sole(var):
                    return None
                v = self.value(var)
            kind = _LAYERS.get(_op_name(v))
            if kind is None:
                return None
            dq = self.dequantized(v.args[0])
            if dq is None:
                return None
            wexpr = self.value(v.args[1])
            transpose = False
            if kind == "matmul" and _op_name(wexpr) == "relax.permute_dims":
                axes = wexpr.attrs.axes
                if axes is not None and [int(a) for a in axes] != [1, 0]:
                    return None
                transpose, wexpr = True, self.value(wexpr.args[0])
            if _op_name(wexpr) != "relax.dequantize":
                return None
            wq = self.qparams(wexpr)
            w = self.const(wexpr.args[0])
            if wq is None or w is None or w.dtype != np.int8 or np.any(wq.zero != 0):
                return None  # asymmetric weights would need a per-pixel correction: leave float
            if kind != "matmul":
                a = v.attrs
                layouts = {"conv1d": ("NCW", "OIW"), "conv2d": ("NCHW", "OIHW")}[kind]
                if (a.data_layout, a.kernel_layout, a.out_layout or a.data_layout) != (*layouts, layouts[0]):
                    return None
                if wq.scale.size not in (1, w.shape[0]) or (wq.scale.size > 1 and wq.axis != 0):
                    return None
                cout = w.shape[0]
            else:
                if w.ndim != 2 or len(v.args[0].ty.shape) < 1:
                    return None
                # Output channels are the weight's rows when it is transposed (Gemm transB).
                per_axis = 0 if transpose else 1
                if wq.scale.size not in (1, w.shape[per_axis]) or (wq.scale.size > 1 and wq.axis != per_axis):
                    return None
                w = np.ascontiguousarray(w.T) if transpose else w
                cout = w.shape[1]
            scale = np.broadcast_to(wq.scale, (cout,)).astype(np.float32)
            if bias is not None:
                if bias.size != cout:
                    return None
                bias = bias.reshape(-1).astype(np.float64)
            return _Layer(kind, v, dq[0], dq[1], w, _QParams(scale, np.zeros(cout, np.int64), 0, "int8"), bias, lo, hi)

        def emit_layer(self, layer: _Layer, yq: _QParams | None, out_dtype: str):
            if layer.kind != "matmul" and int(layer.call.attrs.groups) == 1 and layer.w.shape[1] == 1:
                return self.emit_float_layer(layer, yq, out_dtype)
            x = self.visit_expr(layer.x)
            zx = int(layer.xq.zero[0])
            want = act_dtype
            depthwise = layer.kind != "matmul" and int(layer.call.attrs.groups) > 1
            if depthwise:
                want = layer.xq.dtype  # no dot product over channels: keep the model's dtype
            if layer.xq.dtype != want:
                x, shift = self.shifted(x, want)
                zx += shift
            w = layer.w
            if layer.kind != "matmul":
                a = layer.call.attrs
                pad = [int(p) for p in a.padding]
                spatial = w.ndim - 2
                wsum = w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1)
                # The dot-product instructions sum 4 input channels at a time: a plain conv with,
                # say, 3 (an RGB stem) gets a 4th of zero weights instead of the generic kernel.
                extra = -w.shape[1] % 4 if int(a.groups) == 1 else 0
                if extra:
                    w = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), np.int8)], axis=1)
                if extra or (zx != 0 and any(pad)):
                    # Padding must hold the zero point (the value of 0.0), not 0: ONNX pads are
                    # (begin..., end...), nn.pad wants (begin, end) per axis.
                    explicit = zx != 0 and any(pad)
                    widths = [0, 0, 0, extra] + [
                        p if explicit else 0 for i in range(spatial) for p in (pad[i], pad[i + spatial])
                    ]
                    x = self.builder_.emit(op.nn.pad(x, widths, pad_value=float(zx)))
                    pad = [0] * len(pad) if explicit else pad
                conv = op.nn.conv2d if layer.kind == "conv2d" else op.nn.conv1d
                acc = conv(x, relax.const(w), strides=a.strides, padding=pad, dilation=a.dilation, groups=a.groups,
                           out_dtype="int32")
                shape = (1, -1) + (1,) * spatial
            else:
                acc = op.matmul(x, relax.const(w), out_dtype="int32")
                wsum = w.astype(np.int64).sum(axis=0)
                shape = (-1,)
            acc = self.builder_.emit(acc)
            sx = np.float32(layer.xq.scale[0])
            sw = layer.wq.scale.astype(np.float32)
            layer_info = {"op": layer.kind, "weight": list(w.shape), "groups": int(layer.call.attrs.groups)
                          if layer.kind != "matmul" else 1, "activation": x.ty.dtype if hasattr(x, "ty") else want}
            if yq is None:  # float output: the frontend's bias add (if any) follows as it is
                report.layers.append({**layer_info, "output": "float32"})
                y = op.astype(op.add(acc, relax.const((-zx * wsum).astype(np.int32).reshape(shape))), "float32")
                return op.multiply(y, relax.const((sx * sw).astype(np.float32).reshape(shape)))
            # As onnxruntime's QLinearConv/MatMul do (so outputs agree bit for bit where its
            # kernels run): integer bias and zero-point correction, then one float32 multiply,
            # round half to even, add zy, clamp.
            sy, zy = np.float32(yq.scale[0]), int(yq.zero[0])
            mult = (sx * sw) / sy
            bias_q = np.zeros(len(sw)) if layer.bias is None else np.round(layer.bias / (sx * sw).astype(np.float64))
            correction = (bias_q - zx * wsum).astype(np.int32)
            lo, hi = _bounds(layer.lo, layer.hi, yq, out_dtype)
            y = op.astype(op.add(acc, relax.const(correction.reshape(shape))), "float32")
            y = op.round(op.multiply(y, relax.const(mult.reshape(shape))))
            if zy:
                y = op.add(y, relax.const(float(zy), "float32"))
            y = op.minimum(op.maximum(y, relax.const(float(lo), "float32")), relax.const(float(hi), "float32"))
            report.layers.append(layer_info)
            return op.astype(y, out_dtype)

        def emit_float_layer(self, layer: _Layer, yq: _QParams | None, out_dtype: str):
            """A conv with one input channel (a grey-image or mono-signal stem), in float32.

            With one input channel there is nothing for the dot-product instructions to sum
            over: the integer form pads the channels to 4 (3 of zeros) and needs a
            pad-and-transpose kernel for the quantised input; mobilenetv2_digits' stem took
            3.4 us that way against 0.9 us for the float conv. Here the quantised input is
            dequantized (one element-wise kernel, which keeps the QDQ model's rounding), the
            weights are the dequantized int8 ones, and the output is requantized as the
            integer layers do.
            """
            xf = dequantize_ops(self.visit_expr(layer.x), int(layer.xq.zero[0]), np.float32(layer.xq.scale[0]))
            sw = layer.wq.scale.astype(np.float32)
            w = (layer.w.astype(np.float32) * sw.reshape((-1,) + (1,) * (layer.w.ndim - 1))).astype(np.float32)
            a = layer.call.attrs
            conv = op.nn.conv2d if layer.kind == "conv2d" else op.nn.conv1d
            y = conv(xf, relax.const(w), strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                     out_dtype="float32")
            shape = (1, -1) + (1,) * (layer.w.ndim - 2)
            report.skipped.append(f"{layer.kind} {list(layer.w.shape)}: one input channel, "
                                  "float32 on the dequantized int8 weights (the integer form would pad 3 channels)")
            if yq is None:  # float output: the frontend's bias add (if any) follows as it is
                return y
            if layer.bias is not None:
                y = op.add(y, relax.const(layer.bias.astype(np.float32).reshape(shape)))
            return quantize_ops(y, np.float32(yq.scale[0]), int(yq.zero[0]), *_bounds(layer.lo, layer.hi, yq, out_dtype),
                                out_dtype)

    return Rewriter(mod)


def dequantize_ops(x, zero: int, scale: np.float32):
    """``(x - zero) * scale`` in float32, as Relax element-wise ops (TVM's dequantize, exactly)."""
    from tvm import relax

    op = relax.op
    xf = op.astype(x, "float32")
    if zero:
        xf = op.subtract(xf, relax.const(float(zero), "float32"))
    return op.multiply(xf, relax.const(scale, "float32"))


def quantize_ops(y, scale: np.float32, zero: int, lo: int, hi: int, dtype: str):
    """``clamp(round(y / scale) + zero, lo, hi)`` as Relax element-wise ops (as QuantizeLinear: a
    division, rounding half to even)."""
    from tvm import relax

    op = relax.op
    y = op.round(op.divide(y, relax.const(scale, "float32")))
    if zero:
        y = op.add(y, relax.const(float(zero), "float32"))
    y = op.minimum(op.maximum(y, relax.const(float(lo), "float32")), relax.const(float(hi), "float32"))
    return op.astype(y, dtype)


def _same(a: _QParams, b: _QParams) -> bool:
    return a.scale.size == b.scale.size == 1 and np.allclose(a.scale, b.scale, rtol=1e-6, atol=0) and np.array_equal(a.zero, b.zero)


def _bounds(lo: float, hi: float, yq: _QParams, dtype: str) -> tuple[int, int]:
    """Float clamp bounds (ReLU/clip) as quantised values, within the dtype's range."""
    qlo, qhi = _QRANGE[dtype]
    s, z = float(yq.scale[0]), int(yq.zero[0])
    lo_q = qlo if not np.isfinite(lo) else max(qlo, int(np.round(lo / s)) + z)
    hi_q = qhi if not np.isfinite(hi) else min(qhi, int(np.round(hi / s)) + z)
    return lo_q, hi_q
