"""The packed int8 depthwise conv (``edgert.compiler.int8_depthwise``) on VNNI.

Loops ``(n, i, j/t, c/16, ky, t, 16, 4)``: for a row of ``t`` output pixels and 16
channels, each kernel row is ``t`` instructions, each on one 64-byte load (4 columns × 16
channels) permuted so that lane ``c`` holds its channel's 4 columns; the ``t`` accumulators
stay in registers and the requantize epilogue runs on them before the store. The padded
copy of the input is made once per call, vectorised over its 16 contiguous channels.
"""
from __future__ import annotations

from edgert.compiler.int8_depthwise import ACC_BLOCK, LANES, PAD_BLOCK, TAPS
from edgert.compiler.schedules import base
from edgert.compiler.schedules.base import CpuInfo, Knobs, ScheduleFailed, divisors, tile_epilogue, worth_parallel

INTRINSIC = "edgert_dw_dot16x4_vnni"
# Byte 4c + k of the permuted vector is column k of channel c (the load holds column-major 16-byte rows).
_PERMUTE = [LANES * (p % TAPS) + p // TAPS for p in range(LANES * TAPS)]


def _blocks(sch):
    found = {}
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        name = sch.get(b).name_hint
        for key in (PAD_BLOCK, ACC_BLOCK):
            if name == key or name.startswith(key + "_"):
                found[key] = b
    if len(found) != 2:
        raise ScheduleFailed("not the packed depthwise computation")
    return found[PAD_BLOCK], found[ACC_BLOCK]


def applies(sch) -> bool:
    try:
        _blocks(sch)
    except ScheduleFailed:
        return False
    return True


def apply(sch, cpu: CpuInfo, knobs: Knobs) -> None:
    if cpu.dot != "vnni" or LANES not in cpu.dot_lanes:
        raise ScheduleFailed("the packed depthwise conv needs the 16-lane VNNI form")
    register_intrinsic()
    pad, acc = _blocks(sch)
    n, i, j, c, ky, k = sch.get_loops(acc)
    width = int(sch.get(j).extent)
    # t accumulators in registers; a t that divides the row width keeps the tensorized loop
    # free of a bounds predicate (which tensorize refuses).
    options = divisors(width, 1, 8)
    t = knobs.choose(options, 4 if 4 in options else max(options))
    c_o, c_i = sch.split(c, [None, LANES])
    j_o, j_i = sch.split(j, [None, t])
    sch.reorder(n, i, j_o, c_o, ky, j_i, c_i, k)
    parallel = worth_parallel(sch, acc, cpu, int8=True)
    wb = tile_epilogue(sch, acc, "global", c_o)  # requantize on the register tile
    if parallel:
        sch.parallel(sch.fuse(n, i))
        pad_loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*pad_loops[:3]))
    init = sch.decompose_reduction(acc, ky)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(c_i, INTRINSIC)
    sch.unroll(j_i)
    sch.vectorize(sch.get_loops(pad)[-1])
    sch.vectorize(sch.get_loops(wb)[-1])


def register_intrinsic() -> None:
    """Make the tensor intrinsic known to TVM (tuning records replay ``tensorize`` by its name)."""
    base.register_intrinsic(INTRINSIC, _intrinsic)


def _intrinsic():
    """``C[16] += Σ_k A[k, 16] · B[16, k]``: one 64-byte load of A, one ``vpermb``, one ``vpdpbusd``."""
    from tvm.script import tirx as T

    n = LANES * TAPS

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((TAPS, LANES), "uint8", offset_factor=1),
        B: T.Buffer((LANES, TAPS), "int8", offset_factor=1),
        C: T.Buffer((LANES,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:LANES], A[0:TAPS, 0:LANES], B[0:LANES, 0:TAPS])
            T.writes(C[0:LANES])
            for i, k in T.grid(LANES, TAPS):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk, vi], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((TAPS, LANES), "uint8", offset_factor=1),
        B: T.Buffer((LANES, TAPS), "int8", offset_factor=1),
        C: T.Buffer((LANES,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:LANES], A[0:TAPS, 0:LANES], B[0:LANES, 0:TAPS])
            T.writes(C[0:LANES])
            C[T.ramp(0, 1, LANES)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], f"int32x{LANES}"),
                T.reinterpret(T.Shuffle([A.vload([0, 0], f"uint8x{n}")], _PERMUTE), dtype=f"int8x{n}"),
                B.vload([0, 0], f"int8x{n}"),
                dtype=f"int32x{LANES}",
            )

    return desc, impl
