"""Static post-training int8 quantisation to standard ONNX QDQ (see ``qdq`` for the exact conventions).

``quantize(model, spec, calib)``: optional cross-layer equalisation of the
float model, streaming calibration of every quantised activation, symmetric
per-channel int8 weights (nearest or AdaRound rounding), bias correction, a
per-layer sensitivity report and float fallback for the layers that hurt most.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgert.compress import calibration as cal
from edgert.compress import qdq, rounding
from edgert.compress.spec import parse_options
from edgert.errors import CompressError


@dataclass(frozen=True)
class QuantizeSpec:
    """How to quantise. The defaults are edgert's recipe (``--quantize int8``)."""

    method: str = "percentile"  # activation ranges: minmax, percentile, entropy or mse
    percentile: float = 99.99
    samples: int | None = 256  # calibration samples used (None: all)
    # Cross-layer equalisation: on, off, or auto (nets with depthwise convs: both ways, the better kept).
    equalize: str = "auto"
    bias_correction: bool = True
    adaround: bool = False  # layer-wise adaptive rounding (slower, opt-in)
    adaround_iters: int = 500
    keep_float: tuple[str, ...] | str = ()  # layer (node) names, or "auto"
    min_sqnr_db: float = 30.0  # "auto": the model output SQNR to reach
    max_accuracy_drop: float = 0.005  # "auto" on a zoo model: allowed drop on the calibration split
    report_samples: int = 32  # calibration samples for the per-layer report

    def __post_init__(self):
        if self.method not in cal.METHODS:
            raise CompressError(f"unknown calibration method '{self.method}'; use one of {', '.join(cal.METHODS)}")
        if self.equalize not in ("auto", "on", "off"):
            raise CompressError(f"equalize must be auto, on or off, not '{self.equalize}'")
        if not 50.0 < self.percentile <= 100.0:
            raise CompressError(f"percentile {self.percentile} must lie in (50, 100], e.g. 99.99")


@dataclass
class LayerReport:
    name: str
    op: str
    sqnr_db: float  # this layer's output vs float, only this layer quantised (float inputs)
    output_sqnr_db: float  # the model's output with only this layer quantised
    cumulative_sqnr_db: float  # this layer's output in the fully quantised model
    float: bool = False  # kept in float


@dataclass
class QuantizeReport:
    """What ``quantize`` did and how close the result is to the float model (on calibration data)."""

    spec: dict[str, Any]
    calibration: str
    samples: int
    layers: list[LayerReport]  # sorted worst (lowest sqnr_db) first
    kept_float: list[str]
    output_sqnr_db: float
    equalized_pairs: int = 0
    relu6_replaced: int = 0
    equalize_drift_db: float | None = None  # float model output SQNR after equalisation vs before
    adaround: dict[str, float] = field(default_factory=dict)  # layer -> output error reduction (fraction)
    calib_accuracy: dict[str, float] | None = None  # zoo calibration split: float and int8
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self, limit: int = 10) -> str:
        rows = [f"{'layer':<40} {'op':<8} {'SQNR dB':>8} {'out dB':>8} {'cum dB':>8}"]
        for r in self.layers[:limit]:
            tag = "  (float)" if r.float else ""
            rows.append(f"{r.name[:40]:<40} {r.op:<8} {r.sqnr_db:>8.1f} {r.output_sqnr_db:>8.1f} "
                        f"{r.cumulative_sqnr_db:>8.1f}{tag}")
        return "\n".join(rows)


def parse_spec(text: str, keep_float: str | None = None) -> QuantizeSpec:
    """``int8[:METHOD][,key=value...]`` e.g. ``int8:entropy``, ``int8:method=mse,adaround=1,samples=128``."""
    scheme, _, rest = text.partition(":")
    if scheme.strip().lower() != "int8":
        raise CompressError(f"--quantize '{text}': only int8 is supported, e.g. --quantize int8:entropy")
    kw: dict[str, Any] = {}
    types = {"percentile": float, "samples": int, "adaround_iters": int, "min_sqnr_db": float,
             "max_accuracy_drop": float, "report_samples": int}
    kw.update(parse_options("--quantize", rest, types, booleans=("bias_correction", "adaround"),
                            words=("method", "equalize"), bare="method"))
    if keep_float:
        kw["keep_float"] = "auto" if keep_float == "auto" else tuple(n.strip() for n in keep_float.split(",") if n.strip())
    return QuantizeSpec(**kw)


def quantize(model, spec: QuantizeSpec | None = None, calib: Any = None):
    """Post-training static int8 quantisation: ``(Model, QuantizeReport)``; ``model`` is not modified."""
    import onnx

    from edgert.model import Model

    spec = spec or QuantizeSpec()
    if spec.equalize == "auto" and model.format == "onnx":
        from dataclasses import replace

        from edgert.compress.equalize import has_depthwise

        if has_depthwise(model.proto):
            # Equalising changes ReLU6 into ReLU, which can cost more than it gains: try both, keep the better.
            calib = cal.load_calibration(calib, model) if calib is not None else None
            tried = [quantize(model, replace(spec, equalize=mode), calib) for mode in ("on", "off")]
            return max(tried, key=lambda pair: pair[1].output_sqnr_db)
    start = time.perf_counter()
    if model.format != "onnx":
        raise CompressError("quantisation works on ONNX models; convert the TFLite model to ONNX first")
    if calib is None:
        raise CompressError("quantisation needs calibration data: pass --calib DATA (.npz, image folder or zoo name)")
    data = cal.load_calibration(calib, model).take(spec.samples)
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    proto = qdq.ensure_opset(proto)
    qdq.name_nodes(proto)
    proto = onnx.shape_inference.infer_shapes(proto)
    float_proto = proto
    report = QuantizeReport(asdict(spec), data.source, data.size, [], [], 0.0)
    from edgert.compress import equalize as eq

    if spec.equalize == "on":
        proto = onnx.ModelProto()
        proto.CopyFrom(float_proto)
        result = eq.equalize(proto)
        report.equalized_pairs, report.relu6_replaced = result.pairs, result.relu6_replaced
        report.equalize_drift_db = _output_sqnr(float_proto, proto, data.take(spec.report_samples))

    layers = qdq.find_layers(proto)
    if not layers:
        raise CompressError("the model has no Conv, Gemm or MatMul with constant weights to quantise")
    keep = _check_keep_float(spec.keep_float, layers)
    tensors = sorted({t for layer in layers for t in layer.inputs})
    stats = cal.collect(proto, data, tensors)
    scales = {t: max(cal.amax(stats[t], spec.method, spec.percentile), 1e-8) / qdq.QMAX for t in tensors}
    weights = _quantize_weights(proto, layers, scales, data, spec, report)

    # Per-layer numbers compare with the (equalised) float model the layers come from; whole-model
    # numbers compare with the original, so they include any equalisation drift.
    sens = _sensitivity(proto, layers, scales, weights, data.take(spec.report_samples))
    if spec.keep_float == "auto":
        keep = _auto_keep_float(float_proto, proto, layers, scales, weights, sens, data, spec)
    qproto = qdq.emit(proto, [lay for lay in layers if lay.name not in keep], scales, weights)
    qproto = onnx.shape_inference.infer_shapes(qproto)
    report.kept_float = sorted(keep)
    report.output_sqnr_db = _output_sqnr(float_proto, qproto, data.take(spec.report_samples))
    cumulative = _layer_sqnr(proto, qproto, [lay.output for lay in layers], data.take(spec.report_samples))
    report.layers = sorted(
        (LayerReport(lay.name, lay.op, *sens[lay.name], cumulative[lay.output], lay.name in keep) for lay in layers),
        key=lambda r: r.sqnr_db,
    )
    if data.zoo:
        report.calib_accuracy = {"float": _zoo_calib_accuracy(float_proto, data.zoo),
                                 "int8": _zoo_calib_accuracy(qproto, data.zoo)}
    report.seconds = round(time.perf_counter() - start, 2)
    entry = {"pass": "quantize", "params": {**asdict(spec), "keep_float": report.kept_float},
             "calibration": data.source, "output_sqnr_db": round(report.output_sqnr_db, 2)}
    out = Model(format="onnx", inputs=list(model.inputs), outputs=list(model.outputs), name=model.name, proto=qproto,
                source_sha256=model.source_sha256, history=[*model.history, entry])
    return out, report


def _check_keep_float(keep, layers: list[qdq.Layer]) -> set[str]:
    if keep == "auto":
        return set()
    names = {lay.name for lay in layers}
    unknown = [k for k in keep if k not in names]
    if unknown:
        shown = ", ".join(lay.name for lay in layers[:12]) + (", ..." if len(layers) > 12 else "")
        raise CompressError(f"--keep-float names unknown layer(s) {', '.join(unknown)}; quantisable layers: {shown}")
    return set(keep)


def _quantize_weights(proto, layers, scales, data, spec: QuantizeSpec, report: QuantizeReport) -> dict:
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    weights: dict[str, qdq.QuantizedWeight] = {}
    weighted = [lay for lay in layers if lay.weight is not None]
    for lay in weighted:
        w = numpy_helper.to_array(inits[lay.weight]).astype(np.float32)
        s = qdq.weight_scales(w, lay.w_axis)
        bias = numpy_helper.to_array(inits[lay.bias]).astype(np.float32) if lay.bias else None
        weights[lay.name] = qdq.QuantizedWeight(qdq.quantize_weight(w, s, lay.w_axis), s, bias)
    if not (spec.bias_correction or spec.adaround):
        return weights
    col_stats = _column_stats(proto, weighted, scales, data, gram=spec.adaround)
    for lay in weighted:
        st = col_stats.get(lay.name)
        if st is None:
            continue
        w = numpy_helper.to_array(inits[lay.weight]).astype(np.float32)
        qw = weights[lay.name]
        w2 = rounding.weight_matrix(lay, w)
        if spec.adaround and st.gram is not None:
            q2, before, after = rounding.adaround(w2, qw.scales, st.gram, spec.adaround_iters)
            qw.q = rounding.from_matrix(lay, q2, w.shape)
            report.adaround[lay.name] = round(1 - after / before, 4) if before else 0.0
        if spec.bias_correction and lay.op in ("Conv", "Gemm"):
            w2q = rounding.weight_matrix(lay, qw.q.astype(np.float32)) * qw.scales[:, None]
            qw.bias = rounding.corrected_bias(w2, w2q, qw.bias, st)
    return weights


def _column_stats(proto, layers, scales, data, gram: bool) -> dict[str, rounding.ColumnStats]:
    inits = {t.name: t for t in proto.graph.initializer}
    shapes = {lay.name: tuple(inits[lay.weight].dims) for lay in layers}
    run = cal.intermediate_session(proto, sorted({lay.inputs[0] for lay in layers}))
    stats: dict[str, rounding.ColumnStats] = {}
    skipped: set[str] = set()
    for feeds in data:
        acts = run(feeds)
        for lay in layers:
            if lay.name in skipped:
                continue
            cols = rounding.columns(lay, acts[lay.inputs[0]], shapes[lay.name])
            if cols is None:
                skipped.add(lay.name)
                continue
            if lay.name not in stats:
                stats[lay.name] = rounding.new_stats(cols.shape[0], cols.shape[1], gram)
            rounding.update(stats[lay.name], cols, scales[lay.inputs[0]])
    return stats


def _sqnr(signal: float, noise: float) -> float:
    if noise <= 0:
        return 200.0
    return float(10 * np.log10(max(signal, 1e-30) / noise))


def _outputs(proto) -> list[str]:
    return [o.name for o in proto.graph.output]


def _output_sqnr(ref_proto, proto, data) -> float:
    return _layer_sqnr(ref_proto, proto, _outputs(ref_proto), data)["__all__"]


def _layer_sqnr(ref_proto, proto, tensors: list[str], data) -> dict[str, float]:
    """SQNR of each tensor of ``proto`` vs ``ref_proto`` on ``data``; "__all__" pools the model outputs."""
    tensors = list(dict.fromkeys([*tensors, *_outputs(ref_proto)]))
    ref = cal.intermediate_session(ref_proto, tensors)
    test = cal.intermediate_session(proto, tensors)
    sig = dict.fromkeys(tensors, 0.0)
    noise = dict.fromkeys(tensors, 0.0)
    for feeds in data:
        a, b = ref(feeds), test(feeds)
        for t in tensors:
            x = a[t].astype(np.float64)
            sig[t] += float(np.sum(x * x))
            noise[t] += float(np.sum((x - b[t]) ** 2))
    out = {t: _sqnr(sig[t], noise[t]) for t in tensors}
    outs = _outputs(ref_proto)
    out["__all__"] = _sqnr(sum(sig[t] for t in outs), sum(noise[t] for t in outs))
    return out


def _sensitivity(proto, layers, scales, weights, data) -> dict[str, tuple[float, float]]:
    """Per layer: (its output SQNR, the model output SQNR) with only that layer quantised."""
    result = {}
    for lay in layers:
        single = qdq.emit(proto, [lay], scales, weights)
        s = _layer_sqnr(proto, single, [lay.output], data)
        result[lay.name] = (s[lay.output], s["__all__"])
    return result


def _auto_keep_float(float_proto, proto, layers, scales, weights, sens, data, spec: QuantizeSpec) -> set[str]:
    """Keep the most harmful layers float, worst first, until the output SQNR (or zoo accuracy) is met."""
    subset = data.take(spec.report_samples)
    float_acc = _zoo_calib_accuracy(float_proto, data.zoo) if data.zoo else None

    def good(keep: set[str]) -> bool:
        q = qdq.emit(proto, [lay for lay in layers if lay.name not in keep], scales, weights)
        if float_acc is not None:
            return _zoo_calib_accuracy(q, data.zoo) >= float_acc - spec.max_accuracy_drop
        return _output_sqnr(float_proto, q, subset) >= spec.min_sqnr_db

    keep: set[str] = set()
    ranked = sorted(layers, key=lambda lay: sens[lay.name][1])
    for lay in ranked:
        if good(keep):
            break
        keep.add(lay.name)
    return keep


def _zoo_calib_accuracy(proto, zoo_name: str) -> float:
    """Accuracy on the zoo model's calibration split (labels known; the validation split stays unseen)."""
    from edgert.zoo import datasets, registry

    zoo = registry.get(zoo_name)
    split = getattr(datasets, zoo.dataset)(**zoo.dataset_args)["calib"]
    run = cal.intermediate_session(proto, [_outputs(proto)[0]])
    out = _outputs(proto)[0]
    preds = [int(np.argmax(run({zoo.input.name: x[None].reshape(zoo.input.shape)})[out])) for x in split.x]
    return float(np.mean(np.array(preds) == split.y))
