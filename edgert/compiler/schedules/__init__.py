"""edgert's default CPU schedules: what a workload gets when the tuning database has no record.

TVM 0.27 compiles an unscheduled PrimFunc as plain nested loops (10-100x slower than
onnxruntime). Every fused function is matched against a few templates, most specific
first. A template asks ``Knobs`` for each decision (vector width, register tile, loop
order): a compile takes the heuristic defaults, ``edgert tune`` enumerates the choices,
measures them and keeps the best as a MetaSchedule tuning record.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgert.compiler.schedules.base import CpuInfo, Knobs, ScheduleFailed

__all__ = [
    "CpuInfo",
    "Knobs",
    "ScheduleFailed",
    "Rule",
    "match",
    "schedule",
    "schedule_func",
    "enumerate_space",
    "apply_defaults",
    "is_scheduled",
    "ScheduleCounts",
]


@dataclass(frozen=True)
class Rule:
    """A template: ``applies(sch)`` says whether it fits, ``apply(sch, cpu, knobs)`` schedules in place."""

    name: str
    applies: Callable[[Any], bool]
    apply: Callable[[Any, CpuInfo, Knobs], None]


def _rules() -> list[Rule]:
    from edgert.compiler.schedules import injective, int8_depthwise, int8_dot, row_reduction, tiled_reduction

    return [
        Rule("int8_depthwise", int8_depthwise.applies, int8_depthwise.apply),
        Rule("int8_dot", int8_dot.applies, int8_dot.apply),
        Rule("tiled_reduction", tiled_reduction.applies, tiled_reduction.apply),
        Rule("row_reduction", row_reduction.applies, row_reduction.apply),
        Rule("injective", injective.applies, injective.apply),
    ]


RULES: list[Rule] = []


def rules() -> list[Rule]:
    if not RULES:
        from edgert.compiler.schedules.base import enable_vector_rounding

        enable_vector_rounding()
        RULES.extend(_rules())
    return RULES


def match(func) -> Rule | None:
    """The first template that fits ``func`` (a PrimFunc), or None."""
    from tvm import s_tir

    if not _schedulable(func):
        return None
    for rule in rules():
        try:
            if rule.applies(s_tir.Schedule(func)):
                return rule
        except Exception:  # an analysis that trips on an unusual function means "does not fit"
            continue
    return None


def schedule_func(func, cpu: CpuInfo, path: list[int] | None = None):
    """``(scheduled PrimFunc, rule name)``, or ``(None, None)`` when no template fits or all fail."""
    sch, rule, _ = schedule(func, cpu, path)
    return (sch.mod["main"], rule) if sch is not None else (None, None)


def schedule(func, cpu: CpuInfo, path: list[int] | None = None):
    """``(Schedule, rule name, Knobs)`` of the first template that works, else ``(None, None, None)``.

    The Schedule is traced, so ``edgert tune`` can store it as a MetaSchedule tuning record.
    """
    from tvm import s_tir

    if not _schedulable(func):
        return None, None, None
    for rule in rules():
        sch = s_tir.Schedule(func)
        try:
            if not rule.applies(sch):
                continue
            knobs = Knobs(sch, path=path)
            rule.apply(sch, cpu, knobs)
        except Exception:  # TVM refuses a primitive on an unusual function: try the next template
            continue
        return sch, rule.name, knobs
    return None, None, None


def enumerate_space(func, cpu: CpuInfo, limit: int = 64):
    """Every knob setting of the template that fits ``func`` (default first), as traced Schedules."""
    first, rule, knobs = schedule(func, cpu)
    if first is None:
        return []
    # Depth-first over choice points; later points may depend on earlier choices.
    out, seen = [], set()
    stack: list[list[int]] = [[]]
    while stack and len(out) < limit:
        path = stack.pop()
        sch, _, k = schedule(func, cpu, path)
        if sch is None:
            continue
        depth = len(path)
        if depth < len(k.branching):
            for i in reversed(range(k.branching[depth])):
                stack.append([*path, i])
            continue
        key = tvm_structural_key(sch.mod)
        if key not in seen:
            seen.add(key)
            out.append(sch)
    default_key = tvm_structural_key(first.mod)
    out.sort(key=lambda s: tvm_structural_key(s.mod) != default_key)
    if not any(tvm_structural_key(s.mod) == default_key for s in out):
        out.insert(0, first)
    return out


def tvm_structural_key(mod) -> int:
    import tvm_ffi

    return int(tvm_ffi.structural_hash(mod))


@dataclass
class ScheduleCounts:
    """What the compile report says about schedules: tuned (database), default (template), naive."""

    tuned: list[str] = field(default_factory=list)
    default: list[str] = field(default_factory=list)
    naive: list[str] = field(default_factory=list)
    hand: list[str] = field(default_factory=list)  # kernels scheduled by their author (sparse)

    def to_json(self) -> dict[str, Any]:
        return {
            "tuned": len(self.tuned),
            "default": len(self.default),
            "naive": len(self.naive),
            "hand_scheduled": len(self.hand),
            "naive_functions": sorted(self.naive),
        }

    def summary(self) -> str:
        return (
            f"{len(self.tuned)} tuned, {len(self.default)} edgert default, {len(self.naive)} naive"
            + (f", {len(self.hand)} hand-scheduled" if self.hand else "")
        )


def apply_defaults(mod, cpu: CpuInfo, counts: ScheduleCounts | None = None):
    """Schedule every PrimFunc of ``mod`` not scheduled yet; returns ``(mod, counts)``."""
    import tvm

    counts = counts or ScheduleCounts()
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if is_scheduled(func):
            continue
        scheduled, _ = schedule_func(func, cpu)
        if scheduled is None:
            counts.naive.append(gv.name_hint)
            continue
        updates[gv] = scheduled.with_attr("tirx.is_scheduled", True)
        counts.default.append(gv.name_hint)
    for gv, func in updates.items():
        mod[gv] = func
    return mod, counts


def is_scheduled(func) -> bool:
    """Whether a PrimFunc already has a schedule (template, tuning record or hand-written kernel)."""
    attrs = func.attrs
    return bool(attrs is not None and "tirx.is_scheduled" in attrs and attrs["tirx.is_scheduled"])


def _schedulable(func) -> bool:
    # Symbolic extents need runtime-dependent tiling: templates call int() on every extent and
    # fail on them, so such functions stay on TVM's path (reported as naive).
    return func.body is not None
