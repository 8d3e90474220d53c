"""Shared pieces of the schedule templates: target facts and tunable decisions."""
from __future__ import annotations

from dataclasses import dataclass


def enable_vector_rounding() -> None:
    """Let TVM vectorise ``nearbyint`` (round half to even), as it already does ``round``.

    TVM 0.27 registers ``TVectorizable`` on ``tirx.round`` but not on ``tirx.nearbyint``,
    which ``topi.round`` (Relax's round, every quantize and requantize) emits; a vectorised
    loop holding one is silently scalarised: 16 scalar conversions per vector of int8
    outputs. LLVM's ``llvm.nearbyint`` takes vectors (``vrndscaleps``, ``frintx``).
    """
    import tvm

    op = tvm.ir.Op.get("tirx.nearbyint")
    if not op.get_attr("TVectorizable"):
        tvm.ir.register_op_attr("tirx.nearbyint", "TVectorizable", True)


def register_intrinsic(name: str, make) -> None:
    """Register the TVM tensor intrinsic ``name`` (``make()`` gives its description and
    implementation) unless it is registered already."""
    from tvm.s_tir import TensorIntrin

    try:
        TensorIntrin.get(name)
        return
    except Exception:  # not registered yet
        pass
    TensorIntrin.register(name, *make())


class ScheduleFailed(Exception):
    """A template does not fit the function after all (caught by the dispatcher)."""


@dataclass(frozen=True)
class CpuInfo:
    """What a template needs to know about the CPU it schedules for."""

    vector_bits: int = 128
    num_cores: int = 4
    # Architectural vector registers: 16 on x86 AVX2, 32 with AVX-512 or on AArch64.
    vector_registers: int = 16
    # Int8 dot-product instruction the templates may use: "vnni" (x86), "sdot" (Arm), "" none.
    dot: str = ""
    # Lane counts (int32 outputs per instruction) of the ``dot`` forms that compile, widest first.
    dot_lanes: tuple[int, ...] = ()

    @property
    def lanes(self) -> int:
        return max(1, self.vector_bits // 32)

    @classmethod
    def from_target(cls, tgt) -> CpuInfo:
        """From an edgert Target (its TOML's ``vector_bits`` and architecture)."""
        bits = int(getattr(tgt, "vector_bits", 0) or 128)
        regs = 32 if tgt.arch == "aarch64" or bits >= 512 else 16
        import os

        cores = int(tgt.cores or (os.cpu_count() if tgt.name == "host" else 4) or 4)
        dot, lanes = _dot_instruction(tgt)
        return cls(vector_bits=bits, num_cores=cores, vector_registers=regs, dot=dot, dot_lanes=lanes)


def _dot_instruction(tgt) -> tuple[str, tuple[int, ...]]:
    """The int8 dot product the target's LLVM features allow ("vnni", "sdot" or "") and its widths."""
    try:
        from tvm.target import codegen

        from edgert.compiler.schedules.int8_dot import compiling_lanes

        target = tgt.tvm_target()
        dot = ""
        if tgt.arch == "x86_64" and codegen.target_has_features("avx512vnni", target):
            dot = "vnni"
        elif tgt.arch == "aarch64" and codegen.target_has_features("dotprod", target):
            dot = "sdot"
        lanes = compiling_lanes(dot, target) if dot else ()
        return (dot, lanes) if lanes else ("", ())
    except Exception:  # a target LLVM cannot describe here: no dot-product template
        return "", ()


class Knobs:
    """The decisions a template makes: heuristic defaults, or one point of its search space.

    With ``path=None`` every choice takes the template's default. ``edgert tune`` walks the
    space by giving ``path`` (an index per choice point, in the order the template asks);
    ``branching`` records how many candidates each choice point had, for the enumeration.
    """

    def __init__(self, sch=None, path: list[int] | None = None):
        self.sch = sch
        self.path = path
        self.branching: list[int] = []

    def choose(self, candidates: list[int], default: int) -> int:
        candidates = list(dict.fromkeys(int(c) for c in candidates))
        i = len(self.branching)
        self.branching.append(len(candidates))
        if self.path is None:
            return default if default in candidates else candidates[0]
        index = self.path[i] if i < len(self.path) else (candidates.index(default) if default in candidates else 0)
        return candidates[min(index, len(candidates) - 1)]


def divisors(n: int, lo: int = 1, hi: int | None = None) -> list[int]:
    hi = n if hi is None else min(hi, n)
    return [d for d in range(lo, hi + 1) if n % d == 0]


def inline_side_inputs(sch, block) -> None:
    """Inline the element-wise blocks that feed ``block``'s epilogue from another input (a
    residual's dequantize, fused with the conv that it is added to), so the epilogue reads the
    input itself instead of a whole float copy made before the reduction."""
    anchor = sch.get(block)
    around = _closure(sch, block, sch.get_producers) + _closure(sch, block, sch.get_consumers)
    for b in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(b)
        if stmt.same_as(anchor) or any(stmt.same_as(a) for a in around):
            continue
        try:
            sch.compute_inline(b)
        except Exception:  # not element-wise (or its consumer is not): stays a loop nest
            continue


def _closure(sch, block, step) -> list:
    """The blocks reached from ``block`` by repeated ``step`` (get_producers/get_consumers), as stmts."""
    seen, todo = [], [block]
    while todo:
        for nxt in step(todo.pop()):
            stmt = sch.get(nxt)
            if not any(stmt.same_as(s) for s in seen):
                seen.append(stmt)
                todo.append(nxt)
    return seen


def tile_epilogue(sch, block, scope: str, loop):
    """Write ``block``'s output through a ``scope`` cache computed under ``loop`` (the register
    tile), with its fused elementwise consumers (bias, ReLU, requantize) inlined into that
    write-back; returns the write-back block."""
    # An epilogue that branches and joins again (GELU: x * 0.5 * (1 + erf(x / sqrt 2)) reads
    # the product twice) is first folded into its last block; the chain below then takes it
    # whole. Left as loop nests, its blocks ran scalar: 11 of vit_digits' 12.5 us per MLP matmul.
    for b in _closure(sch, block, sch.get_consumers):
        try:
            sch.compute_inline(sch.get_sblock(b.name_hint))
        except Exception:  # the output block, or one that is not element-wise: stays
            continue
    wb = sch.cache_write(block, 0, scope)
    # Until the chain ends (no single consumer, or one that cannot be inlined). No small cap:
    # a requantize, dequantize, residual add and requantize again (onnxruntime's uint8 recipe
    # on a TCN block) is 17 blocks, and a block left over runs as a scalar loop of its own.
    while True:
        consumers = sch.get_consumers(wb)
        if len(consumers) != 1:
            break
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:
            break
    sch.reverse_compute_at(wb, loop, preserve_unit_loops=True)
    return wb


# Below this many multiply-adds a reduction kernel runs on the calling thread: waking the
# pool costs more than the second core saves. Int8 dot-product kernels do ~4x the
# multiply-adds per cycle, so their bar is 4x higher. Measured at 2 threads on the AVX-512
# host: 2^20 for float too made MobileNetV2 (224) 11% slower; 2^20 for int8 made
# mobilenetv2_digits' int8 bundle 16% faster. EDGERT_PARALLEL_MIN_MACS overrides (float bar).
PARALLEL_MIN_MACS = 1 << 18
INT8_SPEEDUP = 4


def parallel_min_macs(int8: bool = False) -> int:
    """The parallel bar in multiply-adds (the float one from EDGERT_PARALLEL_MIN_MACS when set)."""
    import os

    return int(os.environ.get("EDGERT_PARALLEL_MIN_MACS", PARALLEL_MIN_MACS)) * (INT8_SPEEDUP if int8 else 1)


def loop_macs(sch, block) -> int:
    """``block``'s multiply-adds: the product of all its loop extents."""
    macs = 1
    for lp in sch.get_loops(block):
        macs *= int(sch.get(lp).extent)
    return macs


def worth_parallel(sch, block, cpu: CpuInfo, int8: bool = False) -> bool:
    """Whether ``block``'s loop nest is worth splitting across threads."""
    return cpu.num_cores > 1 and loop_macs(sch, block) >= parallel_min_macs(int8)
