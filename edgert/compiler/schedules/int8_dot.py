"""Int8 conv/dense with int32 accumulation on the CPU's dot-product instruction.

The integer layers ``edgert.compiler.int8`` emits become, after layout conversion,
``out[.., co] += int32(x[.., rc]) * int32(W[.., rc, co])`` with ``rc`` innermost in the
activation (channels-last) and ``co`` innermost in the output. One x86 ``vpdpbusd`` (AVX-512
VNNI) adds 4 consecutive uint8×int8 products into each of 16 int32 lanes (8 and 4 with the
256/128-bit forms, for output channel counts such as 24 that 16 does not divide), one Arm
``sdot`` 4 int8×int8 products into each of 4 lanes: 4x the multiply-adds of a float FMA per
instruction. TVM ships both as tensor intrinsics (``C[L] += A[4] · B[L, 4]``); this template
tiles the loops to that shape (``co`` by L, ``rc`` by 4), keeps a row of ``t`` output vectors
in registers (the broadcast activation word is loaded once per instruction, the weight
vector reused ``t`` times) and repacks the constant weight at compile time so the
``L x 4`` block each instruction reads is contiguous: ``(..., I, O) → (O/L, ..., I/4, L, 4)``.
The requantize epilogue is applied to the register tile before it is stored.
"""
from __future__ import annotations

from edgert.compiler.schedules.base import (
    CpuInfo,
    Knobs,
    ScheduleFailed,
    divisors,
    inline_side_inputs,
    register_intrinsic,
    tile_epilogue,
    worth_parallel,
)

# CpuInfo.dot → (int32 lanes per instruction, widest first; activation dtype)
INTRINSICS = {
    "vnni": ((16, 8, 4), "uint8"),
    "sdot": ((4,), "int8"),
}
_VNNI_LLVM = {16: "llvm.x86.avx512.vpdpbusd.512", 8: "llvm.x86.avx512.vpdpbusd.256", 4: "llvm.x86.avx512.vpdpbusd.128"}


def intrinsic_name(dot: str, lanes: int) -> str:
    """The registered TVM tensor intrinsic ``C[lanes] += A[4] · B[lanes, 4]`` of ``dot``."""
    return f"edgert_dot_{lanes}x4_vnni" if dot == "vnni" else "dot_4x4_i8i8s32_sdot"


def pick_lanes(cpu: CpuInfo, out_channels: int) -> int | None:
    """The widest instruction form the CPU has whose lane count divides ``out_channels``."""
    return next((n for n in cpu.dot_lanes or INTRINSICS[cpu.dot][0] if out_channels % n == 0), None)
PACK_KIND = "dot4"


def _parts(sch, block):
    """(output store, [data load, weight load]) of ``C = C + int32(x) * int32(w)``, or None."""
    from tvm import tirx
    from tvm.ir.expr import TensorLoad  # what a buffer load is (tirx.BufferLoad only builds one)

    stmt = sch.get(block)
    store = stmt.body
    if not isinstance(store, tirx.BufferStore) or str(store.buffer.dtype) != "int32":
        return None
    add = store.value
    if not isinstance(add, tirx.Add) or not isinstance(add.b, tirx.Mul):
        return None
    loads = []
    for side in (add.b.a, add.b.b):
        if not (isinstance(side, tirx.Cast) and isinstance(side.value, TensorLoad)):
            return None
        loads.append(side.value)
    return store, loads


def _plan(sch, block):
    """Loop roles of an int8 dot-product reduction, or None when the function is not one."""
    from tvm.tirx import IterVar

    from edgert.compiler.schedules.tiled_reduction import is_layout_free, loop_kinds

    parts = _parts(sch, block)
    if parts is None:
        return None
    store, loads = parts
    weights = [ld for ld in loads if is_layout_free(sch, ld.source) and str(ld.source.dtype) == "int8"]
    if len(weights) != 1:
        return None
    weight = weights[0]
    data = loads[1] if loads[0] is weight else loads[0]
    if str(data.source.dtype) not in ("uint8", "int8") or len(weight.indices) < 2:
        return None
    mapped = loop_kinds(sch, block)
    if mapped is None:
        return None
    loops, kinds = mapped
    stmt = sch.get(block)
    ivars = [iv.var for iv in stmt.iter_vars]
    co, rc = weight.indices[-1], weight.indices[-2]
    if not all(any(ix.same_as(v) for v in ivars) for ix in weight.indices):
        return None  # the packing needs plain loop variables
    co_i = next(i for i, v in enumerate(ivars) if v.same_as(co))
    rc_i = next(i for i, v in enumerate(ivars) if v.same_as(rc))
    spatial_idx = [i for i, k in enumerate(kinds) if k == IterVar.DataPar]
    if kinds[co_i] != IterVar.DataPar or kinds[rc_i] != IterVar.CommReduce or spatial_idx[-1] != co_i:
        return None
    if not (store.indices[-1].same_as(co) and data.indices[-1].same_as(rc)):
        return None  # output channels / input channels must be the contiguous axes
    return {
        "loops": loops,
        "kinds": kinds,
        "co": co_i,
        "rc": rc_i,
        "weight": weight.source,
        "data_dtype": str(data.source.dtype),
        "extents": [int(sch.get(lp).extent) for lp in loops],
    }


def _anchor(sch):
    from edgert.compiler.schedules.tiled_reduction import _anchor as anchor

    return anchor(sch)


def applies(sch) -> bool:
    block = _anchor(sch)
    return block is not None and _plan(sch, block) is not None


def apply(sch, cpu: CpuInfo, knobs: Knobs) -> None:
    from tvm.tirx import IterVar

    if cpu.dot not in INTRINSICS:
        raise ScheduleFailed(f"no int8 dot-product instruction on this target ({cpu.dot or 'none'})")
    act_dtype = INTRINSICS[cpu.dot][1]
    block = _anchor(sch)
    plan = _plan(sch, block)
    if plan is None or plan["data_dtype"] != act_dtype:
        raise ScheduleFailed("not an int8 dot product in this target's dtypes")
    ext = plan["extents"]
    lanes = pick_lanes(cpu, ext[plan["co"]])
    if lanes is None or ext[plan["rc"]] % 4:
        raise ScheduleFailed(f"channels {ext[plan['rc']]} -> {ext[plan['co']]} not multiples of 4 -> {INTRINSICS[cpu.dot][0][-1]}")
    intrin = intrinsic_name(cpu.dot, lanes)
    _register_intrinsics(cpu.dot)

    _inline_copies(sch, block)
    inline_side_inputs(sch, block)
    loops, kinds = plan["loops"], plan["kinds"]
    spatial = [i for i, k in enumerate(kinds) if k == IterVar.DataPar]
    reduce = [i for i, k in enumerate(kinds) if k == IterVar.CommReduce]
    co_o, co_i = sch.split(loops[plan["co"]], [None, lanes])
    rc_o, rc_i = sch.split(loops[plan["rc"]], [None, 4])

    # Register tile: t output rows of the innermost other spatial axis (e.g. W of NHWC).
    tile = next((i for i in reversed(spatial[:-1]) if ext[i] > 1), None)
    outer = [loops[i] for i in spatial[:-1]]
    ti = None
    if tile is not None:
        # t accumulators + one weight vector + the broadcast word must fit the register file.
        hi = min(8, cpu.vector_registers - 2)
        options = divisors(ext[tile], 1, hi) + [t for t in (4, 8) if t <= hi and ext[tile] > t and ext[tile] % t]
        t = knobs.choose(sorted(set(options)), max(d for d in options if d <= 8 and ext[tile] % d == 0))
        to, ti = sch.split(loops[tile], [None, t])
        outer[spatial[:-1].index(tile)] = to
    nest = [*outer, co_o]
    other_reduce = [loops[i] for i in reduce if i != plan["rc"]]
    sch.reorder(*nest, *other_reduce, rc_o, *([ti] if ti is not None else []), co_i, rc_i)

    _pack_weight(sch, block, plan["weight"], lanes)

    # "global" scope because TVM's intrinsics declare their buffers so; the tile is a small
    # fixed-size allocation (stack), which LLVM keeps in registers once the tile is unrolled.
    parallel = worth_parallel(sch, block, cpu, int8=True)
    wb = tile_epilogue(sch, block, "global", nest[-1])  # the requantize runs on the register tile
    if parallel:
        sch.parallel(sch.fuse(*nest) if len(nest) > 1 else nest[0])
    first_reduce = other_reduce[0] if other_reduce else rc_o
    init = sch.decompose_reduction(block, first_reduce)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(co_i, intrin)
    if ti is not None:
        sch.unroll(ti)
    wb_loops = sch.get_loops(wb)
    sch.vectorize(wb_loops[-1])


def _inline_copies(sch, block) -> None:
    """Inline producers that are plain copies (a pad with no padding): the intrinsic reads a buffer."""
    from tvm import tirx
    from tvm.ir.expr import TensorLoad

    for b in sch.get_producers(block):
        stmt = sch.get(b)
        if isinstance(stmt.body, tirx.BufferStore) and isinstance(stmt.body.value, TensorLoad):
            try:
                sch.compute_inline(b)
            except Exception:  # a real pad stays a separate loop nest
                pass


def _pack_weight(sch, block, weight, lanes: int) -> None:
    """(..., I, O) → (O/L, ..., I/4, L, 4); pipeline.prepack_weights does it once at compile time."""
    from edgert.compiler.schedules.tiled_reduction import param_index

    stmt = sch.get(block)
    index = next(i for i, r in enumerate(stmt.reads) if r.source.same_as(weight))
    param = param_index(sch, weight)
    cache = sch.cache_read(block, index, "global")
    sch.transform_layout(
        cache, ("write", 0), lambda *ax: (ax[-1] // lanes, *ax[:-2], ax[-2] // 4, ax[-1] % lanes, ax[-2] % 4)
    )
    sch.annotate(cache, "meta_schedule.layout_rewrite_preproc", True)
    sch.annotate(cache, "edgert.pack_param", param)
    sch.annotate(cache, "edgert.pack_vec", lanes)
    sch.annotate(cache, "edgert.pack_kind", PACK_KIND)


def pack(weight, lanes: int):
    """The numpy twin of ``_pack_weight``'s layout: (..., I, O) → (O/L, ..., I/4, L, 4)."""
    import numpy as np

    *rest, i, o = weight.shape
    w = weight.reshape(*rest, i // 4, 4, o // lanes, lanes)
    n = len(rest)
    # axes: rest..., I/4 (n), 4 (n+1), O/L (n+2), L (n+3)
    return np.ascontiguousarray(w.transpose(n + 2, *range(n), n, n + 3, n + 1))


_COMPILES: dict[tuple[str, str], tuple[int, ...]] = {}


def compiling_lanes(dot: str, target) -> tuple[int, ...]:
    """The instruction widths of ``dot`` whose one-instruction kernel compiles for ``target``.

    Guards against intrinsics whose LLVM signature changed under TVM, or a CPU without the
    narrower (AVX-512VL) forms; with none, the integer layers get the generic tiled
    template. Cached per target.
    """
    key = (dot, str(target))
    if key not in _COMPILES:
        _register_intrinsics(dot)
        ok = []
        for lanes in INTRINSICS[dot][0]:
            try:
                _probe(dot, lanes, target)
                ok.append(lanes)
            except Exception:  # LLVM rejected the intrinsic call: this width is not used
                pass
        _COMPILES[key] = tuple(ok)
    return _COMPILES[key]


def _probe(dot: str, lanes: int, target) -> None:
    import tvm
    from tvm import s_tir
    from tvm.script import tirx as T

    name, dtype = intrinsic_name(dot, lanes), INTRINSICS[dot][1]

    @T.prim_func(s_tir=True)
    def kernel(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype)
        B = T.match_buffer(b, (lanes, 4), "int8")
        C = T.match_buffer(c, (lanes,), "int32")
        for i, k in T.grid(lanes, 4):
            with T.sblock("update"):
                vi, vk = T.axis.remap("SR", [i, k])
                C[vi] = C[vi] + T.Cast("int32", A[vk]) * T.Cast("int32", B[vi, vk])

    sch = s_tir.Schedule(kernel)
    sch.tensorize(sch.get_loops(sch.get_sblock("update"))[0], name)
    tvm.compile(sch.mod, target=target)


def _register_intrinsics(dot: str) -> None:
    """Make the tensor intrinsic of ``dot`` known to TVM (importing TVM's module registers its own)."""
    if dot != "vnni":
        import tvm.s_tir.tensor_intrin.arm_cpu  # noqa: F401
        return
    for lanes in INTRINSICS["vnni"][0]:
        register_intrinsic(intrinsic_name("vnni", lanes), lambda lanes=lanes: _vnni_intrinsic(lanes))


def _vnni_intrinsic(lanes: int):
    """(description, implementation) of ``C[lanes] += A[4] · B[lanes, 4]`` on ``vpdpbusd``.

    TVM 0.27 ships only the 16-lane form, with <16 x i32> operands that the LLVM it bundles
    rejects (LLVM >= 20 takes <64 x i8>); the 8/4-lane forms are the AVX-512VL encodings.
    """
    from tvm.script import tirx as T

    n = lanes * 4

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            # The 4 activation bytes as one int32, broadcast to every lane; written inline (a
            # named temporary becomes a workspace allocation, a runtime call per tile).
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(_VNNI_LLVM[lanes]),
                C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), lanes), dtype=f"int8x{n}"),
                B.vload([0, 0], dtype=f"int8x{n}"),
                dtype=f"int32x{lanes}",
            )

    return desc, impl
