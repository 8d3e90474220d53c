"""Continual inference: an offline temporal ONNX model -> a stateful step model (one frame in, one step out).

Semantics (Hedegaard & Iosifidis, "Continual 3D Convolutional Neural Networks"):
the step model computes the offline network over the whole stream as one long
sequence. Zero padding at the window start is the all-zero initial state; a
window operator's right padding (symmetric padding) becomes an output delay;
global pooling over time becomes a running window of the offline length. So,
after ``delay`` frames, step ``t``'s output equals the offline model's output
for the window ending at frame ``t`` whenever that window starts at the stream
start or its receptive field does not reach the window's padding (e.g. an
unpadded network: every window).

State is explicit graph I/O: inputs ``state_in_<s>`` and outputs
``state_out_<s>`` (same suffix), all zeros at the start. The step model uses
standard ONNX operators only (Concat, Slice, Conv, MatMul, ...); validity gates
for delayed or strided positions are float 0/1 arithmetic on a frame counter
state, so onnxruntime, TVM and edgert's host executor all run it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgert.compress.continual_ops import CONVERTERS, ContinualError, StepBuilder, Timing, refuse, static
from edgert.model import Model, TensorSpec

METADATA_KEY = "edgert.continual"
UPDATES = ("shift", "concat", "ring")

__all__ = ["ContinualError", "ContinualReport", "ContinualSpec", "continual", "macs", "read_metadata"]


@dataclass(frozen=True)
class ContinualSpec:
    time_axis: int
    # How state buffers advance (StepBuilder.window): "shift" (default: fastest compiled, see
    # tools/bench_continual.py), "concat", or "ring" (ScatterElements/Gather: onnxruntime and TVM
    # run it; edgert's host executor has no ScatterElements).
    update: str = "shift"
    # Stack buffers of equal frame shape into one state tensor (fewer tensors per call).
    merge_states: bool = True

    def __post_init__(self):
        if self.update not in UPDATES:
            raise ContinualError(f"unknown state update '{self.update}'; use one of {', '.join(UPDATES)}")


@dataclass
class ContinualReport:
    time_axis: int
    window: int  # the offline model's length along time
    delay: int  # frames before the first valid output
    stride: int  # frames between outputs
    receptive_field: int  # frames one output depends on
    frame_shapes: dict[str, list[int]]
    states: list[dict[str, Any]] = field(default_factory=list)  # name_in, name_out, shape, dtype
    outputs_have_time: dict[str, bool] = field(default_factory=dict)
    macs_offline: int = 0  # per offline inference (one window)
    macs_step: int = 0  # per step

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def continual(model: Model, time_axis: int | ContinualSpec) -> tuple[Model, ContinualReport]:
    """Convert ``model`` (whose inputs have a time axis ``time_axis``) into a step model.

    Raises ContinualError naming the first node that cannot be streamed and why.
    """
    import onnx

    from edgert.compress.graph import fold_static_shapes

    spec = time_axis if isinstance(time_axis, ContinualSpec) else ContinualSpec(int(time_axis))
    if model.format != "onnx":
        raise ContinualError("continual conversion needs an ONNX model; convert the TFLite file to ONNX first")
    proto = fold_static_shapes(model.proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
    b = StepBuilder(proto, opset, spec.update)
    g = proto.graph
    inits = {t.name for t in g.initializer}
    graph_inputs = [i for i in g.input if i.name not in inits]
    frame_inputs, lengths = [], set()
    for vi in graph_inputs:
        shape = b.shapes.get(vi.name, [])
        ta = spec.time_axis % len(shape) if shape and -len(shape) <= spec.time_axis < len(shape) else None
        if ta is None:
            raise ContinualError(
                f"input '{vi.name}' has shape {shape}, no axis {spec.time_axis}; give --time-axis as the index of time in it"
            )
        if ta == 0:
            raise ContinualError(f"time axis 0 of input '{vi.name}' is the batch axis; give the axis that holds time")
        lengths.add(shape[ta])
        frame = list(shape)
        frame[ta] = 1
        b.set_step(vi.name, vi.name, Timing(lag=0, rate=1, back=0, axis=ta, length=shape[ta]))
        frame_inputs.append(onnx.helper.make_tensor_value_info(vi.name, vi.type.tensor_type.elem_type, frame))
    for node in g.node:
        if node.op_type == "Constant":
            b.nodes.append(node)
            b.const_values[node.output[0]] = onnx.numpy_helper.to_array(
                onnx.helper.get_attribute_value(node.attribute[0])) if node.attribute[0].name == "value" else None
            continue
        timed = [i for i in node.input if i and not b.is_const(i)]
        if not timed:
            b.nodes.append(node)  # constant arithmetic: same in every step
            continue
        if node.domain not in ("", "ai.onnx"):
            raise refuse(node, f"custom-domain operator '{node.domain}' cannot be streamed")
        if all(b.timing[i].axis is None for i in timed):
            static.convert(b, node)
            continue
        convert = CONVERTERS.get(node.op_type)
        if convert is None:
            raise refuse(node, "this operator cannot be streamed along time (supported: Conv, MaxPool, AveragePool, "
                               "zero Pad, reductions/global pooling over time, element-wise ops, Add/Concat, "
                               "and any layer after the time axis is pooled away)")
        convert(b, node)
    outputs = [o.name for o in g.output]
    for o in outputs:
        if o not in b.timing:
            raise ContinualError(f"output '{o}' does not depend on the input; nothing to stream")
    fake = onnx.helper.make_node("Identity", outputs, outputs, name="graph outputs")
    aligned, t = b.align(fake, outputs)
    for name, step in zip(outputs, aligned, strict=True):
        if step != name:
            b.node("Identity", [step], f"{name}_out", name)
    if spec.merge_states:
        b.merge_states()
    graph = onnx.helper.make_graph(
        b.nodes, (g.name or model.name) + "_step",
        [*frame_inputs, *b.state_inputs],
        [*[_output_info(b, o) for o in outputs], *b.state_outputs],
        initializer=[*[i for i in g.initializer], *b.initializers],
    )
    step = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import), producer_name="edgert")
    step.ir_version = proto.ir_version
    try:
        step = onnx.shape_inference.infer_shapes(step, strict_mode=True)
        onnx.checker.check_model(step)
    except Exception as exc:  # onnx raises assorted C++-mapped errors
        from edgert.errors import first_line

        raise ContinualError(f"the step model is not valid ONNX ({first_line(exc)}); report this model to edgert") from None
    _prune_initializers(step)
    window = lengths.pop() if len(lengths) == 1 else 0
    report = ContinualReport(
        time_axis=spec.time_axis, window=window, delay=t.lag, stride=t.rate, receptive_field=t.back + 1,
        frame_shapes={vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in frame_inputs},
        states=[{"name_in": f"state_in_{s['suffix']}", "name_out": f"state_out_{s['suffix']}",
                 "shape": s["shape"], "dtype": s["dtype"]} for s in b.states],
        outputs_have_time={o: b.timing[o].axis is not None for o in outputs},
        macs_offline=macs(proto), macs_step=macs(step),
    )
    meta = {"time_axis": report.time_axis, "window": report.window, "delay": report.delay, "stride": report.stride,
            "receptive_field": report.receptive_field, "frame_shapes": report.frame_shapes, "states": report.states,
            "outputs_have_time": report.outputs_have_time}
    for key, value in ((METADATA_KEY, json.dumps(meta)), ("delay", str(report.delay)),
                       ("receptive_field", str(report.receptive_field)), ("frame_shape", json.dumps(report.frame_shapes))):
        entry = step.metadata_props.add()
        entry.key, entry.value = key, value
    entry = {"pass": "continual", "params": asdict(spec), "delay": report.delay, "stride": report.stride,
             "receptive_field": report.receptive_field}
    inputs = [TensorSpec(vi.name, tuple(report.frame_shapes[vi.name]), s.dtype)
              for vi, s in zip(frame_inputs, model.inputs, strict=True)]
    inputs += [TensorSpec(s["name_in"], tuple(s["shape"]), s["dtype"]) for s in report.states]
    outs = [_spec_of(step, o) for o in [*outputs, *[s["name_out"] for s in report.states]]]
    out = Model(format="onnx", inputs=inputs, outputs=outs, name=model.name + "_step", proto=step,
                source_sha256=model.source_sha256, history=[*model.history, entry])
    return out, report


def read_metadata(proto) -> dict[str, Any] | None:
    """The continual metadata of a step model (None for other models)."""
    for p in proto.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    return None


def _output_info(b: StepBuilder, name: str):
    from onnx import helper

    shape = list(b.shapes.get(name, []))
    t = b.timing[name]
    if t.axis is not None and shape:
        shape[t.axis] = 1
    return helper.make_tensor_value_info(name, b.dtypes.get(name, 1), shape or None)


def _spec_of(proto, name: str) -> TensorSpec:
    from edgert.model import _ONNX_DTYPES

    for vi in [*proto.graph.output]:
        if vi.name == name:
            tt = vi.type.tensor_type
            return TensorSpec(name, tuple(d.dim_value for d in tt.shape.dim), _ONNX_DTYPES[tt.elem_type])
    raise KeyError(name)


def _prune_initializers(proto) -> None:
    used = {i for n in proto.graph.node for i in n.input}
    live = [t for t in proto.graph.initializer if t.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(live)


def macs(proto) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul in a shape-inferred model."""
    import onnx

    g = proto.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for n in g.node:
        out = shapes.get(n.output[0])
        if not out:
            continue
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes[n.input[0]]
            trans = any(at.name == "transA" and onnx.helper.get_attribute_value(at) for at in n.attribute)
            k = a[-2] if trans else a[-1]
            total += int(np.prod(out)) * int(k)
    return total
