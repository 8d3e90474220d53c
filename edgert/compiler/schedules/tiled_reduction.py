"""Conv (1-D/2-D, grouped, depthwise), dense/matmul and pooling: one register-tiled template.

After edgert's layout conversion (NHWC / NWC activations, HWIO weights) all of these are a
reduction whose output's innermost axis (channels, or matmul columns) is contiguous in the
output and in the weight. The kernel keeps a ``t x (k*lanes)`` tile of outputs in vector
registers: one vector load of weights is reused for ``t`` broadcast inputs, the pattern of
the x86/Arm ``conv2d_NCHWc``/GEMM micro-kernels. Fused epilogues (bias, ReLU, residual
add) are applied while the tile is still in registers.
"""
from __future__ import annotations

from edgert.compiler.schedules.base import (
    CpuInfo,
    Knobs,
    ScheduleFailed,
    divisors,
    inline_side_inputs,
    tile_epilogue,
    worth_parallel,
)


def _anchor(sch):
    """The single reduction block of the function, or None."""
    root = sch.get_sblock("root") if _has_root(sch) else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    reductions = [b for b in blocks if _reduction_vars(sch, b)]
    return reductions[0] if len(reductions) == 1 else None


def _has_root(sch) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:
        return False


def _reduction_vars(sch, block) -> list:
    from tvm.tirx import IterVar

    stmt = sch.get(block)
    return [iv for iv in stmt.iter_vars if iv.iter_type == IterVar.CommReduce]


def loop_kinds(sch, block):
    """``(loops, kinds)``: each loop of ``block`` with its iter var's kind (spatial or reduction),
    or None when the loops do not map one to one onto spatial/reduction iter vars."""
    from tvm.tirx import IterVar

    stmt = sch.get(block)
    loops = sch.get_loops(block)
    if len(stmt.iter_vars) != len(loops):
        return None
    # Map each loop to its iter var kind through the block's bindings (T.axis.remap keeps order).
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if any(k not in (IterVar.DataPar, IterVar.CommReduce) for k in kinds):
        return None
    return loops, kinds


def _plan(sch, block):
    """Loops of the anchor: (spatial loops, reduction loops, vector loop, tile loop) or None."""
    from tvm.tirx import IterVar

    stmt = sch.get(block)
    mapped = loop_kinds(sch, block)
    if mapped is None:
        return None
    loops, kinds = mapped
    spatial = [lp for lp, k in zip(loops, kinds, strict=True) if k == IterVar.DataPar]
    reduce = [lp for lp, k in zip(loops, kinds, strict=True) if k == IterVar.CommReduce]
    if not spatial or not reduce:
        return None
    # The output's innermost axis must be the last spatial loop (contiguous stores).
    out = stmt.writes[0]
    last_index = out.region[-1].min
    spatial_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type == IterVar.DataPar]
    last_var = spatial_vars[-1]
    if not (hasattr(last_index, "same_as") and last_index.same_as(last_var)):
        return None
    return spatial, reduce


def applies(sch) -> bool:
    block = _anchor(sch)
    return block is not None and _plan(sch, block) is not None


def apply(sch, cpu: CpuInfo, knobs: Knobs) -> None:
    block = _anchor(sch)
    plan = _plan(sch, block)
    if plan is None:
        raise ScheduleFailed("no tiled reduction")
    spatial, reduce = plan
    root = sch.get_sblock("root")

    # Producers such as padding are computed on the fly inside the kernel.
    for b in sch.get_child_blocks(root):
        if not sch.get(b).same_as(sch.get(block)) and not _reduction_vars(sch, b) and _is_producer_of(sch, b, block):
            try:
                sch.compute_inline(b)
            except Exception:
                pass
    inline_side_inputs(sch, block)

    extents = [int(sch.get(lp).extent) for lp in spatial]
    vec_extent = extents[-1]
    lanes = cpu.lanes
    if vec_extent % lanes:
        # Ragged channel counts (24, 1000 with 16 lanes): a narrower vector that divides them
        # beats a predicated tail, which LLVM scalarises (MobileNetV2's 144->24 1x1 conv: 3.6x).
        lanes = next((w for w in (lanes // 2, lanes // 4) if w >= 4 and vec_extent % w == 0), lanes)

    # Vector axis: k vectors of `lanes` outputs; tile axis: t of them kept in registers.
    tile_idx = next((i for i in range(len(spatial) - 2, -1, -1) if extents[i] > 1), None)
    # Power-of-two widths only: LLVM splits a 3-vector type badly (measured 2-6x slower here).
    k_candidates = [k for k in (1, 2, 4) if vec_extent % (k * lanes) == 0] or [1]

    def t_options(k: int) -> list[int]:
        if tile_idx is None:
            return [1]
        # t*k accumulators, k weight vectors and one broadcast input must fit the register
        # file: one more and LLVM spills the tile (measured 2.4x slower with AVX-512).
        hi = min(8, max(1, (cpu.vector_registers - 1 - k) // k))
        opts = divisors(extents[tile_idx], 1, hi)
        # Short odd rows (7x7 maps) have no good divisor: allow a ragged last tile.
        extra = [t for t in (2, 4) if t <= hi and t not in opts and extents[tile_idx] > t]
        return sorted(opts + extra)

    # Default: a tile that divides the row. A ragged tail measured up to 2x faster on one core
    # for 3x3 convs on 7x7/14x14 maps, but kept two threads from scaling (ResNet18: 1.8x slower
    # at 2 threads); `edgert tune` measures both and picks. Then the most accumulators that
    # fit the register file, then a tile of about 4 (k=2,t=8 measured 2x slower than k=4,t=4
    # with AVX-512).
    def exact(t: int) -> bool:
        return tile_idx is None or extents[tile_idx] % t == 0

    k_default, t_default = max(
        ((kk, tt) for kk in k_candidates for tt in t_options(kk)),
        key=lambda kt: (exact(kt[1]), kt[0] * kt[1], -abs(kt[1] - 4), kt[0]),
    )
    k = knobs.choose(k_candidates, k_default)
    vec_inner = min(vec_extent, k * lanes)
    t_candidates = t_options(k)
    t = knobs.choose(t_candidates, t_default if k == k_default else max(t_candidates))

    vo, vi = sch.split(spatial[-1], [None, vec_inner])
    outer = list(spatial[:-1])
    ti = None
    if tile_idx is not None:
        to, ti = sch.split(spatial[tile_idx], [None, t])
        outer[tile_idx] = to
    # Whichever operand is larger is streamed once: output-channel blocks outermost when the
    # weights outweigh the activations (late layers), spatial tiles outermost otherwise.
    weights_outer = knobs.choose([0, 1], 1 if _weight_bytes(sch, block) > _largest_read_bytes(sch, block, skip_weight=True) else 0)
    nest = [vo, *outer] if weights_outer else [*outer, vo]
    sch.reorder(*nest, *reduce, *([ti] if ti is not None else []), vi)

    # Constant weights are repacked at compile time so that one output-channel block's
    # weights are contiguous in the order the kernel reads them (HWIO → O/V,H,W,I,V).
    if vec_extent % vec_inner == 0 and knobs.choose([0, 1], 1):
        _pack_weight(sch, block, vec_inner)

    # Fused elementwise consumers (bias, ReLU, residual add) run on the register tile.
    parallel = worth_parallel(sch, block, cpu)
    wb = tile_epilogue(sch, block, "local", nest[-1])
    # One parallel loop over all tiles; contiguous chunks keep each thread on few weight blocks.
    if parallel:
        sch.parallel(sch.fuse(*nest) if len(nest) > 1 else nest[0])
    sch.vectorize(vi)
    if ti is not None:
        sch.unroll(ti)
    wb_loops = sch.get_loops(wb)
    sch.vectorize(wb_loops[-1])
    init = sch.decompose_reduction(block, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])


def _is_producer_of(sch, b, block) -> bool:
    return any(sch.get(c).same_as(sch.get(block)) for c in sch.get_consumers(b))


def _region_bytes(buf) -> int:
    n = 1
    for d in buf.shape:
        n *= int(d)
    return n * 4


def _weight_bytes(sch, block) -> int:
    """Size of the read buffer indexed by the output's innermost axis (the weight), else 0."""
    stmt = sch.get(block)
    spatial_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type == 0]
    last = spatial_vars[-1]
    for r in stmt.reads:
        idx = r.region[-1].min
        if hasattr(idx, "same_as") and idx.same_as(last) and not r.source.same_as(stmt.writes[0].source):
            return _region_bytes(r.source)
    return 0


def _largest_read_bytes(sch, block, skip_weight: bool) -> int:
    stmt = sch.get(block)
    w = _weight_bytes(sch, block)
    sizes = [_region_bytes(r.source) for r in stmt.reads if not r.source.same_as(stmt.writes[0].source)]
    if skip_weight and w in sizes:
        sizes.remove(w)
    return max(sizes, default=0)


def param_index(sch, buffer) -> int | None:
    """Position of ``buffer`` among the function's parameters (by identity: two parameters
    may share a name, e.g. a conv and its low-rank twin both reading ``param_0``)."""
    return next((i for i, p in enumerate(sch.mod["main"].params) if p.same_as(buffer)), None)


def is_layout_free(sch, buffer) -> bool:
    """Whether ``buffer`` is a parameter Relax marked as a constant weight (AttachAttrLayoutFreeBuffers)."""
    attrs = sch.mod["main"].attrs or {}
    index = param_index(sch, buffer)
    return index is not None and "layout_free_buffers" in attrs and index in {int(i) for i in attrs["layout_free_buffers"]}


def _pack_weight(sch, block, vec: int) -> bool:
    stmt = sch.get(block)
    spatial_vars = [iv.var for iv in stmt.iter_vars if iv.iter_type == 0]
    last = spatial_vars[-1]
    for i, r in enumerate(stmt.reads):
        idx = r.region[-1].min
        if not is_layout_free(sch, r.source) or len(r.region) < 2:
            continue
        if not (hasattr(idx, "same_as") and idx.same_as(last)):
            continue
        param = param_index(sch, r.source)
        cache = sch.cache_read(block, i, "global")
        sch.transform_layout(cache, ("write", 0), lambda *ax: (ax[-1] // vec, *ax[:-1], ax[-1] % vec))
        # The pipeline (pipeline.prepack_weights) removes this block and packs the constant
        # once at compile time; the annotations say which parameter and how.
        sch.annotate(cache, "meta_schedule.layout_rewrite_preproc", True)
        sch.annotate(cache, "edgert.pack_param", param)
        sch.annotate(cache, "edgert.pack_vec", vec)
        return True
    return False


def pack(weight, vec: int):
    """The numpy twin of the layout ``_pack_weight`` gives: (..., C) → (C/vec, ..., vec)."""
    import numpy as np

    w = weight.reshape(*weight.shape[:-1], weight.shape[-1] // vec, vec)
    return np.ascontiguousarray(np.moveaxis(w, -2, 0))
