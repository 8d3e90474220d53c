"""edgert's Relax lowering: layouts the templates want, fusion, tuning records, default schedules.

``lower`` is shared by ``edgert compile`` and ``edgert tune`` so that a workload tuned once
is found again by every later compile (MetaSchedule keys records by the function's
structure).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgert.compiler.schedules import CpuInfo, ScheduleCounts, is_scheduled

# Channels-last activations and HWIO weights make the output-channel axis contiguous in
# both the output and the weight, which the register-tiled template vectorises.
LAYOUTS = {
    "relax.nn.conv2d": ["NHWC", "HWIO"],
    "relax.nn.conv1d": ["NWC", "WIO"],
}
SCHEDULE_MODES = ("auto", "default", "naive")
# The bytecode twin of each compiled VM function (see link_compiled).
BYTECODE_SUFFIX = "__bytecode"


@dataclass
class LowerReport:
    counts: ScheduleCounts = field(default_factory=ScheduleCounts)
    databases: list[str] = field(default_factory=list)
    sparse: dict | None = None

    def to_json(self) -> dict:
        out = {"mode": "", **self.counts.to_json(), "databases": self.databases}
        if self.sparse is not None:
            out["sparse"] = self.sparse
        return out


def fuse(mod, tgt):
    """Relax module straight from a frontend → fused PrimFuncs (the tuning tasks), unscheduled."""
    import tvm
    from tvm import relax

    from edgert.compiler import int8_depthwise
    from edgert.compiler.int8 import integerize
    from edgert.compiler.relax_rewrites import clip_calls_to_ops, column_matmuls_to_rows
    from edgert.compiler.schedules.base import enable_vector_rounding

    enable_vector_rounding()  # before any PrimFunc is built: quantize/requantize epilogues
    target = tgt.tvm_target()
    with target:
        mod, _ = integerize(mod, tgt)  # before FoldConstant expands the int8 weights to float
        mod = relax.transform.FoldConstant()(mod)
        mod = clip_calls_to_ops(mod)
        mod = column_matmuls_to_rows(mod)
        mod = relax.transform.ConvertLayout(LAYOUTS)(mod)
        mod = int8_depthwise.rewrite(mod, CpuInfo.from_target(tgt))  # needs the NHWC convs
        mod = tvm.transform.Sequential(
            [
                # exp/erf/tanh/softmax as TOPI's polynomial forms (Eigen's; within a few float32
                # ulps), which vectorise: the default erf/exp lower to libm calls, one per element
                # (vit_digits' GELU: 10 us of its 12.5 us MLP matmul).
                relax.transform.FastMathTransform(),
                relax.transform.LegalizeOps(),
                relax.transform.AnnotateTIROpPattern(),
                unit_reshapes_as_elementwise(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                # Marks constant-weight parameters so templates may repack them.
                relax.transform.AttachAttrLayoutFreeBuffers(),
            ]
        )(mod)
    return mod


def unit_reshapes_as_elementwise():
    """Mark reshapes that only add or drop axes of size 1 as element-wise for FuseOps.

    FuseOps appends element-wise and broadcast ops to a conv/matmul kernel but stops at an
    injective one, and a reshape is injective; a reshape that keeps the element order and the
    non-unit axes (``[1, C] -> [1, C, 1]``) maps each output to one input at the same offset,
    so the ReLU and residual add after it join the kernel (a streaming step model's conv
    layers: 2 kernels and allocations fewer each, per step).
    """
    import tvm

    def squeezed(shape) -> list[int] | None:
        try:
            return [int(d) for d in shape if int(d) != 1]
        except TypeError:  # a symbolic dimension
            return None

    @tvm.transform.module_pass(opt_level=0, name="EdgertUnitReshapesAsElementwise")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc) or not gv.name_hint.startswith(("reshape", "expand_dims", "squeeze")):
                continue
            attrs = func.attrs or {}
            if int(attrs.get("op_pattern", -1)) != 2 or len(func.params) != 2:
                continue
            src, dst = (squeezed(p.shape) for p in func.params)
            if src is not None and src == dst:
                updates[gv] = func.with_attr("op_pattern", 0)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return _pass


def lower(mod, tgt, mode: str = "auto", databases: list[Path] | None = None):
    """Fuse, then schedule every function: tuning record, else edgert default, else naive.

    Returns ``(mod, LowerReport)``; ``mod`` is ready for ``finalize_pipeline``.
    """
    import tvm

    report = LowerReport()
    target = tgt.tvm_target()
    mod = fuse(mod, tgt)
    if mode == "auto":
        from edgert.compiler import tuning

        for db_path in databases if databases is not None else tuning.default_databases(tgt):
            db = tuning.open_database(db_path, readonly=True)
            if db is None:
                continue
            mod, tuned = tuning.apply_database(mod, target, db)
            report.counts.tuned.extend(tuned)
            report.databases.append(str(db_path))
    for gv, func in mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and gv.name_hint not in report.counts.tuned and is_scheduled(func):
            report.counts.hand.append(gv.name_hint)
    from edgert.compiler.schedules import apply_defaults

    mod, _ = apply_defaults(mod, CpuInfo.from_target(tgt), report.counts)
    mod = prepack_weights(mod)
    return mod, report


def prepack_weights(mod):
    """Weights a template repacked: drop the packing block, pack the constant once here.

    (Relax's SplitLayoutRewritePreproc does this too but refuses modules holding
    hand-written kernels without a root block, such as the sparse ones.)
    """
    import tvm
    from tvm import relax
    from tvm.relax import PyExprMutator, expr_functor
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from edgert.compiler.schedules import int8_dot
    from edgert.compiler.schedules.int8_dot import pack as dot_pack
    from edgert.compiler.schedules.tiled_reduction import pack

    packs = {}
    for gv, func in list(mod.functions.items()):
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        info = _pack_annotation(func)
        if info is None:
            continue
        new = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(tvm.IRModule({"main": func}))["main"]
        # Rebuilt so that its Relax-visible type follows the new (packed) parameter.
        packs[gv.name_hint] = (tvm.tirx.PrimFunc(new.params, new.body, new.ret_type, new.attrs), info)
    if not packs:
        return mod
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @expr_functor.mutator
    class _Rewriter(PyExprMutator):
        def __init__(self, mod):
            super().__init__(mod)
            # New GlobalVars: a GlobalVar keeps the type of the function it was made for.
            self.gvs = {name: self.builder_.add_func(f, name + "_packed") for name, (f, _) in packs.items()}

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if not (isinstance(call, relax.Call) and call.op.same_as(call_tir)):
                return call
            name = getattr(call.args[0], "name_hint", "")
            if name not in packs:
                return call
            index, vec, kind = packs[name][1]
            fields = list(call.args[1].fields)
            const = fields[index]
            if not isinstance(const, tvm.ir.GenericConst):
                raise ValueError(f"{name}: repacked weight is not a constant")
            packer = dot_pack if kind == int8_dot.PACK_KIND else pack
            fields[index] = relax.const(packer(const.value.numpy(), vec))
            return relax.Call(call.op, [self.gvs[name], relax.Tuple(fields), *call.args[2:]], call.attrs, call.ty_args)

    rewriter = _Rewriter(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get())


def _pack_annotation(func):
    """(parameter index, vector width, packing kind) from a template's packing block, or None."""
    from tvm import s_tir

    try:
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # hand-written kernels without a root block pack nothing
        return None
    found = []
    for b in blocks:
        ann = sch.get(b).annotations
        if "edgert.pack_param" in ann:
            found.append((int(ann["edgert.pack_param"]), int(ann["edgert.pack_vec"]), str(ann.get("edgert.pack_kind", ""))))
    return found[0] if found else None


def finalize_pipeline(tgt):
    """What ``tvm.compile`` still runs on a module that ``lower`` scheduled."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from edgert.compiler.relax_rewrites import drop_kernel_checked_params

    target = tgt.tvm_target()

    # KillAfterLastUse frees each register after its last use: one VM call per tensor and per
    # storage, every run (30 of ~80 calls for a small streaming step model, ~1.3 us of ~7).
    # With static shapes every tensor lives in storage planned and allocated at the
    # function's start, so releasing it early frees nothing sooner (MobileNetV2: the same
    # peak memory, 61.8 MiB, with and without); with symbolic shapes it is kept.
    passes = cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
    # Every call_tir leaves a binding ``y = x`` that the VM runs as a call to vm.builtin.copy
    # (18 of the step model's 73 calls): fold them away once the allocations are explicit.
    at = next(i for i, p in enumerate(passes) if p.info.name == "LowerAllocTensor") + 1
    passes = [*passes[:at], relax.transform.CanonicalizeBindings(), *passes[at:]]
    static = [p for p in passes if p.info.name != "KillAfterLastUse"]
    at = next(i for i, p in enumerate(static) if p.info.name == "VMShapeLower") + 1
    static = [*static[:at], _as_pass(drop_kernel_checked_params), *static[at:]]

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(static if _static_shapes(mod) else passes)(mod)

    return _pipeline


def _as_pass(rewrite):
    import tvm

    return tvm.transform.module_pass(lambda mod, _ctx: rewrite(mod), opt_level=0, name=rewrite.__name__)


def _static_shapes(mod) -> bool:
    """Whether no Relax function of ``mod`` has a symbolic shape variable."""
    from tvm import relax

    return all(not relax.analysis.defined_symbolic_vars(f) and not relax.analysis.free_symbolic_vars(f)
               for _, f in mod.functions_items() if isinstance(f, relax.Function))


def build(mod, tgt, mode: str = "auto", databases: list[Path] | None = None):
    """``(executable, LowerReport)`` for a CPU target."""
    import tvm

    if mode not in SCHEDULE_MODES:
        from edgert.errors import CompileError

        raise CompileError(f"unknown schedules mode '{mode}'; use one of {', '.join(SCHEDULE_MODES)}")
    if mode == "naive":
        report = LowerReport()
        ex = tvm.compile(mod, target=tgt.tvm_target())
        report.counts.naive.append("*")
        return ex, report
    from edgert.compiler import tir_lowering

    mod, report = lower(mod, tgt, mode, databases)
    if not _static_shapes(mod):
        ex = tvm.compile(mod, target=tgt.tvm_target(), relax_pipeline=finalize_pipeline(tgt),
                         tir_pipeline=tir_lowering.register())
        return ex, report
    target = tgt.tvm_target()
    with target:
        mod = finalize_pipeline(tgt)(mod)
    return link_compiled(mod, target, tir_lowering.register()), report


def link_compiled(mod, target, tir_pipeline):
    """The VM executable of a finalized module, its entry points compiled to machine code.

    The Relax VM interprets bytecode: every instruction (each allocation, shape check and
    kernel call) goes through its dispatch loop and register file. ``exec_mode="compiled"``
    emits each Relax function as a TIR function that makes the same calls directly: the
    zoo's streaming step model went from 5.0 to 3.8 us per step (the same kernels). The VM
    only instruments bytecode, so each function also keeps a bytecode twin named
    ``<name>__bytecode``, which the native runtime calls while a per-op hook is set
    (``edgert profile --per-op``); the twins share kernels and constants (+~9 KB a bundle).
    """
    from tvm import IRModule, relax
    from tvm.relax import vm_build

    attrs = dict(mod.attrs) if mod.attrs else {}
    builder = relax.ExecBuilder()
    twins = {f"{gv.name_hint}{BYTECODE_SUFFIX}": f.with_attr("global_symbol", f"{gv.name_hint}{BYTECODE_SUFFIX}")
             for gv, f in mod.functions_items() if isinstance(f, relax.Function)}
    # Both code generators write into one builder: one function table, one constant pool
    # (constants are deduplicated by identity, so the weights are stored once).
    vm_build._vmcodegen(builder, IRModule(twins, attrs=mod.attrs), "bytecode")
    rest = vm_build._vmcodegen(builder, mod, "compiled")
    return vm_build._vmlink(builder, target, vm_build._filter_tir(rest), tir_pipeline,
                            list(attrs.get("external_mods", [])), dict(attrs.get("const_name_to_constant", {})))

