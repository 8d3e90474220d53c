"""Small Relax rewrites that let edgert's layout conversion see through frontend shortcuts."""
from __future__ import annotations

# TIR functions the ONNX frontend emits directly (via emit_te) for Clip's two halves.
_MINMAX = {"maximum": "maximum", "minimum": "minimum"}


def clip_calls_to_ops(mod):
    """``call_tir(maximum|minimum, (x, scalar constant))`` → ``relax.maximum/minimum``.

    TVM's ONNX frontend lowers Clip (ReLU6) straight to TIR, which hides it from Relax's
    ConvertLayout: around every ReLU6 of a channels-last MobileNet it would transpose the
    activation back to NCHW and forth again. The Relax ops follow the layout and fuse into
    the convolution's epilogue.
    """
    import tvm
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor

    call_tir = tvm.ir.Op.get("relax.call_tir")

    @expr_functor.mutator
    class _Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call, relax.Call) and call.op.same_as(call_tir)):
                return call
            callee, args = call.args[0], call.args[1]
            name = getattr(callee, "name_hint", "").rstrip("0123456789")
            if name not in _MINMAX or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
                return call
            x, bound = args.fields
            if not isinstance(bound, tvm.ir.GenericConst) or bound.value.numpy().size != 1:
                return call
            value = bound.value.numpy().reshape(())
            scalar = relax.const(value.item(), str(value.dtype))
            op = relax.op.maximum if name == "maximum" else relax.op.minimum
            return op(x, scalar)

    return relax.transform.DeadCodeElimination()(rewrite_functions(_Rewriter(mod), mod))


def column_matmuls_to_rows(mod):
    """``matmul(W, x)`` with a constant ``W [.., M, K]`` and a column ``x [.., K, 1]`` →
    ``reshape(matmul(reshape(x, [.., 1, K]), W^T), [.., M, 1])``.

    The same products, but the output's contiguous axis becomes M instead of 1: the
    register-tiled template vectorises over it, where the column form left it scalar (a
    streaming step model's conv layers are such matrix-vector products). Both reshapes only
    move a unit axis, so they fuse as element-wise ops (``pipeline.unit_reshapes_as_elementwise``).
    """
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor

    matmul_op = tvm.ir.Op.get("relax.matmul")

    def static_shape(e):
        shape = getattr(e.ty, "shape", None) if hasattr(e, "ty") else None
        try:
            return [int(d) for d in shape] if shape is not None else None
        except (TypeError, ValueError):
            return None

    @expr_functor.mutator
    class _Rewriter(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call, relax.Call) and call.op.same_as(matmul_op)):
                return call
            w, x = call.args
            if not isinstance(w, tvm.ir.GenericConst):
                return call
            wv = w.value.numpy()
            ws, xs = list(wv.shape), static_shape(x)
            out_dtype = str(call.attrs.out_dtype) if call.attrs.out_dtype else ""
            if (xs is None or len(ws) < 2 or len(xs) != len(ws) or xs[-1] != 1 or xs[-2] != ws[-1]
                    or any(d != 1 for d in ws[:-2] + xs[:-2]) or ws[-2] == 1):
                return call
            wt = np.ascontiguousarray(np.swapaxes(wv, -1, -2))
            row = self.builder_.emit(relax.op.reshape(x, [*xs[:-2], 1, xs[-2]]))
            y = self.builder_.emit(relax.op.matmul(row, relax.const(wt), out_dtype=out_dtype or None))
            return relax.op.reshape(y, [*ws[:-2], ws[-2], 1])

    return rewrite_functions(_Rewriter(mod), mod)


def rewrite_functions(rewriter, mod):
    """``mod`` with every Relax function passed through ``rewriter`` (a PyExprMutator built on ``mod``)."""
    from tvm import relax

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()


_PARAM_CHECKS = ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")


def drop_kernel_checked_params(mod):
    """Drop the VM's entry checks of a parameter that only kernels read (after VMShapeLower).

    VMShapeLower checks every parameter's dtype, rank and shape with two builtin calls per
    tensor on each run (6 of a streaming step model's ~45 calls). A static-shaped parameter
    that goes only into compiled kernels is checked again there, field by field, by each
    kernel's entry (TVM's packed API asserts dtype, ndim, every dimension and strides), and
    edgert's runtimes refuse a wrong size before the call; a parameter used any other way
    (reshaped, returned, symbolic) keeps its checks.
    """
    import tvm
    from tvm import relax
    from tvm.relax import PyExprMutator, PyExprVisitor, expr_functor

    kernels = {gv for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}

    def is_check(call):
        return (isinstance(call, relax.Call) and isinstance(call.op, relax.ExternFunc)
                and call.op.global_symbol in _PARAM_CHECKS)

    @expr_functor.visitor
    class _Uses(PyExprVisitor):
        def __init__(self, params):
            super().__init__()
            self.params, self.other = params, set()

        def visit_call_(self, call):
            if is_check(call):
                return  # the checks themselves are not uses
            to_kernel = isinstance(call.op, relax.GlobalVar) and call.op in kernels
            for a in call.args:
                if to_kernel and isinstance(a, relax.Var):
                    continue
                self.visit_expr(a)
            if not to_kernel:
                self.visit_expr(call.op)

        def visit_var_(self, var):
            if var in self.params:
                self.other.add(var)

    @expr_functor.mutator
    class _Drop(PyExprMutator):
        def __init__(self, mod, drop):
            super().__init__(mod)
            self.drop = drop

        def visit_var_binding_(self, binding):
            if is_check(binding.value) and binding.value.args[0] in self.drop:
                return
            super().visit_var_binding_(binding)

    out = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        static = set()
        for p in func.params:
            shape = getattr(p.ty, "shape", None)
            if isinstance(p.ty, relax.TensorType) and shape is not None and all(
                    isinstance(d, tvm.tirx.IntImm) for d in getattr(shape, "values", [None])):
                static.add(p)
        uses = _Uses(static)
        uses.visit_expr(func)
        drop = static - uses.other
        if drop:
            out[gv] = _Drop(mod, drop).visit_expr(func)
    if not out:
        return mod
    mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    for gv, func in out.items():
        mod[gv] = func
    return mod
