"""Build, cache and call the generated whole-graph function of a HostExecutor for one input signature.

The executor's steps (after constant folding and Conv+activation fusion) are lowered in order into one
Python function that calls numba kernels on static shapes; numba compiles it as a whole, so the
per-node costs of the interpreter (dict lookups, argument parsing, numba's dispatch of each kernel)
are gone. The source is written to edgert's cache directory under a name made of its hash (and of
the kernels' sources), so ``numba.njit(cache=True)`` keeps the machine code next to it and a later
process with the same model and shapes loads it instead of compiling.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.host.codegen.gen import KERNELS, Gen, NotLowerable, Val

Signature = tuple[tuple[tuple[int, ...], str], ...]


@dataclass
class CompiledPlan:
    """``plan(feeds) -> {output: array}`` for feeds of exactly ``signature`` (shapes and dtypes, input order)."""

    fn: Any
    params: np.ndarray
    input_names: list[str]
    output_names: list[str]
    returned: list[str]  # outputs the function returns, in order; the others are constants
    consts: dict[str, np.ndarray]
    path: Path

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.fn(self.params, *[feeds[n] for n in self.input_names])
        got = dict(zip(self.returned, outs, strict=True))
        return {n: got[n] if n in got else self.consts[n] for n in self.output_names}


def signature(feeds: dict[str, np.ndarray], names: list[str]) -> Signature:
    return tuple((feeds[n].shape, feeds[n].dtype.str) for n in names)


def multiply_adds(ex, values: dict[str, np.ndarray]) -> int:
    """Multiply-adds of the Conv/Gemm/MatMul steps (the work that decides whether threads pay)."""
    total = 0
    for step in ex.steps:
        c = step.ctx
        if c.op_type == "Conv":
            w = values[c.inputs[1]]
            total += math.prod(values[c.outputs[0]].shape) * math.prod(w.shape[1:])
        elif c.op_type in ("Gemm", "MatMul"):
            a = values[c.inputs[0]]
            total += math.prod(values[c.outputs[0]].shape) * (a.shape[0] if c.op_type == "Gemm" and c.attr("transA", 0)
                                                               else a.shape[-1])
    return total


def trace(ex, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of one interpreted run of the executor on ``feeds`` (their shapes are the plan's)."""
    values = dict(ex.consts)
    values.update(feeds)
    return ex._run(values, keep=True)


def lower(ex, values: dict[str, np.ndarray]) -> tuple[str, np.ndarray, list[str]]:
    """(source, params, returned outputs) of the executor's steps, given every value of one run."""
    from edgert.host.codegen.lower import LOWERINGS

    g = Gen()
    inputs = [g.input(n, values[n].shape) for n in ex.input_names]
    for n in ex.input_names:
        if values[n].dtype != np.float32:
            raise NotLowerable(f"input {n} is {values[n].dtype}, not float32")

    def val(name: str) -> Val | None:
        if not name:
            return None
        v = values[name]
        return Val(name, tuple(v.shape), v.dtype, ex.consts.get(name))

    for step in ex.steps:
        ctx = step.ctx
        fn = LOWERINGS.get(ctx.op_type)
        if fn is None:
            raise NotLowerable(f"no generated form for {ctx.op_type}")
        ins, outs = [val(n) for n in ctx.inputs], [val(n) for n in ctx.outputs]
        for v in (*ins, *outs):
            if v is not None and v.const is None and v.dtype != np.float32:
                raise NotLowerable(f"{ctx.op_type} node '{ctx.name}': value {v.name} is {v.dtype}, not float32")
        fn(g, ctx, ins, outs)
    returned = [n for n in ex.output_names if n not in ex.consts]
    comment = f"edgert host executor: generated whole-graph function ({len(ex.steps)} steps)"
    return g.source(inputs, [g.vars[n] for n in returned], comment), g.params(), returned


def _kernels_digest() -> str:
    """Hash of the sources the generated code calls into: numba's cache of a caller does not see callee edits."""
    h = hashlib.sha256()
    for mod in sorted({p.split(":")[0] for p in KERNELS.values()} | {"edgert.host.jit"}):
        h.update(Path(importlib.util.find_spec(mod).origin).read_bytes())
    return h.hexdigest()


_DIGEST: str | None = None


def load(source: str) -> Any:
    """Write ``source`` to the cache directory (once, by hash) and import its ``run``."""
    global _DIGEST
    from edgert.fsutil import cache_dir
    from edgert.model import require

    numba = require("numba", "host")

    if _DIGEST is None:
        _DIGEST = _kernels_digest()
    key = hashlib.sha256(f"{source}\n{_DIGEST}\n{numba.__version__}\n{sys.version}".encode()).hexdigest()[:32]
    name = f"edgert_hostgen_{key}"
    module = sys.modules.get(name)
    if module is None:
        path = cache_dir("host-codegen") / f"{name}.py"
        # The name is the source's hash: a file that no longer holds that source (damaged or
        # edited in the cache) is written again rather than imported.
        if not path.is_file() or path.read_text(errors="replace") != source:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)  # atomic: a concurrent process sees the whole file or none
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.run, Path(module.__file__)


def compile_errors() -> tuple[type[BaseException], ...]:
    """What numba raises when it cannot type or lower a generated function."""
    from numba.core.errors import NumbaError

    return (NumbaError,)


def build(ex, feeds: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> CompiledPlan:
    """The compiled plan for ``feeds``' signature; ``values`` = every value of one interpreted run on them."""
    source, params, returned = lower(ex, values)
    fn, path = load(source)
    plan = CompiledPlan(fn, params, list(ex.input_names), list(ex.output_names), returned,
                        {n: ex.consts[n] for n in ex.output_names if n in ex.consts}, path)
    plan(feeds)  # compile now (or load the machine code from the cache), not in the middle of a timed run
    return plan
