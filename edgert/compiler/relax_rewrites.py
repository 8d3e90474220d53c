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

    rewriter = _Rewriter(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    out = rewriter.builder_.get()
    return relax.transform.DeadCodeElimination()(out)
