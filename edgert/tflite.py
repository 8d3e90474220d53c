"""TFLite models: read and check the flatbuffer, convert it with TVM's TFLite
frontend, and run it in LiteRT as the reference.

The file is kept as bytes (``Model.data``); nothing is converted to ONNX.
"""
from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgert.errors import DynamicShapeError, InputError, ModelError, UnsupportedOperatorError, first_line
from edgert.model import Model, TensorSpec, require

if TYPE_CHECKING:
    import tvm

# TFLite TensorType values that map onto a NumPy dtype (strings, complex and resource
# handles cannot be model inputs or outputs here).
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
           9: "int8", 10: "float64", 12: "uint64", 15: "uint32", 16: "uint16"}
_SCHEMA_VERSION = 3  # the only version LiteRT (and TVM's frontend) reads
# What a corrupt flatbuffer makes the pure-Python reader raise: it has no verifier.
_READ_ERRORS = (IndexError, struct.error, ValueError, TypeError, UnicodeDecodeError, OverflowError)


def load(path: Path, input_shapes: dict[str, tuple[int, ...]]) -> Model:
    """Read a .tflite file, pin its dynamic input dimensions and check TVM can convert it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}; check the path and its permissions") from None
    fb = _parse(data, Path(path).name)
    sg = fb.Subgraphs(0)
    inputs = [_tensor(sg, i) for i in _ints(sg.InputsLength(), sg.Inputs)]
    names = [name for name, _, _ in inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ModelError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs are {', '.join(names)}"
        )
    check_operators(fb)
    return Model(
        format="tflite",
        data=data,
        inputs=[TensorSpec(n, _pin(n, sig, input_shapes.get(n)), dt) for n, sig, dt in inputs],
        # Dynamic output dims stay -1 until a run resolves them (as for ONNX).
        outputs=[TensorSpec(*_tensor(sg, i)) for i in _ints(sg.OutputsLength(), sg.Outputs)],
        name=Path(path).stem,
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


def _parse(data: bytes, where: str):
    """The root ``tflite.Model``, after checking every index and vector lies inside the file."""
    tflite = require("tflite", "reference")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier); re-export it or check the file")
    try:
        fb = tflite.Model.GetRootAsModel(data, 0)
        problem = _check(fb, len(data))
    except _READ_ERRORS:
        problem = "a table or vector points outside the file"
    if problem:
        raise ModelError(
            f"{where} is not a valid TFLite flatbuffer ({problem}); re-export it or check the file is complete"
        )
    return fb


def _check(fb, size: int) -> str | None:
    """Why the flatbuffer is unusable, or None. Lengths are bounded by the file size
    so a corrupt count cannot make this loop for ever."""
    if fb.Version() != _SCHEMA_VERSION:
        return f"schema version {fb.Version()}, expected {_SCHEMA_VERSION}"
    if not 0 < fb.SubgraphsLength() <= size:
        return "no subgraph"
    n_buffers, n_codes = fb.BuffersLength(), fb.OperatorCodesLength()
    if n_buffers > size or n_codes > size:
        return "vector length beyond the file"
    for c in range(n_codes):  # read every field check_operators uses
        code = fb.OperatorCodes(c)
        code.DeprecatedBuiltinCode(), code.BuiltinCode(), code.CustomCode()
    for b in range(n_buffers):
        buf = fb.Buffers(b)
        if buf.DataLength():
            buf.DataAsNumpy()  # raises ValueError when the vector runs past the end
        elif buf.Offset() > 1 and buf.Offset() + buf.Size() > size:
            return f"buffer {b} lies past the end of the file"
    for s in range(fb.SubgraphsLength()):
        sg = fb.Subgraphs(s)
        n_tensors = sg.TensorsLength()
        if n_tensors > size or sg.OperatorsLength() > size:
            return "vector length beyond the file"
        for t in range(n_tensors):
            tensor = sg.Tensors(t)
            if tensor.Name() is None:  # TVM's frontend looks tensors up by name
                return f"tensor {t} has no name"
            if any(c < 32 or c == 127 for c in tensor.Name().decode().encode()):
                return f"tensor {t} has a name with control characters"  # names reach messages and file names
            _ints(tensor.ShapeLength(), tensor.Shape)
            _ints(tensor.ShapeSignatureLength(), tensor.ShapeSignature)
            if not 0 <= tensor.Buffer() < max(n_buffers, 1) or not 0 <= tensor.Type() <= 18:
                return f"tensor {t} has a bad buffer index or type"
        ios = _ints(sg.InputsLength(), sg.Inputs) + _ints(sg.OutputsLength(), sg.Outputs)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            ios += _ints(op.InputsLength(), op.Inputs) + _ints(op.OutputsLength(), op.Outputs)
            if not 0 <= op.OpcodeIndex() < n_codes:
                return f"operator {i} has opcode index {op.OpcodeIndex()} of {n_codes}"
        if any(not -1 <= t < n_tensors for t in ios):  # -1 marks an omitted optional input
            return f"a tensor index in subgraph {s} is out of range"
    return None


def _ints(n: int, get) -> list[int]:
    if n > 1 << 24:
        raise ValueError("vector length")
    return [int(get(j)) for j in range(n)]


def _tensor(sg, index: int) -> tuple[str, tuple[int, ...], str]:
    """Name, shape signature (-1 for dynamic dims) and dtype of a graph input/output."""
    t = sg.Tensors(index)
    name = t.Name().decode()
    dtype = _DTYPES.get(t.Type())
    if dtype is None:
        raise ModelError(f"tensor '{name}' has TFLite type {t.Type()}, which edgert cannot feed or read")
    sig = _ints(t.ShapeSignatureLength(), t.ShapeSignature) or _ints(t.ShapeLength(), t.Shape)
    return name, tuple(sig), dtype


def _pin(name: str, sig: tuple[int, ...], shape: tuple[int, ...] | None) -> tuple[int, ...]:
    if shape is None:
        if any(d < 0 for d in sig):
            shown = "x".join("?" if d < 0 else str(d) for d in sig)
            example = "x".join("1" if d < 0 else str(d) for d in sig)
            raise DynamicShapeError(
                f"input '{name}' has dynamic dimensions ({shown}); pin them with --input-shape {name}={example}"
            )
        return sig
    given = "x".join(map(str, shape))
    if len(shape) != len(sig):
        raise ModelError(f"--input-shape gives {len(shape)} dims for '{name}' but the model declares {len(sig)}")
    for i, (d, s) in enumerate(zip(sig, shape, strict=True)):
        if d >= 0 and d != s:
            raise ModelError(f"--input-shape {name}={given} conflicts with the model's fixed dimension {i} = {d}")
    return tuple(shape)


def check_operators(fb) -> None:
    """Raise one error listing every operator TVM's TFLite frontend cannot convert."""
    supported = _supported_ops(fb)
    if supported is None:
        return
    from tflite.BuiltinOperator import BuiltinOperator

    code_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    by_op: dict[str, list[str]] = {}
    for s in range(fb.SubgraphsLength()):
        sg = fb.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            op = sg.Operators(i)
            code = fb.OperatorCodes(op.OpcodeIndex())
            # Since TF 2.4 the builtin code has two fields; readers take the larger (as TVM does).
            name = code_names.get(max(code.DeprecatedBuiltinCode(), code.BuiltinCode()), "")
            if name == "CUSTOM":
                custom = (code.CustomCode() or b"").decode(errors="replace")
                name = "DETECTION_POSTPROCESS" if custom == "TFLite_Detection_PostProcess" else f"CUSTOM:{custom}"
            elif not name:
                name = f"BUILTIN_{max(code.DeprecatedBuiltinCode(), code.BuiltinCode())}"
            if name not in supported:
                out = sg.Tensors(op.Outputs(0)).Name().decode() if op.OutputsLength() else "?"
                where = f"#{i}" if s == 0 else f"subgraph {s} #{i}"
                by_op.setdefault(name, []).append(f"{where} -> {out}")
    if by_op:
        listed = "; ".join(
            f"{op} (ops: {', '.join(at[:5])}{', ...' if len(at) > 5 else ''})" for op, at in sorted(by_op.items())
        )
        raise UnsupportedOperatorError(
            f"{len(by_op)} operator(s) TVM's TFLite frontend cannot convert: {listed}; "
            "replace them in the source model and convert it to TFLite again"
        )


def _supported_ops(fb) -> set[str] | None:
    """Operator names TVM's TFLite frontend converts; None when TVM is not installed."""
    try:
        from tvm.relax.frontend.tflite.tflite_frontend import ExprTable, OperatorConverter
    except ImportError:
        return None
    # The converter's constructor only builds its op table; nothing is converted here.
    return set(OperatorConverter(fb, fb.Subgraphs(0), ExprTable(), None).convert_map)


def to_relax(model: Model) -> tvm.IRModule:
    """The model as a Relax IRModule (weights bound as constants), inputs pinned to ``model.inputs``."""
    require("tvm", "tvm")
    import tvm
    from tvm.relax.frontend.tflite import from_tflite

    fb = _parse(model.data or b"", model.name)
    try:
        return from_tflite(
            fb,
            shape_dict={s.name: s.shape for s in model.inputs},
            dtype_dict={s.name: s.dtype for s in model.inputs},
        )
    except tvm.error.OpNotImplemented as exc:
        reason = " ".join(str(exc).split())  # each line names one class of unsupported ops
        raise UnsupportedOperatorError(f"TVM's TFLite frontend cannot convert {model.name}: {reason}") from None
    except Exception as exc:  # the frontend raises assertion, TVM and Python errors alike
        raise ModelError(f"TVM's TFLite frontend failed on {model.name}: {first_line(exc)}") from None


def reference_run(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of LiteRT on ``feeds``, in ``model.outputs`` order."""
    interpreter = require("ai_edge_litert.interpreter", "reference")
    missing = [s.name for s in model.inputs if s.name not in feeds]
    if missing:
        raise InputError(f"no value given for input(s) {', '.join(missing)}; the model's inputs are "
                         f"{', '.join(s.name for s in model.inputs)}")
    for spec in model.inputs:
        if tuple(np.shape(feeds[spec.name])) != spec.shape:
            raise InputError(f"input '{spec.name}' has shape {np.shape(feeds[spec.name])}, the model expects "
                             f"{spec.shape}; reload the model with --input-shape to change it")
    try:
        # Without default delegates: the reference runs the graph as written, not XNNPACK's rewrite.
        interp = interpreter.Interpreter(
            model_content=model.data, num_threads=1,
            experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        details = {d["name"]: d for d in interp.get_input_details()}
        for spec in model.inputs:
            if tuple(details[spec.name]["shape"]) != spec.shape:
                interp.resize_tensor_input(details[spec.name]["index"], list(spec.shape))
        interp.allocate_tensors()
        for spec in model.inputs:
            interp.set_tensor(details[spec.name]["index"], np.ascontiguousarray(feeds[spec.name], spec.dtype))
        interp.invoke()
        outs = {d["name"]: d["index"] for d in interp.get_output_details()}
        return [np.array(interp.get_tensor(outs[spec.name])) for spec in model.outputs]
    except (ValueError, RuntimeError, KeyError) as exc:  # LiteRT's messages span several lines
        raise ModelError(f"LiteRT cannot run {model.name}: {first_line(exc)}") from None
