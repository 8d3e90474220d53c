"""Run an ONNX graph node by node with the operators of ``edgert.host.ops``.

Nodes run in topological order; each intermediate buffer is dropped right
after its last consumer. Nodes whose inputs are all constants (weight
DequantizeLinear, Constant, shape arithmetic on initializers) are evaluated
once at load, so operators see their weights as constants and can repack them
(CSR for sparse weights, transposed/reshaped dense weights).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import InputError, ModelError, UnsupportedOperatorError
from edgert.host import registry


class UnsupportedHostOperatorError(UnsupportedOperatorError):
    """The model uses operators (or opsets) the host executor has no implementation for."""


CODEGEN_MODES = ("auto", "always", "never")
# codegen="auto": the run that compiles a model's whole-graph function (one-off runs never pay numba's compile) ...
AUTO_COMPILE_RUN = 3
# ... for models up to this many multiply-adds: above it the work per node dwarfs the interpreter's overhead,
# and the interpreter splits each large kernel over threads (the generated function runs on one thread).
AUTO_MAX_MACS = 20_000_000
_MAX_PLANS = 8  # input signatures compiled per executor


@dataclass(frozen=True)
class HostOptions:
    """threads: threads per run (edgert.host.parallel), None = all cores.
    sparse_threshold: min weight sparsity for the CSR kernels (above 1: never; None: measured defaults).
    codegen: run the model as one generated numba function (edgert.host.codegen) per input signature:
    "auto" from the AUTO_COMPILE_RUN-th run with the same shapes, for models where it can lower every node
    and of at most AUTO_MAX_MACS multiply-adds; "always" from the first run (an error when a node
    cannot be lowered); "never" (the per-node interpreter only)."""

    threads: int | None = None
    sparse_threshold: float | None = None  # None: measured defaults (sparse.SPARSE_THRESHOLD, MATVEC_SPARSE_THRESHOLD)
    codegen: str = "auto"


@dataclass
class NodeContext:
    """What an operator sees of its node: attributes, constant inputs, a per-node cache for repacked weights."""

    name: str
    op_type: str
    opset: int
    attrs: dict[str, Any]
    inputs: list[str]
    outputs: list[str]
    consts: dict[int, np.ndarray]
    options: HostOptions = field(default_factory=HostOptions)
    threads: int = 1  # threads this node may split its work over (edgert.host.parallel)
    cache: dict[str, Any] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def const(self, index: int) -> np.ndarray | None:
        """Input ``index`` when it is known at load time, else None."""
        return self.consts.get(index)


@dataclass
class _Step:
    ctx: NodeContext
    impl: registry.OpImpl
    free: list[str]  # values whose last use is this node


def _clamp_bounds(ctx: NodeContext) -> tuple[float, float] | None:
    """(lo, hi) of a Relu or of a Clip whose bounds are constants; None otherwise."""
    if ctx.op_type == "Relu":
        return 0.0, float("inf")
    if ctx.opset < 11:
        return float(ctx.attr("min", -np.inf)), float(ctx.attr("max", np.inf))
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = ctx.inputs[i] if len(ctx.inputs) > i else ""
        if name and ctx.const(i) is None:
            return None
        bounds.append(float(ctx.const(i)) if name else default)
    return bounds[0], bounds[1]


def _attr_value(a) -> Any:
    from onnx import helper, numpy_helper

    if a.type == a.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type in (a.GRAPH, a.GRAPHS):
        raise UnsupportedHostOperatorError(
            f"attribute '{a.name}' holds a subgraph; the host executor runs no control flow (If/Loop/Scan)"
        )
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode() for x in v]
    return v


# Operators whose output shape is read from an input (index): checked before they allocate.
_SHAPE_ARG = {"ConstantOfShape": 0, "Expand": 1}


# What an operator raises on a malformed node or mismatched shapes (e.g. group=0 divides by zero).
_NODE_ERRORS = (ValueError, IndexError, TypeError, KeyError, OverflowError, ZeroDivisionError)


def _node_error(ctx: NodeContext, exc: BaseException) -> ModelError:
    return ModelError(f"{ctx.op_type} node '{ctx.name}' failed on the host executor: {exc}; check the model "
                      "with onnx.checker and its input shapes")


def _check_proto(proto) -> None:
    """The load-time checks of edgert.model (wiring, opset, initializer sizes, declared input sizes)."""
    from edgert.model import _ONNX_DTYPES, check_initializers, check_size, check_structure

    where = proto.graph.name or "the model"
    check_structure(proto, where)
    check_initializers(proto, where)
    for i in proto.graph.input:
        tt = i.type.tensor_type
        dims = tuple(d.dim_value for d in tt.shape.dim if d.HasField("dim_value"))
        check_size(i.name, dims, _ONNX_DTYPES.get(tt.elem_type, "float32"), "input", "re-export it with a smaller shape")


def _load_proto(model_or_path: Any):
    import onnx

    if hasattr(model_or_path, "proto") and getattr(model_or_path, "format", "onnx") == "onnx":
        if model_or_path.proto is None:
            raise ModelError("the host executor runs ONNX models; this Model has no ONNX graph")
        return model_or_path.proto
    if getattr(model_or_path, "format", None) == "tflite":
        raise ModelError("the host executor runs ONNX models, not TFLite; compile the .tflite file with 'edgert compile'")
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    from google.protobuf.message import DecodeError

    from edgert.model import _load_external_data

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError):
        raise ModelError(f"{path} is not a valid ONNX model; re-export it or check the file is complete") from None
    _load_external_data(proto, path)
    return proto


class HostExecutor:
    """Runs an ONNX model (path, ``onnx.ModelProto`` or ``edgert.Model``) on this host with NumPy + Numba."""

    def __init__(self, model_or_path: Any, threads: int | None = None, options: HostOptions | None = None):
        from onnx import numpy_helper

        self.options = options or HostOptions(threads=threads)
        if threads is not None and self.options.threads != threads:
            raise ValueError("give threads either directly or in options, not both")
        proto = _load_proto(model_or_path)
        _check_proto(proto)
        graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for t in graph.sparse_initializer:
            raise ModelError(f"sparse initializer '{t.values.name}' is not supported; store it dense")
        self.input_names = [i.name for i in graph.input if i.name not in self.consts]
        self.input_types = {i.name: i.type.tensor_type for i in graph.input if i.name not in self.consts}
        self.output_names = [o.name for o in graph.output]
        nodes = self._toposort(graph)
        self._check_supported(nodes)
        self._set_threads()
        if self.options.codegen not in CODEGEN_MODES:
            raise ValueError(f"codegen must be one of {', '.join(CODEGEN_MODES)}, not {self.options.codegen!r}")
        self._plans: dict[Any, Any] = {}  # input signature -> CompiledPlan, None (not lowerable) or runs so far
        self.codegen_skipped: str | None = None  # why the last attempt to generate code fell back to the interpreter
        self.steps: list[_Step] = []
        for i, node in enumerate(nodes):
            impl = registry.lookup(node.op_type, self.opset)
            attrs = {a.name: _attr_value(a) for a in node.attribute}
            ctx = NodeContext(
                name=node.name or f"{node.op_type}#{i}", op_type=node.op_type, opset=self.opset, attrs=attrs,
                inputs=list(node.input), outputs=list(node.output),
                consts={k: self.consts[n] for k, n in enumerate(node.input) if n in self.consts},
                options=self.options, threads=self.threads,
            )
            if impl.prepare is not None:
                try:
                    impl.prepare(ctx)
                except _NODE_ERRORS as exc:  # a malformed node (bad attribute, weight shape) fails to repack
                    raise _node_error(ctx, exc) from exc
            if all(n == "" or n in self.consts for n in node.input):
                # Folded once at load (every registered operator is deterministic): a constant for later nodes.
                outs = self._call(impl, ctx, [self.consts.get(n) if n else None for n in node.input])
                for name, val in zip(node.output, outs, strict=False):
                    if name:
                        self.consts[name] = val
                continue
            self.steps.append(_Step(ctx, impl, []))
        self._fuse_activations()
        # Liveness: drop a computed value after its last reader.
        last: dict[str, int] = {}
        for k, step in enumerate(self.steps):
            for n in step.ctx.inputs:
                if n and n not in self.consts:
                    last[n] = k
        keep = set(self.output_names)
        for n, k in last.items():
            if n not in keep:
                self.steps[k].free.append(n)

    def _fuse_activations(self) -> None:
        """A Conv whose only reader is a Relu or a Clip with constant bounds clamps its own output in place."""
        from collections import Counter

        readers = Counter(n for step in self.steps for n in step.ctx.inputs)
        convs = {step.ctx.outputs[0]: step for step in self.steps if step.ctx.op_type == "Conv"}
        kept = []
        for step in self.steps:
            c = step.ctx
            conv = convs.get(c.inputs[0]) if c.op_type in ("Relu", "Clip") and c.inputs else None
            bounds = _clamp_bounds(c) if conv is not None else None
            if (bounds is None or readers[c.inputs[0]] != 1 or c.inputs[0] in self.output_names
                    or "clip" in conv.ctx.cache):
                kept.append(step)
                continue
            conv.ctx.cache["clip"] = bounds
            conv.ctx.outputs = [c.outputs[0]]
        self.steps = kept

    def _toposort(self, graph) -> list:
        known = {i.name for i in graph.input} | set(self.consts) | {""}
        pending = list(graph.node)
        order = []
        while pending:
            rest = []
            for node in pending:
                if all(n in known for n in node.input):
                    order.append(node)
                    known.update(node.output)
                else:
                    rest.append(node)
            if len(rest) == len(pending):
                missing = sorted({n for node in rest for n in node.input if n not in known})
                raise ModelError(f"the graph has a cycle or undefined values ({', '.join(missing[:5])}); re-export the model")
            pending = rest
        return order

    def _check_supported(self, nodes) -> None:
        bad: dict[str, list[str]] = {}
        for i, n in enumerate(nodes):
            domain_ok = n.domain in ("", "ai.onnx")
            if not domain_ok or registry.lookup(n.op_type, self.opset) is None:
                key = n.op_type if domain_ok else f"{n.domain}.{n.op_type}"
                bad.setdefault(key, []).append(n.name or f"#{i}")
        if bad:
            listed = "; ".join(f"{op} (nodes: {', '.join(ns[:5])}{', ...' if len(ns) > 5 else ''})" for op, ns in sorted(bad.items()))
            raise UnsupportedHostOperatorError(
                f"{len(bad)} operator(s) the host executor does not support: {listed}; supported at opset {self.opset}: "
                f"{', '.join(op for op in registry.supported_ops() if registry.lookup(op, self.opset))}; "
                "re-export the model without them or compile it to a bundle with 'edgert compile'"
            )

    def _set_threads(self) -> None:
        import os

        if self.options.threads is not None and self.options.threads < 1:
            raise ValueError(f"threads must be 1 or more, not {self.options.threads}")
        self.threads = self.options.threads or len(os.sched_getaffinity(0))
        if self.threads > 1:
            from edgert.host import parallel

            parallel.load_blas()  # before _blas_libs() lists the BLAS libraries to keep on one thread
        self._blas_libs()

    def _blas_libs(self) -> None:
        """The BLAS libraries loaded now (numba's products load scipy's: call again after generating code)."""
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            self._blas = []
        else:
            self._blas = ThreadpoolController().select(user_api="blas").lib_controllers

    @contextmanager
    def _one_blas_thread(self):
        """One BLAS thread during the run: see edgert/host/parallel.py for why and how products still scale.
        (threadpoolctl's own limit() costs ~35 us a call, more than a whole small model's run.)"""
        old = [lib.get_num_threads() for lib in self._blas]
        for lib, n in zip(self._blas, old, strict=True):
            if n != 1:
                lib.set_num_threads(1)
        try:
            yield
        finally:
            for lib, n in zip(self._blas, old, strict=True):
                if n != 1:
                    lib.set_num_threads(n)

    @staticmethod
    def _call(impl: registry.OpImpl, ctx: NodeContext, args: list) -> tuple:
        if ctx.op_type in _SHAPE_ARG and len(args) > _SHAPE_ARG[ctx.op_type] and args[_SHAPE_ARG[ctx.op_type]] is not None:
            # The output's shape is data: refuse an absurd one before NumPy tries to allocate it.
            from edgert.model import check_size

            dims = tuple(max(int(d), 0) for d in np.asarray(args[_SHAPE_ARG[ctx.op_type]]).reshape(-1)[:64])
            check_size(ctx.name, dims, "float32", f"the output of {ctx.op_type} node",
                       "check the shape the model gives it")
        try:
            out = impl.fn(ctx, *args)
        except _NODE_ERRORS as exc:
            raise _node_error(ctx, exc) from exc
        except MemoryError:
            raise ModelError(f"{ctx.op_type} node '{ctx.name}' needs more memory than this process may use; check "
                             "the model's shapes, or give it smaller inputs") from None
        return out if isinstance(out, tuple) else (out,)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)}; the model's inputs are {', '.join(self.input_names)}")
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise InputError(f"unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(self.input_names)}")
        feeds = {k: np.asarray(v) for k, v in feeds.items()}
        plan = self._plan(feeds) if self.options.codegen != "never" else None
        with self._one_blas_thread():
            if plan is not None:
                return plan({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            values: dict[str, Any] = dict(self.consts)
            values.update(feeds)
            return self._run(values)

    def compiled_plan(self, feeds: dict[str, np.ndarray]):
        """The generated whole-graph function runs with feeds of these shapes use, or None (interpreted)."""
        from edgert.host.codegen.plan import CompiledPlan, signature

        plan = self._plans.get(signature({k: np.asarray(v) for k, v in feeds.items()}, self.input_names))
        return plan if isinstance(plan, CompiledPlan) else None

    def _plan(self, feeds: dict[str, np.ndarray]):
        """The CompiledPlan for these feeds' shapes, generating it on the run codegen asks for; else None."""
        from edgert.host.codegen import plan as codegen

        sig = codegen.signature(feeds, self.input_names)
        state = self._plans.get(sig, 0)
        if not isinstance(state, int):
            return state
        if sig not in self._plans and len(self._plans) >= _MAX_PLANS:
            return None  # shapes keep changing: interpret rather than compile for each
        auto = self.options.codegen == "auto"
        if auto and state + 1 < AUTO_COMPILE_RUN:
            self._plans[sig] = state + 1
            return None
        self._plans[sig] = None
        with self._one_blas_thread():
            values = codegen.trace(self, feeds)
        if auto and codegen.multiply_adds(self, values) > AUTO_MAX_MACS:
            self.codegen_skipped = f"more than {AUTO_MAX_MACS} multiply-adds"
            return None
        try:
            self._plans[sig] = codegen.build(self, {k: np.ascontiguousarray(v) for k, v in feeds.items()}, values)
        except codegen.NotLowerable as exc:
            self.codegen_skipped = str(exc)
            if not auto:
                raise UnsupportedHostOperatorError(f"the model cannot run as one generated function: {exc}; "
                                                   "use HostOptions(codegen='auto') to interpret it") from None
            return None
        except codegen.compile_errors() as exc:
            if not auto:
                raise
            # A lowering numba rejects is an edgert bug; the interpreter still gives the right answer.
            import warnings

            self.codegen_skipped = f"numba could not compile the generated function: {' '.join(str(exc).split())[:300]}"
            warnings.warn(f"edgert host executor: {self.codegen_skipped}; interpreting the model", RuntimeWarning, stacklevel=3)
            return None
        self._blas_libs()
        return self._plans[sig]

    def _run(self, values: dict[str, Any], keep: bool = False) -> dict[str, np.ndarray]:
        """Interpret the steps; ``keep``: return every value (for code generation) instead of the outputs."""
        for step in self.steps:
            ctx = step.ctx
            outs = self._call(step.impl, ctx, [values[n] if n else None for n in ctx.inputs])
            for name, val in zip(ctx.outputs, outs, strict=False):
                if name:
                    values[name] = val
            for name in () if keep else step.free:
                del values[name]
        return values if keep else {n: np.asarray(values[n]) for n in self.output_names}
