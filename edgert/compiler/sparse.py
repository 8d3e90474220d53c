"""Sparse kernels for pruned weights: a Relax pass that routes conv2d and matmul layers whose
constant weight is mostly zeros to hand-scheduled TIR kernels (TVM 0.27 has no sparse operators).

``sparsify(mod, tgt)`` runs on the module exactly as ``from_onnx(..., keep_params_in_input=False)``
gives it (weights bound as constants), before layout conversion, legalization and fusion.

The kernel is a direct sparse convolution over a CSR weight (Elsen et al., "Fast Sparse
ConvNets"): for output channel ``co`` and each nonzero ``(ci, kh, kw)`` of its row,

    out[n, co, oh:oh+R, ow:ow+TW] += w * in_padded[n, ci, oh*s + kh*d.., ow*s + kw*d..]

with an ``R x TW`` register tile of outputs (TW a power of two: LLVM splits odd vector widths
into slow code), parallel over blocks of output rows (the input rows of a block stay in cache
while every output channel reads them). Each nonzero is stored as its value and its flat offset
into the padded (for strides, phase-split) input, so the inner loop is one broadcast and ``R*TW/lanes`` FMAs. A matmul
``x[M, K] @ W[K, N]`` is the same kernel as a 1x1 convolution over an ``M``-pixel image
(x transposed to ``[K, M]``). Bias add and ReLU that follow a layer are fused into its store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgert.errors import CompileError

__all__ = ["SparseError", "SparseLayer", "SparseReport", "sparsify", "conv2d_csr", "estimate_speedup"]

# Cost model, calibrated on this project's x86 host (AMD EPYC znver3, AVX2, 1 thread; the machine
# was shared, so figures vary by ~30%) against onnxruntime's dense conv, the best dense kernel at
# hand (ms per layer, batch 1, 3x3, pad 1):
#   layer (MACs ~231M / ~58M strided)   dense ORT   sparse 50%   70%    80%    90%    95%
#   64->64 @56                          2.8         8.4          7.0    1.9    0.9    0.85
#   64->128 @56 stride 2                n/m         3.4          2.3    1.3    0.9    0.32
#   128->128 @28                        2.7         8.0          3.7    2.0    1.5    0.50
#   256->256 @14                        3.2         3.2          -      2.4    1.1    0.53
# so break-even is near 70-75% zeros: one stored nonzero costs ~_NZ_COST dense multiply-adds, plus
# ~_OUT_COST per output element (zeroing, bias/ReLU store, loop overhead). The sparse kernel is
# used when estimated faster than the dense layer by _MIN_GAIN.
_NZ_COST = 3.0
_OUT_COST = 8.0
_MIN_GAIN = 1.1
# Below this many multiply-adds the layer's time is launch overhead: not worth a kernel of its own.
_MIN_MACS = 4096


class SparseError(CompileError):
    """The sparse pass was given an invalid setting."""


@dataclass(frozen=True)
class SparseLayer:
    """What the pass decided for one conv2d/matmul with a constant weight."""

    name: str
    op: str  # "conv2d" | "matmul"
    weight_shape: tuple[int, ...]
    sparsity: float  # fraction of exactly-zero weights
    format: str  # "csr" when rewritten, "dense" when left alone
    chosen: bool
    reason: str
    fused: tuple[str, ...] = ()  # epilogue ops folded into the kernel ("bias", "relu")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "op": self.op, "weight_shape": list(self.weight_shape), "sparsity": round(self.sparsity, 4),
            "format": self.format, "chosen": self.chosen, "reason": self.reason, "fused": list(self.fused),
        }


@dataclass
class SparseReport:
    layers: list[SparseLayer] = field(default_factory=list)

    @property
    def sparse_count(self) -> int:
        return sum(1 for layer in self.layers if layer.chosen)

    @property
    def dense_count(self) -> int:
        return sum(1 for layer in self.layers if not layer.chosen)

    def to_json(self) -> dict[str, Any]:
        return {"sparse": self.sparse_count, "dense": self.dense_count, "layers": [x.to_json() for x in self.layers]}

    def summary(self) -> str:
        lines = [f"sparse kernels: {self.sparse_count} of {len(self.layers)} layers"]
        for x in self.layers:
            shape = "x".join(map(str, x.weight_shape))
            fused = f" (+{'+'.join(x.fused)})" if x.fused else ""
            lines.append(f"  {x.name:<12} {shape:<16} {x.sparsity:6.1%}  {x.format:<5} {x.reason}{fused}")
        return "\n".join(lines)


def estimate_speedup(nnz_per_row: float, dense_macs_per_out: int) -> float:
    """Estimated dense/sparse time ratio of a layer (see the calibration above).

    ``nnz_per_row``: stored nonzeros per output channel; ``dense_macs_per_out``: multiply-adds per
    output element of the dense layer (C*KH*KW for a conv, K for a matmul).
    """
    sparse = _NZ_COST * nnz_per_row + _OUT_COST
    return dense_macs_per_out / sparse if sparse else float("inf")


# ---------------------------------------------------------------------------------- the kernel


@dataclass(frozen=True)
class _Conv:
    """Static shape of one sparse convolution (NCHW input, OIHW weight)."""

    n: int
    c: int
    h: int
    w: int
    co: int
    kh: int
    kw: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]  # top, left, bottom, right

    @property
    def out_hw(self) -> tuple[int, int]:
        (sh, sw), (dh, dw), (pt, pl, pb, pr) = self.stride, self.dilation, self.pad
        return ((self.h + pt + pb - (self.kh - 1) * dh - 1) // sh + 1, (self.w + pl + pr - (self.kw - 1) * dw - 1) // sw + 1)

    @property
    def staged(self) -> bool:
        """Whether the kernel first copies the input into its scratch layout (padding or stride)."""
        return any(self.pad) or self.stride != (1, 1)

    @property
    def phase_hw(self) -> tuple[int, int]:
        """(HS, WS): rows and columns of one stride phase of the padded input."""
        pt, pl, pb, pr = self.pad
        (sh, sw) = self.stride
        return -(-(self.h + pt + pb) // sh), -(-(self.w + pl + pr) // sw)

    @property
    def image_size(self) -> int:
        """Elements of one image in the layout the kernel reads."""
        hs, ws = self.phase_hw
        return self.c * self.stride[0] * self.stride[1] * hs * ws if self.staged else self.c * self.h * self.w


def _tiles(oh: int, ow: int, lanes: int, acc_regs: int) -> tuple[int, int]:
    """(R, TW): rows and columns of the register tile of outputs."""
    # Powers of two only: LLVM turns e.g. a 56-wide float vector into shuffles (2-4x slower here).
    cands = [t for t in (1, 2, 4, 8, 16) if t <= ow and t <= 2 * lanes] or [1]
    # Cost: vector ops per row (a partial vector costs one) plus loop overhead per tile.
    tw = min(cands, key=lambda t: (-(-ow // t) * (-(-t // lanes) + 0.5), -t))
    r = max(1, min(oh, acc_regs * lanes // tw))
    return r, tw


def conv2d_csr(spec: _Conv, nnz: int, relu: bool, lanes: int, acc_regs: int, threads: int = 2):
    """The PrimFunc ``(x, vals, offs, indptr, bias, y, scratch)`` of a sparse convolution.

    ``scratch`` holds the input zero-padded and split into stride phases, ``[N, C, SH, SW, HS, WS]``
    with ``scratch[.., ph, pw, i, j] = padded[.., i*SH + ph, j*SW + pw]``: a strided conv then reads
    consecutive outputs from consecutive addresses (a plain vector load, not a gather). It is a call
    output (one element when unused) so that Relax plans its memory once instead of the kernel
    allocating, and page-faulting, it on every call.
    """
    from tvm.script import tirx as T

    N, C, H, W, CO = spec.n, spec.c, spec.h, spec.w, spec.co
    (SH, SW), (PT, PL, _, _) = spec.stride, spec.pad
    OH, OW = spec.out_hw
    HS, WS = spec.phase_hw if spec.staged else (H, W)
    R, TW = _tiles(OH, OW, lanes, acc_regs)
    NRT = -(-OH // R)  # row tiles
    RB = max(1, round(NRT / (4 * threads)))  # row tiles per parallel block (their input rows stay in cache)
    NOB = -(-NRT // RB)
    NOW = -(-OW // TW)
    IMG = spec.image_size
    PH = HS * WS  # one phase plane
    STAGED = spec.staged
    PSZ = N * IMG if STAGED else 1
    # Few row blocks (a matmul with one row, a 1x1 image): parallel over output channels instead.
    BY_ROWS = N * NOB >= 2 * threads
    NNZ = max(nnz, 1)
    RELU = bool(relu)

    @T.macro
    def tile(src, vals, offs, indptr, bias, y, n, co, rt):
        # Tiles past the edge are shifted back to end at it: they recompute outputs, never read out of bounds.
        for owt in T.serial(NOW):
            acc = T.alloc_buffer((R * TW,), "float32", scope="local")
            for r in T.unroll(R):
                for t in T.vectorized(TW):
                    acc[r * TW + t] = T.float32(0)
            for j in T.serial(indptr[co], indptr[co + 1]):
                for r in T.unroll(R):
                    for t in T.vectorized(TW):
                        acc[r * TW + t] = acc[r * TW + t] + vals[j] * src[
                            n * IMG + offs[j] + (T.min(rt * R, OH - R) + r) * WS + T.min(owt * TW, OW - TW) + t
                        ]
            for r in T.unroll(R):
                for t in T.vectorized(TW):
                    if RELU:
                        y[n, co, T.min(rt * R, OH - R) + r, T.min(owt * TW, OW - TW) + t] = T.max(
                            acc[r * TW + t] + bias[co], T.float32(0)
                        )
                    else:
                        y[n, co, T.min(rt * R, OH - R) + r, T.min(owt * TW, OW - TW) + t] = acc[r * TW + t] + bias[co]

    @T.macro
    def body(src, vals, offs, indptr, bias, y):
        if BY_ROWS:
            for nb in T.parallel(N * NOB):
                for co in T.serial(CO):
                    for rb in T.serial(RB):
                        tile(src, vals, offs, indptr, bias, y, nb // NOB, co, T.min((nb % NOB) * RB + rb, NRT - 1))
        else:
            for co in T.parallel(CO):
                for n in T.serial(N):
                    for rt in T.serial(NRT):
                        tile(src, vals, offs, indptr, bias, y, n, co, rt)

    @T.prim_func
    def sparse_conv2d(
        x: T.Buffer((N, C, H, W), "float32"),
        vals: T.Buffer((NNZ,), "float32"),
        offs: T.Buffer((NNZ,), "int32"),
        indptr: T.Buffer((CO + 1,), "int32"),
        bias: T.Buffer((CO,), "float32"),
        y: T.Buffer((N, CO, OH, OW), "float32"),
        scratch: T.Buffer((PSZ,), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        if STAGED:
            for nc in T.parallel(N * C):
                for i in T.serial(SH * SW * PH):
                    scratch[nc * SH * SW * PH + i] = T.float32(0)
                for h in T.serial(H):
                    if SW == 1:
                        for w in T.vectorized(W):
                            scratch[nc * SH * PH + ((h + PT) % SH) * PH + ((h + PT) // SH) * WS + w + PL] = x[nc // C, nc % C, h, w]
                    else:
                        for w in T.serial(W):
                            scratch[
                                nc * SH * SW * PH + (((h + PT) % SH) * SW + (w + PL) % SW) * PH + ((h + PT) // SH) * WS + (w + PL) // SW
                            ] = x[nc // C, nc % C, h, w]
            body(scratch, vals, offs, indptr, bias, y)
        else:
            xf = T.decl_buffer((N * C * H * W,), "float32", data=x.data)
            body(xf, vals, offs, indptr, bias, y)

    return sparse_conv2d


def conv_weight_csr(weight: np.ndarray, spec: _Conv) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vals, offs, indptr): CSR rows per output channel, each nonzero's flat offset in the kernel's input layout."""
    co, ci, kh, kw = np.nonzero(weight)  # row-major: grouped by co, then ci, kh, kw (input order)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    hs, ws = spec.phase_hw if spec.staged else (spec.h, spec.w)
    ry, rx = kh * dh, kw * dw  # tap position in the padded input
    offs = ci * (sh * sw * hs * ws) + ((ry % sh) * sw + rx % sw) * (hs * ws) + (ry // sh) * ws + rx // sw
    vals = weight[co, ci, kh, kw].astype("float32")
    indptr = np.zeros(weight.shape[0] + 1, "int32")
    np.cumsum(np.bincount(co, minlength=weight.shape[0]), out=indptr[1:])
    if vals.size == 0:  # an all-zero weight: the kernel still needs one (unread) element
        return np.zeros(1, "float32"), np.zeros(1, "int32"), indptr
    return vals, offs.astype("int32"), indptr


# ---------------------------------------------------------------------------------- the pass


def _lanes_and_regs(tgt) -> tuple[int, int]:
    """Float lanes of the target's vectors and how many vector registers the accumulator tile may use."""
    bits = getattr(tgt, "vector_bits", 0) or 256
    arch = getattr(tgt, "arch", "x86_64")
    lanes = max(1, bits // 32)
    # x86 AVX2 has 16 vector registers, aarch64 NEON 32: keep a few for the broadcast and loads.
    return lanes, (20 if arch == "aarch64" else 7)


def sparsify(mod, tgt, min_sparsity: float | None = None):
    """Route conv2d/matmul layers with a sparse constant weight to sparse TIR kernels.

    Args:
        mod: a Relax IRModule as ``from_onnx(..., keep_params_in_input=False)`` returns it
            (weights bound as constants; convs NCHW/OIHW).
        tgt: the edgert ``Target`` compiled for (its vector width and architecture size the tiles).
        min_sparsity: use the sparse kernel for every eligible layer whose fraction of zero
            weights is at least this (0..1); ``None`` decides per layer with the cost model above.

    Returns:
        ``(new_mod, SparseReport)``; ``new_mod`` holds ``call_tir`` to PrimFuncs marked
        ``tirx.is_scheduled`` (later default schedules must leave them alone). Layers that are not
        rewritten are left exactly as they were, and the report says why.
    """
    if min_sparsity is not None and not 0.0 <= float(min_sparsity) <= 1.0:
        raise SparseError(f"min_sparsity must be between 0 and 1, got {min_sparsity}; e.g. 0.8 for 80% zero weights")
    from tvm import relax

    lanes, acc_regs = _lanes_and_regs(tgt)
    threads = getattr(tgt, "cores", None) or 2
    report = SparseReport()
    rewriter = _make_rewriter(mod, lanes, acc_regs, threads, min_sparsity, report)
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewriter.plan(func)
            new_func = rewriter.visit_expr(func)
            rewriter.builder_.update_func(gvar, new_func)
    new_mod = relax.transform.DeadCodeElimination()(rewriter.builder_.get())  # the absorbed bias reshapes
    return new_mod, report


@dataclass
class _Plan:
    """One layer to rewrite: its inputs, and which bindings it absorbs."""

    kind: str  # "conv2d" | "matmul"
    data: Any  # the Relax input expression
    weight: np.ndarray
    bias: np.ndarray | None
    relu: bool
    attrs: Any
    out_var: Any  # the var whose binding becomes the kernel call
    layer: int  # index into report.layers


def _make_rewriter(mod, lanes, acc_regs, threads, min_sparsity, report):
    from tvm import relax

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            self.plans: dict[Any, _Plan] = {}
            self.absorbed: set = set()
            self.counter = {"conv2d": 0, "matmul": 0}

        # -------------------------------------------------------------- analysis
        def plan(self, func):
            bindings, uses = {}, {}
            for block in func.body.blocks:
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding):
                        bindings[b.var] = b.value
                        for v in relax.analysis.free_vars(b.value):
                            uses.setdefault(v, []).append(b.var)
            for v in relax.analysis.free_vars(func.body.body):
                uses.setdefault(v, []).append(None)
            for block in func.body.blocks:
                for b in block.bindings:
                    if isinstance(b, relax.VarBinding) and isinstance(b.value, relax.Call):
                        self._consider(b.var, b.value, bindings, uses)

        def _consider(self, var, call, bindings, uses):
            op = getattr(call.op, "name", "")
            if op == "relax.nn.conv2d":
                kind = "conv2d"
            elif op == "relax.matmul":
                kind = "matmul"
            else:
                return
            name = f"{kind}_{self.counter[kind]}"
            self.counter[kind] += 1
            weight = _const_value(call.args[1], bindings)
            if weight is None:
                if kind == "matmul" and _const_value(call.args[0], bindings) is not None:
                    self._skip(name, kind, (), 0.0, "the constant is the left operand (W @ x): no sparse kernel for that form")
                return  # an activation x activation matmul: not a weight layer, not reported
            sparsity = float(np.mean(weight == 0)) if weight.size else 0.0
            why = _unsupported(kind, call, weight)
            if why:
                self._skip(name, kind, weight.shape, sparsity, why)
                return
            data_shape = [int(d) for d in call.args[0].ty.shape]
            if kind == "conv2d":
                per_out, n_out = int(np.prod(weight.shape[1:])), int(np.prod(call.ty.shape))
                nnz_row = np.count_nonzero(weight) / weight.shape[0]
            else:
                per_out, n_out = weight.shape[0], int(np.prod(data_shape[:-1])) * weight.shape[1]
                nnz_row = np.count_nonzero(weight) / weight.shape[1]
            if min_sparsity is not None:
                chosen = sparsity >= min_sparsity
                reason = f"sparsity {sparsity:.1%} {'>=' if chosen else '<'} min_sparsity {min_sparsity:.1%}"
            elif per_out * n_out < _MIN_MACS:
                chosen, reason = False, f"only {per_out * n_out} multiply-adds: too small to gain"
            else:
                gain = estimate_speedup(nnz_row, per_out)
                chosen = gain >= _MIN_GAIN
                reason = f"estimated {gain:.1f}x vs dense at {sparsity:.1%} zeros ({'>=' if chosen else '<'} {_MIN_GAIN}x)"
            if not chosen:
                self._skip(name, kind, weight.shape, sparsity, reason)
                return
            # Epilogue: a per-channel constant add, then ReLU, each the only user of the one before.
            out_var, bias, relu, fused = var, None, False, []
            nxt = _sole_user(out_var, uses, bindings)
            if nxt is not None:
                b = _channel_bias(bindings[nxt], out_var, bindings, kind, weight.shape[0] if kind == "conv2d" else weight.shape[1])
                if b is not None:
                    self.absorbed.add(out_var)
                    out_var, bias = nxt, b
                    fused.append("bias")
            nxt = _sole_user(out_var, uses, bindings)
            if nxt is not None and getattr(bindings[nxt].op, "name", "") == "relax.nn.relu":
                self.absorbed.add(out_var)
                out_var, relu = nxt, True
                fused.append("relu")
            report.layers.append(SparseLayer(name, kind, tuple(weight.shape), sparsity, "csr", True, reason, tuple(fused)))
            self.plans[out_var] = _Plan(kind, call.args[0], weight, bias, relu, call.attrs, out_var, len(report.layers) - 1)

        def _skip(self, name, kind, shape, sparsity, reason):
            report.layers.append(SparseLayer(name, kind, tuple(int(d) for d in shape), sparsity, "dense", False, reason))

        # -------------------------------------------------------------- rewrite
        def visit_var_binding_(self, binding):
            if binding.var in self.absorbed:
                return  # folded into the kernel call that replaces its sole user
            plan = self.plans.get(binding.var)
            if plan is None:
                super().visit_var_binding_(binding)
                return
            data = self.visit_expr(plan.data)
            value = self._conv(plan, data) if plan.kind == "conv2d" else self._matmul(plan, data)
            emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
            new_var = emit(value, name_hint=binding.var.name)
            self.set_var_remap(binding.var, new_var)

        def _kernel(self, data, weight, spec, bias, relu, name):
            """Emit the call of the sparse conv kernel on ``data`` (NCHW); returns the output expression."""
            vals, offs, indptr = conv_weight_csr(weight, spec)
            func = conv2d_csr(spec, int(np.count_nonzero(weight)), relu, lanes, acc_regs, threads)
            # A private function: the module names it after its unique GlobalVar.
            gvar = self.builder_.add_func(func.without_attr("global_symbol"), name)
            bias = np.zeros(spec.co, "float32") if bias is None else bias.astype("float32")
            oh, ow = spec.out_hw
            psz = spec.n * spec.image_size if spec.staged else 1
            out = self.builder_.emit(
                relax.call_tir(
                    gvar,
                    [data, *(relax.const(a) for a in (vals, offs, indptr, bias))],
                    out_ty=[
                        relax.TensorType((spec.n, spec.co, oh, ow), "float32"),
                        relax.TensorType((psz,), "float32"),
                    ],
                )
            )
            return relax.TupleGetItem(out, 0)

        def _conv(self, plan, data):
            a = plan.attrs
            n, c, h, w = (int(d) for d in plan.data.ty.shape)
            co, _, kh, kw = plan.weight.shape
            pad = tuple(int(p) for p in a.padding)
            spec = _Conv(n, c, h, w, co, kh, kw, tuple(int(s) for s in a.strides), tuple(int(d) for d in a.dilation), pad)
            return self._kernel(data, plan.weight, spec, plan.bias, plan.relu, f"sparse_conv2d_{kh}x{kw}")

        def _matmul(self, plan, data):
            from tvm.relax import op

            shape = [int(d) for d in plan.data.ty.shape]
            k, n_out = plan.weight.shape
            m = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            # x[M, K] @ W[K, N] == a 1x1 conv of W^T over the M-pixel image x^T[K, M].
            x2 = self.builder_.emit(op.reshape(data, (m, k)))
            xt = self.builder_.emit(op.permute_dims(x2, [1, 0])) if m > 1 else x2
            img = self.builder_.emit(op.reshape(xt, (1, k, 1, m)))
            spec = _Conv(1, k, 1, m, n_out, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0))
            weight = np.ascontiguousarray(plan.weight.T).reshape(n_out, k, 1, 1)
            y = self.builder_.emit(self._kernel(img, weight, spec, plan.bias, plan.relu, "sparse_matmul"))
            y2 = self.builder_.emit(op.reshape(y, (n_out, m)))
            yt = self.builder_.emit(op.permute_dims(y2, [1, 0])) if m > 1 else y2
            out_shape = [*shape[:-1], n_out] if len(shape) > 1 else [n_out]
            return op.reshape(yt, out_shape)

    return Rewriter(mod)


def _const_value(expr, bindings) -> np.ndarray | None:
    """The numpy value of ``expr`` when it is a constant, possibly behind reshape/permute_dims; else None."""
    import tvm
    from tvm import relax

    for _ in range(16):  # follow var -> binding chains
        if isinstance(expr, relax.Var) and expr in bindings:
            expr = bindings[expr]
        else:
            break
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") in ("relax.permute_dims", "relax.reshape"):
        inner = _const_value(expr.args[0], bindings)
        if inner is None:
            return None
        if expr.op.name == "relax.reshape":
            return inner.reshape([int(d) for d in expr.ty.shape])
        axes = expr.attrs.axes
        return np.transpose(inner, None if axes is None else [int(a) for a in axes])
    return None


def _unsupported(kind: str, call, weight: np.ndarray) -> str | None:
    """Why the sparse kernel cannot take this layer, or None."""
    tinfo = call.args[0].ty
    if tinfo.dtype != "float32" or weight.dtype != np.float32 or call.ty.dtype != "float32":
        return f"dtype {tinfo.dtype}/{weight.dtype}: the sparse kernels are float32"
    if tinfo.shape is None or not all(isinstance(d, int) or hasattr(d, "value") for d in tinfo.shape):
        return "dynamic input shape: pin it with --input-shape"
    if kind == "conv2d":
        a = call.attrs
        if a.data_layout != "NCHW" or a.kernel_layout != "OIHW" or (a.out_layout or "NCHW") != "NCHW":
            return f"layout {a.data_layout}/{a.kernel_layout}: the sparse conv is NCHW/OIHW"
        if int(a.groups) != 1:
            return f"groups={int(a.groups)}: grouped/depthwise convs have few weights per output, dense is faster"
        if weight.ndim != 4:
            return f"a {weight.ndim}-D weight: the sparse conv is 2-D"
        return None
    if weight.ndim != 2:
        return f"a {weight.ndim}-D constant operand: the sparse matmul takes a 2-D weight"
    if len(tinfo.shape) < 1:
        return "a scalar operand"
    return None


def _sole_user(var, uses, bindings):
    """The binding var that is ``var``'s only user, if ``var`` is internal to a dataflow block."""
    from tvm import relax

    users = uses.get(var, [])
    if not isinstance(var, relax.DataflowVar) or len(users) != 1 or users[0] is None or users[0] not in bindings:
        return None
    return users[0]


def _channel_bias(value, var, bindings, kind: str, channels: int) -> np.ndarray | None:
    """The per-output-channel bias when ``value`` is ``var + constant`` broadcasting along channels."""
    from tvm import relax

    if not isinstance(value, relax.Call) or getattr(value.op, "name", "") != "relax.add":
        return None
    a, b = value.args
    other = b if a.same_as(var) else a if b.same_as(var) else None
    if other is None:
        return None
    c = _const_value(other, bindings)
    if c is None or c.dtype != np.float32 or c.size != channels:
        return None
    out_rank = len(var.ty.shape)
    dims = [int(d) for d in c.shape]
    if kind == "conv2d":
        # (C,1,1) or (1,C,1,1): along NCHW's channel axis
        ok = len(dims) <= out_rank and dims[-3:] == [channels, 1, 1] and all(d == 1 for d in dims[:-3])
    else:
        ok = len(dims) <= out_rank and dims[-1] == channels and all(d == 1 for d in dims[:-1])
    return c.reshape(-1) if ok else None
