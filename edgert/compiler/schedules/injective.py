"""Element-wise, transpose, pad, reshape: inline into the output loop nest, vectorise, parallelise."""
from __future__ import annotations

from edgert.compiler.schedules.base import CpuInfo, Knobs

# Below this many elements a thread pool wake-up costs more than the loop.
_PARALLEL_MIN = 16384


def _blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def applies(sch) -> bool:
    from edgert.compiler.schedules.tiled_reduction import _reduction_vars

    blocks = _blocks(sch)
    return bool(blocks) and not any(_reduction_vars(sch, b) for b in blocks)


def apply(sch, cpu: CpuInfo, knobs: Knobs) -> None:
    # Everything but the blocks that write the function's outputs is computed on the fly.
    for b in _blocks(sch)[:-1]:
        try:
            sch.compute_inline(b)
        except Exception:
            pass
    for b in _blocks(sch):
        schedule_loop_nest(sch, b, cpu, knobs)


def schedule_loop_nest(sch, block, cpu: CpuInfo, knobs: Knobs) -> None:
    """Vectorise the innermost loop (when its extent allows) and parallelise the rest."""
    loops = sch.get_loops(block)
    if not loops:
        return
    extents = [int(sch.get(lp).extent) for lp in loops]
    total = 1
    for e in extents:
        total *= e
    inner = loops[-1]
    lanes = cpu.lanes
    vec = None
    if extents[-1] % lanes == 0 and extents[-1] >= lanes:
        width = lanes * knobs.choose([m for m in (1, 2, 4) if extents[-1] % (lanes * m) == 0], 1)
        outer_inner, vec = sch.split(inner, [None, width])
        loops = [*loops[:-1], outer_inner]
    elif 1 < extents[-1] <= 4 * lanes:
        vec, loops = inner, loops[:-1]
    if vec is not None:
        sch.vectorize(vec)
    if loops and total >= _PARALLEL_MIN and cpu.num_cores > 1:
        sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
