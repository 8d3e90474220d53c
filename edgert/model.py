"""Model: a loaded ONNX (or TFLite) network with pinned input shapes.

ONNX models are shape-inferred after pinning; TFLite files are kept as bytes
and compiled directly through TVM's TFLite frontend.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import (
    DynamicShapeError,
    MissingDependencyError,
    ModelError,
    UnsupportedOperatorError,
    first_line,
)
from edgert.fsutil import atomic_write_bytes, sha256_file

# Compression history lives in metadata_props under this key (JSON list).
HISTORY_KEY = "edgert.history"

_FOUR_BIT = {21, 22, 23}  # TensorProto.UINT4, INT4, FLOAT4E2M1
_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
    7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(d: dict[str, Any]) -> TensorSpec:
        return TensorSpec(d["name"], tuple(int(x) for x in d["shape"]), d["dtype"])

    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Model:
    """A loaded network. ``format`` is "onnx" or "tflite"."""

    format: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    name: str
    proto: Any = None  # onnx.ModelProto for ONNX
    data: bytes | None = None  # raw flatbuffer for TFLite
    source_sha256: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def reference_run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of the reference runtime (onnxruntime / LiteRT), in output order."""
        from edgert import reference

        return reference.run(self, feeds)

    def random_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for spec in self.inputs:
            dt = np.dtype(spec.dtype)
            if dt.kind == "f":
                feeds[spec.name] = rng.standard_normal(spec.shape).astype(dt)
            elif dt.kind == "b":
                feeds[spec.name] = rng.integers(0, 2, spec.shape).astype(dt)
            else:
                # Small non-negative values: integer inputs are usually ids or indices.
                feeds[spec.name] = rng.integers(0, 16, spec.shape).astype(dt)
        return feeds

    def save(self, path: str | Path) -> None:
        if self.format == "tflite":
            atomic_write_bytes(Path(path), self.data or b"")
            return
        import json

        props = {p.key: p for p in self.proto.metadata_props}
        if HISTORY_KEY in props:
            props[HISTORY_KEY].value = json.dumps(self.history)
        else:
            entry = self.proto.metadata_props.add()
            entry.key, entry.value = HISTORY_KEY, json.dumps(self.history)
        atomic_write_bytes(Path(path), self.proto.SerializeToString())


def parse_input_shapes(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` strings (also ``NAME=1,3,224,224``)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs or ():
        name, sep, dims = spec.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in re.split(r"[x,]", dims.strip()))
            if any(d <= 0 for d in shape):
                raise ValueError
        except ValueError:
            raise ModelError(
                f"bad --input-shape '{spec}': write NAME=DIMS with positive sizes, e.g. input=1x3x224x224"
            ) from None
        shapes[name] = shape
    return shapes


def load(
    path: str | Path,
    input_shapes: dict[str, tuple[int, ...]] | list[str] | None = None,
) -> Model:
    """Load an ONNX or TFLite model and pin its input shapes.

    ``input_shapes`` maps input names to static shapes (or is a list of
    ``NAME=1x3x224x224`` strings); every dynamic input dimension must end up
    pinned.
    """
    if isinstance(input_shapes, (list, tuple)):
        input_shapes = parse_input_shapes(input_shapes)
    input_shapes = dict(input_shapes or {})
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory; give the path of an .onnx or .tflite file")
    try:
        head = path.open("rb").read(8)
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}; check the path and its permissions") from None
    if path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3":
        from edgert import tflite

        return tflite.load(path, input_shapes)
    return _load_onnx(path, input_shapes)


def _load_onnx(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> Model:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not a valid ONNX model ({type(exc).__name__}); re-export it or check the file is complete"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc}") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{path} is not a valid ONNX model (no graph); re-export it or check the file is complete")
    check_structure(proto, path.name)
    _load_external_data(proto, path)
    check_initializers(proto, path.name)

    initializers = {t.name for t in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ModelError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(names)}"
        )
    for inp in graph_inputs:
        _pin_input(inp, input_shapes.get(inp.name))

    check_operators(proto)  # before shape inference, which fails on a domain it does not know
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises assorted C++-mapped errors here
        raise ModelError(f"shape inference failed on {path.name}: {first_line(exc)}") from None

    inputs = [_spec(i) for i in proto.graph.input if i.name not in initializers]
    outputs = [_spec(o, allow_unknown=True) for o in proto.graph.output]
    for spec in inputs:
        check_size(spec.name, spec.shape, spec.dtype, "input", "pin a smaller shape with --input-shape")
    for vi in [*proto.graph.value_info, *proto.graph.output]:
        tt = vi.type.tensor_type
        check_size(vi.name, tuple(d.dim_value for d in tt.shape.dim if d.HasField("dim_value")),
                   _ONNX_DTYPES.get(tt.elem_type, "float32"), "tensor", "check the shapes the model computes")

    import json

    history = []
    for p in proto.metadata_props:
        if p.key == HISTORY_KEY:
            try:
                history = json.loads(p.value)
            except ValueError:
                history = []
    return Model(
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        name=proto.graph.name or path.stem,
        proto=proto,
        source_sha256=sha256_file(path),
        history=history,
    )


def memory_bytes() -> int:
    """Physical memory of this machine: no tensor of a usable model is larger."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 40


def check_size(name: str, shape: tuple[int, ...], dtype: str, what: str, fix: str) -> None:
    """Refuse a tensor larger than this machine's memory before anything allocates it."""
    if any(d < 0 for d in shape):
        raise ModelError(f"{what} '{name}' has a negative dimension {shape}; {fix}")
    n = 1
    for d in shape:
        n *= int(d)  # Python ints: no overflow on absurd dims
    nbytes = n * np.dtype(dtype).itemsize
    if nbytes > memory_bytes():
        raise ModelError(
            f"{what} '{name}' has shape {'x'.join(map(str, shape))} ({nbytes / 2**30:.3g} GiB), more than this "
            f"machine's {memory_bytes() / 2**30:.3g} GiB of memory; {fix}"
        )


_NAME_FIELDS = {"name", "input", "output", "op_type", "domain", "dim_param"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_text(msg, where: str) -> None:
    """Every string field is text: protobuf hands undecodable UTF-8 back as bytes, which breaks every name lookup."""
    for fd in msg.DESCRIPTOR.fields:  # not ListFields: that would copy every tensor's raw bytes
        if fd.type == fd.TYPE_STRING:
            value = getattr(msg, fd.name)
            values = value if fd.is_repeated else (value,)
            if any(isinstance(v, bytes) for v in values):
                raise ModelError(f"{where} holds a {type(msg).__name__}.{fd.name} that is not UTF-8 text; the file "
                                 "is damaged: re-export it")
            # Names end up in messages and file names: control characters there mean a damaged file.
            if fd.name in _NAME_FIELDS and any(_CONTROL.search(v) for v in values):
                raise ModelError(f"{where} holds a {type(msg).__name__}.{fd.name} with control characters; the file "
                                 "is damaged: re-export it")
        elif fd.type == fd.TYPE_MESSAGE:
            if fd.is_repeated:
                for v in getattr(msg, fd.name):
                    check_text(v, where)
            elif msg.HasField(fd.name):
                check_text(getattr(msg, fd.name), where)


def check_structure(proto, where: str) -> None:
    """Opsets, outputs and node wiring: every value a node reads is produced once, with no cycle."""
    import onnx.defs

    check_text(proto, where)
    g = proto.graph
    newest = onnx.defs.onnx_opset_version()
    versions: dict[str, int] = {}
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in versions:
            raise ModelError(f"{where} imports the opset of domain '{domain or 'ai.onnx'}' twice; re-export the model")
        versions[domain] = o.version
    uses_default = any(n.domain in ("", "ai.onnx") for n in g.node)
    if uses_default and not 1 <= versions.get("", 0) <= newest:
        got = versions.get("")
        raise ModelError(
            f"{where} declares ONNX opset {'none' if got is None else got}; the installed onnx knows opsets 1 to "
            f"{newest}: re-export the model with one of them (e.g. torch.onnx.export(..., opset_version=17))"
        )
    if not g.output:
        raise ModelError(f"{where} has no graph outputs; re-export the model with its outputs")
    produced: dict[str, int] = {i.name: -1 for i in g.input}
    produced.update({t.name: -1 for t in g.initializer})
    for k, n in enumerate(g.node):
        for out in n.output:
            if out and out in produced:
                raise ModelError(f"value '{out}' of {where} is produced twice (node {n.name or k}); re-export the model")
            if out:
                produced[out] = k
    for k, n in enumerate(g.node):
        for inp in n.input:
            if inp and inp not in produced:
                raise ModelError(
                    f"node {n.name or k} ({n.op_type}) of {where} reads '{inp}', which no input, initializer or node "
                    "produces; re-export the model"
                )
    for o in g.output:
        if o.name not in produced:
            raise ModelError(f"graph output '{o.name}' of {where} is produced by nothing; re-export the model")
    # Kahn's algorithm over node -> node edges: what is left unsorted lies on a cycle.
    readers: dict[int, list[int]] = {}
    waiting = [0] * len(g.node)
    for k, n in enumerate(g.node):
        for src in {produced[i] for i in n.input if i and produced[i] >= 0}:
            readers.setdefault(src, []).append(k)
            waiting[k] += 1
    ready = [k for k, w in enumerate(waiting) if w == 0]
    done = 0
    while ready:
        k = ready.pop()
        done += 1
        for r in readers.get(k, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if done < len(g.node):
        stuck = [g.node[k].name or f"#{k}" for k, w in enumerate(waiting) if w > 0]
        raise ModelError(f"{where} has a cycle through node(s) {', '.join(stuck[:5])}; re-export the model")


def check_initializers(proto, where: str) -> None:
    """Each initializer holds exactly the bytes its dims promise (checked without building the array)."""
    from onnx import TensorProto, helper

    fields = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
    for t in proto.graph.initializer:
        if any(d < 0 for d in t.dims):
            raise ModelError(f"initializer '{t.name}' of {where} has a negative dimension {list(t.dims)}; re-export the model")
        n = 1
        for d in t.dims:
            n *= int(d)
        if t.data_type in (TensorProto.UNDEFINED, TensorProto.STRING) or t.data_type not in helper.get_all_tensor_dtypes():
            raise ModelError(f"initializer '{t.name}' of {where} has element type {t.data_type}, which edgert "
                             "cannot use; re-export the model")
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        if t.HasField("raw_data"):
            # Sub-byte types (int4, float4) pack two values a byte.
            bits = 4 if t.data_type in _FOUR_BIT else itemsize * 8
            want = (n * bits + 7) // 8
            got = len(t.raw_data)
        else:
            held = [len(getattr(t, f)) for f in fields if len(getattr(t, f))]
            got, want = (held[0] if held else 0), n
            if t.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
                want = 2 * n
            elif t.data_type in _FOUR_BIT:
                want = (n + 1) // 2
        if got != want:
            raise ModelError(
                f"initializer '{t.name}' of {where} holds {got} {'bytes' if t.HasField('raw_data') else 'values'} "
                f"but its shape {'x'.join(map(str, t.dims)) or 'scalar'} needs {want}; the file is damaged: re-export it"
            )


def _load_external_data(proto, path: Path) -> None:
    """Load external tensors, refusing locations that escape the model's folder."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = path.resolve().parent
    check_text(proto, path.name)
    external = [t for t in _all_tensors(proto) if uses_external_data(t)]
    for t in external:
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        if "\0" in loc:
            raise ModelError(f"tensor '{t.name}' names its external data file with a NUL byte; the file is damaged: "
                             "re-export the model")
        target = (base / loc).resolve()
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(base):
            raise ModelError(
                f"tensor '{t.name}' points at external data '{loc}' outside the model's folder; "
                "keep external data files next to the .onnx file"
            )
        if not target.is_file():
            raise ModelError(
                f"external data file '{loc}' for tensor '{t.name}' is missing; copy it next to {path.name}"
            )
        # Checked before reading: a corrupt length would otherwise make the reader allocate it.
        info = {e.key: e.value for e in t.external_data}
        try:
            offset, length = int(info.get("offset") or 0), int(info.get("length") or -1)
        except ValueError:
            offset, length = -1, -1
        size = target.stat().st_size
        if offset < 0 or offset > size or (length != -1 and (length < 0 or offset + length > size)):
            raise ModelError(
                f"tensor '{t.name}' reads bytes {info.get('offset', 0)}..+{info.get('length', 'end')} of '{loc}', "
                f"which holds {size} bytes; the external data file does not belong to this model: re-export both"
            )
    if external:
        try:
            load_external_data_for_model(proto, str(base))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load external data of {path.name}: {first_line(exc)}") from None


def _all_tensors(proto):
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(proto))


def _pin_input(inp, shape: tuple[int, ...] | None) -> None:
    tt = inp.type.tensor_type
    dims = tt.shape.dim
    if shape is not None:
        if tt.HasField("shape") and len(dims) not in (0, len(shape)) :
            raise ModelError(
                f"--input-shape gives {len(shape)} dims for '{inp.name}' but the model declares {len(dims)}"
            )
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value != shape[i]:
                raise ModelError(
                    f"--input-shape {inp.name}={'x'.join(map(str, shape))} conflicts with the model's fixed "
                    f"dimension {i} = {d.dim_value}"
                )
        del dims[:]
        for s in shape:
            dims.add().dim_value = s
        return
    if not tt.HasField("shape"):
        raise DynamicShapeError(
            f"input '{inp.name}' has no declared shape; pin it with --input-shape {inp.name}=1x3x224x224 (your sizes)"
        )
    free = [i for i, d in enumerate(dims) if not d.HasField("dim_value") or d.dim_value <= 0]
    if free:
        shown = "x".join(d.dim_param or "?" if i in free else str(d.dim_value) for i, d in enumerate(dims))
        example = "x".join("1" if i in free else str(d.dim_value) for i, d in enumerate(dims))
        raise DynamicShapeError(
            f"input '{inp.name}' has dynamic dimensions ({shown}); pin them with --input-shape {inp.name}={example}"
        )


def _spec(value_info, allow_unknown: bool = False) -> TensorSpec:
    tt = value_info.type.tensor_type
    dtype = _ONNX_DTYPES.get(tt.elem_type)
    if dtype is None:
        raise ModelError(f"tensor '{value_info.name}' has unsupported element type {tt.elem_type}")
    shape = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif allow_unknown:
            shape.append(-1)  # resolved after compilation from real outputs
        else:
            raise DynamicShapeError(f"tensor '{value_info.name}' has a dynamic dimension")
    return TensorSpec(value_info.name, tuple(shape), dtype)


def check_operators(proto) -> None:
    """Raise one error listing every operator TVM's ONNX frontend cannot convert."""
    supported = supported_onnx_ops()
    if supported is None:
        return
    bad = [
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}", n.name or f"#{i}")
        for i, n in enumerate(proto.graph.node)
        if n.domain not in ("", "ai.onnx") or n.op_type not in supported
    ]
    if bad:
        by_op: dict[str, list[str]] = {}
        for op, node in bad:
            by_op.setdefault(op, []).append(node)
        listed = "; ".join(
            f"{op} (nodes: {', '.join(nodes[:5])}{', ...' if len(nodes) > 5 else ''})" for op, nodes in sorted(by_op.items())
        )
        raise UnsupportedOperatorError(
            f"{len(by_op)} unsupported operator(s): {listed}; re-export the model without them (another opset, or simplify it with onnxsim)"
        )


def supported_onnx_ops() -> set[str] | None:
    """Operators TVM's Relax ONNX frontend converts; None when TVM is not installed."""
    try:
        from tvm.relax.frontend.onnx import onnx_frontend
    except ImportError:
        return None
    return set(onnx_frontend._get_convert_map())


def require(module: str, extra: str):
    """Import an optional dependency or raise the pip command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{module} is not installed; run: pip install 'edgert[{extra}]'"
        ) from None
