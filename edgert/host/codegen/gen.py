"""Source assembly for a generated whole-graph function: value names, packed constants, kernels used."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgert.host.codegen import kernels as _kernels

# Kernels a generated module may call: name -> "module:attribute" of an edgert.host.jit.Kernel.
KERNELS = {name: f"edgert.host.codegen.kernels:{name}"
           for name in ("conv2d", "dense", "batched_matmul", "max_pool2d", "mean_middle", "layer_norm", "softmax_rows",
                        "binary4", "unary", "transpose6", "place3", "pad4", "channel_affine")}
KERNELS["depthwise2d"] = "edgert.host.ops.conv:_depthwise2d"
KERNELS["depthwise2d_wide"] = "edgert.host.ops.conv:_depthwise2d_wide"
_ALIGN = 16  # float32 elements: each constant starts on a 64-byte boundary


class NotLowerable(Exception):
    """This step (or the whole graph) has no generated-code form; the executor interprets the model."""


@dataclass(frozen=True)
class Val:
    """A value of the graph with its static shape; ``const`` is its array when it is known at load time."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    const: np.ndarray | None = None


def f32(v: float) -> str:
    """A float32 literal of the generated source."""
    if math.isnan(v):
        return "np.float32(np.nan)"
    if math.isinf(v):
        return "np.float32(np.inf)" if v > 0 else "np.float32(-np.inf)"
    return f"np.float32({float(np.float32(v))!r})"


class Gen:
    """Collects the body of ``run(params, *inputs)``: one line per step, constants sliced out of ``params``."""

    def __init__(self) -> None:
        self.body: list[str] = []
        self.header: list[str] = []
        self.vars: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}  # variable -> its static shape (to skip no-op reshapes)
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.kernels: set[str] = set()
        self._consts: dict[int, str] = {}
        self._alive: list[np.ndarray] = []  # keeps id() of every packed array unique
        self._n = 0

    def _name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self.vars[name] = var = self._name("x")
        self.shapes[var] = tuple(shape)
        return var

    def const(self, arr: np.ndarray) -> str:
        """A name for a float32 constant (each distinct array packed once into ``params``)."""
        key = id(arr)
        if key in self._consts:
            return self._consts[key]
        a = np.ascontiguousarray(arr, dtype=np.float32)
        start = self.size
        self.chunks.append(a.reshape(-1))
        pad = -a.size % _ALIGN
        if pad:
            self.chunks.append(np.zeros(pad, np.float32))
        self.size += a.size + pad
        name = self._name("c")
        flat = f"params[{start}:{start + a.size}]"
        self.header.append(f"{name} = {flat}" if a.ndim == 1 else f"{name} = {flat}.reshape({tuple(a.shape)})")
        self.shapes[name] = tuple(a.shape)
        self._consts[key] = name
        self._alive.append(arr)
        return name

    def ref(self, v: Val) -> str:
        """The expression for an input of a step: a computed value's variable or a constant."""
        if v.const is not None:
            if v.const.dtype != np.float32:
                raise NotLowerable(f"constant {v.name} is {v.const.dtype}, not float32")
            return self.const(v.const)
        return self.vars[v.name]

    def view(self, v: Val, shape: tuple[int, ...]) -> str:
        """``v`` as an array of ``shape`` (same size; a reshape only where the shape differs)."""
        ref = self.ref(v)
        shape = tuple(int(d) for d in shape)
        return ref if self.shapes.get(ref) == shape else f"{ref}.reshape({shape})"

    def kernel(self, name: str) -> str:
        self.kernels.add(name)
        return f"_k_{name}"

    def code(self, name: str) -> str:
        """An operation code of edgert.host.codegen.kernels (ADD, RELU, ...) as a literal."""
        return str(int(getattr(_kernels, name)))

    def temp(self, expr: str) -> str:
        name = self._name("t")
        self.body.append(f"{name} = {expr}")
        return name

    def emit(self, line: str) -> None:
        self.body.append(line)

    def define(self, out: Val, expr: str, shape: tuple[int, ...]) -> None:
        """``out`` = ``expr``, an array of ``shape`` (reshaped to out's shape where they differ)."""
        self.vars[out.name] = var = self._name("v")
        target = tuple(int(d) for d in out.shape)
        self.body.append(f"{var} = {expr}" if tuple(shape) == target else f"{var} = {expr}.reshape({target})")
        self.shapes[var] = target

    def params(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(_ALIGN, np.float32)

    def source(self, inputs: list[str], outputs: list[str], comment: str) -> str:
        imports = []
        for name in sorted(self.kernels):
            module, attr = KERNELS[name].split(":")
            imports.append(f"from {module} import {attr} as _kernel_{name}")
            imports.append(f"_k_{name} = _kernel_{name}.compiled()")
        lines = [f"# {comment}", "import numba", "import numpy as np", *imports, "", "",
                 "@numba.njit(cache=True, nogil=True)", f"def run(params, {', '.join(inputs)}):"]
        lines += [f"    {ln}" for ln in (*self.header, *self.body)]
        lines.append(f"    return ({''.join(o + ', ' for o in outputs)})")
        return "\n".join(lines) + "\n"
