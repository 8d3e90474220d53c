"""Reductions along rows (softmax, layer norm, mean over the last axis): parallel rows, vector epilogues."""
from __future__ import annotations

from edgert.compiler.schedules.base import CpuInfo, Knobs


def applies(sch) -> bool:
    from edgert.compiler.schedules.tiled_reduction import _reduction_vars

    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    return any(_reduction_vars(sch, b) for b in blocks)


def apply(sch, cpu: CpuInfo, knobs: Knobs) -> None:
    from edgert.compiler.schedules.injective import schedule_loop_nest
    from edgert.compiler.schedules.tiled_reduction import _reduction_vars

    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    # Element-wise producers (e.g. the exp of softmax) are recomputed where they are consumed.
    for b in blocks[:-1]:
        if not _reduction_vars(sch, b):
            try:
                sch.compute_inline(b)
            except Exception:
                pass
    for b in list(sch.get_child_blocks(sch.get_sblock("root"))):
        loops = sch.get_loops(b)
        if _reduction_vars(sch, b):
            spatial = [lp for lp in loops[: len(loops) - len(_reduction_vars(sch, b))]]
            if spatial and cpu.num_cores > 1 and _extent(sch, spatial) >= 2 * cpu.num_cores:
                sch.parallel(sch.fuse(*spatial) if len(spatial) > 1 else spatial[0])
        else:
            schedule_loop_nest(sch, b, cpu, knobs)


def _extent(sch, loops) -> int:
    n = 1
    for lp in loops:
        n *= int(sch.get(lp).extent)
    return n
