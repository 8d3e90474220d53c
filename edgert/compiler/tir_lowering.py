"""edgert's TIR lowering for CPU targets: TVM's ``s_tir`` pipeline plus one fix.

TVM 0.27's ``LowerTVMBuiltin`` keeps an allocation on the stack only when its scope is
"global" and it is under 1 KiB; every other one becomes a ``TVMBackendAllocWorkspace`` /
``TVMBackendFreeWorkspace`` call pair where it is declared. The templates' register tile
(a "local" cache of the outputs, declared inside the parallel loop) therefore cost two
runtime calls per tile, thousands per layer: MobileNetV2's 56x56 depthwise conv ran 2.4x
slower for it. ``stack_register_tiles`` marks small "local" allocations
``disable_lower_builtin``, so LLVM gives them a stack slot in the function's entry block,
where its register allocator keeps them in vector registers.

Every build of a scheduled module (``edgert compile``, and the candidates ``edgert tune``
measures) names ``PIPELINE`` so that tuning times what ships.
"""
from __future__ import annotations

PIPELINE = "edgert_cpu"
# The register tiles are at most 32 vectors of 64 bytes; anything larger stays on the heap.
STACK_LIMIT_BYTES = 4096


def register() -> str:
    """Register the pipeline with TVM (idempotent); returns its name for ``tir_pipeline=``."""
    from tvm.tirx import compilation_pipeline as pipelines

    if PIPELINE not in pipelines.PIPELINE_MAP:
        pipelines.register_tir_pipeline(PIPELINE, _factory)
    return PIPELINE


def _factory():
    import tvm
    from tvm.tirx import compilation_pipeline as pipelines

    lower, finalize_host, finalize_device = pipelines.get_tir_pipeline("s_tir")

    def host_passes():
        return tvm.ir.transform.Sequential([stack_register_tiles(), finalize_host()])

    return lower, host_passes, finalize_device


def stack_register_tiles():
    """A PrimFunc pass: small constant-size "local" allocations stay on the stack (see above)."""
    import tvm

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="edgert.StackRegisterTiles")
    def _pass(func, _mod, _ctx):
        body = _mark(func.body)
        return func if body.same_as(func.body) else func.with_body(body)

    return _pass


def _small_local(buffer) -> bool:
    import tvm
    from tvm import tirx

    if buffer.scope() != "local" or not all(isinstance(d, tirx.IntImm) for d in buffer.shape):
        return False
    dtype = tvm.DataType(str(buffer.dtype))
    size = dtype.bits * dtype.lanes // 8
    for d in buffer.shape:
        size *= int(d)
    return 0 < size <= STACK_LIMIT_BYTES


def _mark(stmt):
    """``stmt`` with its small local allocations annotated; the same object when none changed."""
    from tvm import tirx

    if isinstance(stmt, tirx.AllocBuffer):
        ann = dict(stmt.annotations or {})
        if "disable_lower_builtin" in ann or not _small_local(stmt.buffer):
            return stmt
        ann["disable_lower_builtin"] = tirx.IntImm("bool", 1)
        return tirx.AllocBuffer(stmt.buffer, ann, stmt.span)
    if isinstance(stmt, tirx.SeqStmt):
        seq = [_mark(s) for s in stmt.seq]
        return stmt if all(a.same_as(b) for a, b in zip(seq, stmt.seq, strict=True)) else tirx.SeqStmt(seq, stmt.span)
    if isinstance(stmt, tirx.For):
        body = _mark(stmt.body)
        if body.same_as(stmt.body):
            return stmt
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding,
                        stmt.annotations, stmt.step, stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        body = _mark(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, body, stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        then = _mark(stmt.then_case)
        other = _mark(stmt.else_case) if stmt.else_case is not None else None
        if then.same_as(stmt.then_case) and (other is None or other.same_as(stmt.else_case)):
            return stmt
        return tirx.IfThenElse(stmt.condition, then, other, stmt.span)
    if isinstance(stmt, tirx.While):
        body = _mark(stmt.body)
        return stmt if body.same_as(stmt.body) else tirx.While(stmt.condition, body, stmt.span)
    return stmt
