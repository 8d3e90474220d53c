"""Pruning: structured channel pruning (physically smaller layers) and weight sparsity (``sparsity``).

``prune(model, spec, calib)``; ``spec`` from ``parse_spec``:

- ``structured:keep=0.6`` removes whole channels until the model has 60% of
  its MACs. Channels are grouped by ``groups.analyze`` (everything that must be
  cut together); a channel's importance is the share of its consumers' output
  energy it carries (weight norm x calibration activation energy), so scores
  compare across layers and the greedy search (cheapest importance per MAC
  saved first) gives each layer its own ratio. Counts stay multiples of the
  vector width. Each layer reading pruned channels is then refit by least
  squares on calibration data (pruned-model inputs -> float-model outputs).
- ``unstructured:0.9`` and ``2:4`` zero weights (see ``sparsity``).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgert.compress import calibration as cal
from edgert.compress import groups as grp
from edgert.compress.spec import parse_options
from edgert.errors import CompressError


@dataclass(frozen=True)
class PruneSpec:
    """``kind``: structured, unstructured or nm. Parsed from ``--prune`` by ``parse_spec``."""

    kind: str = "structured"
    keep: float = 0.6  # structured: fraction of the model's MACs kept
    sparsity: float = 0.5  # unstructured: fraction of the weights set to zero
    n: int = 2  # nm: n of every m consecutive input weights are kept
    m: int = 4
    width: int = 8  # structured: channel counts stay multiples of this (the target's vector width)
    min_keep: float = 0.25  # structured: no group keeps fewer than this fraction of its channels
    samples: int | None = 128
    reconstruct: bool = True
    damp: float = 0.01  # ridge term (x mean diagonal of the input Gram matrix) of every refit
    report_samples: int = 32

    def __post_init__(self):
        if self.kind not in ("structured", "unstructured", "nm"):
            raise CompressError(f"unknown pruning '{self.kind}'; use structured:keep=0.6, unstructured:0.9 or 2:4")
        if not 0.0 < self.keep <= 1.0:
            raise CompressError(f"--prune keep={self.keep} must lie in (0, 1], e.g. structured:keep=0.6")
        if not 0.0 <= self.sparsity < 1.0:
            raise CompressError(f"--prune sparsity {self.sparsity} must lie in [0, 1), e.g. unstructured:0.9")
        if not 0 < self.n < self.m:
            raise CompressError(f"--prune {self.n}:{self.m}: need 0 < N < M, e.g. 2:4")
        if self.width < 1:
            raise CompressError(f"--prune width={self.width} must be a positive channel multiple, e.g. 8")


def parse_spec(text: str, target: str | None = None) -> PruneSpec:
    """``structured:keep=0.6[,width=8,...]``, ``unstructured:0.9``, ``N:M`` (e.g. ``2:4``)."""
    head, _, rest = text.strip().partition(":")
    head = head.strip().lower()
    kw: dict[str, Any] = {}
    if head.isdigit():
        n, _, tail = text.partition(":")
        m, _, rest = tail.partition(",")
        try:
            kw.update(kind="nm", n=int(n), m=int(m))
        except ValueError:
            raise CompressError(f"--prune '{text}': write N:M with whole numbers, e.g. 2:4") from None
    elif head in ("structured", "unstructured"):
        kw["kind"] = head
    else:
        raise CompressError(f"--prune '{text}': use structured:keep=0.6, unstructured:0.9 or 2:4")
    types = {"keep": float, "sparsity": float, "width": int, "min_keep": float, "samples": int, "damp": float,
             "report_samples": int}
    kw.update(parse_options("--prune", rest, types, booleans=("reconstruct",),
                            bare="keep" if kw["kind"] == "structured" else "sparsity"))
    if "width" not in kw and target:
        kw["width"] = vector_width(target)
    return PruneSpec(**kw)


def vector_width(target: str) -> int:
    """float32 lanes of the target's vector unit (its TOML ``vector_bits`` / 32), at least 4."""
    from edgert.compiler.targets import load_target

    return max(4, load_target(target).vector_bits // 32)


@dataclass
class PassReport:
    """What a pruning or low-rank pass did, measured against its input model on calibration data."""

    pass_name: str
    spec: dict[str, Any]
    calibration: str
    samples: int
    params: tuple[int, int] = (0, 0)  # before, after
    macs: tuple[int, int] = (0, 0)
    file_bytes: tuple[int, int] = (0, 0)
    output_sqnr_db: float = 0.0
    accuracy: dict[str, float] | None = None  # zoo models: validation accuracy before/after (zoo harness)
    sparsity: float | None = None  # sparsity passes: fraction of zeros in the pruned layers' weights
    layers: list[dict[str, Any]] = field(default_factory=list)
    left_alone: list[dict[str, Any]] = field(default_factory=list)  # structures not touched, with the reason
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        p, m, b = self.params, self.macs, self.file_bytes
        text = (f"{self.pass_name}: params {p[0]:,} -> {p[1]:,}, MACs {m[0]:,} -> {m[1]:,} ({m[1] / max(m[0], 1):.1%}), "
                f"file {b[0]:,} -> {b[1]:,} bytes; output SQNR {self.output_sqnr_db:.1f} dB vs the input model")
        if self.accuracy:
            text += f"; accuracy {self.accuracy['before']:.2%} -> {self.accuracy['after']:.2%}"
        if self.sparsity is not None:
            text += f"; weight sparsity {self.sparsity:.1%}"
        if self.left_alone:
            text += f"; {len(self.left_alone)} structure(s) left alone"
        return text


def prune(model, spec: PruneSpec | None = None, calib: Any = None):
    """Structured or sparse pruning: ``(Model, PassReport)``; ``model`` is not modified."""
    spec = spec or PruneSpec()
    if spec.kind != "structured":
        from edgert.compress import sparsity

        return sparsity.sparsify(model, spec, calib)
    start = time.perf_counter()
    proto, data = prepare(model, calib, spec.samples, "pruning")
    from edgert.compress.graph import fold_static_shapes

    # Shape arithmetic on static shapes would read pruned channel counts at run time: make it constant.
    proto = _named(_unshare(fold_static_shapes(proto)))
    graph = grp.analyze(proto)
    report = PassReport("prune", asdict(spec), data.source, data.size)
    report.left_alone = [{"channels": g.size, "producers": g.producers, "reason": g.unsafe} for g in graph.left_alone()]
    scores = _importance(proto, graph, data)
    keep = _choose(proto, graph, scores, spec, report)
    pruned = apply(proto, graph, keep)
    if spec.reconstruct:
        refit(proto, pruned, graph, keep, data, spec.damp)
    return finish(model, proto, pruned, "prune", spec, data, report, start)


def prepare(model, calib, samples: int | None, what: str):
    """A named, shape-inferred copy of the model's proto and its calibration samples."""
    import onnx

    from edgert.compress import qdq

    if model.format != "onnx":
        raise CompressError(f"{what} works on ONNX models; convert the TFLite model to ONNX first")
    if calib is None:
        raise CompressError(f"{what} needs calibration data: pass --calib DATA (.npz, image folder or zoo name)")
    data = cal.load_calibration(calib, model).take(samples)
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    qdq.name_nodes(proto)
    del proto.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(proto), data


def finish(model, before, after, pass_name: str, spec, data, report: PassReport, start: float):
    """Check ``after``, fill the report's sizes and accuracy figures, and wrap it as a Model with history."""
    import onnx

    from edgert.compress.graph import count_macs, count_params
    from edgert.compress.quantize import _output_sqnr
    from edgert.model import Model

    del after.graph.value_info[:]
    after = onnx.shape_inference.infer_shapes(after)
    try:
        onnx.checker.check_model(after)
    except onnx.checker.ValidationError as exc:  # a bug here, not a user error: say so plainly
        raise CompressError(f"{pass_name} produced an invalid graph ({str(exc).splitlines()[0]}); please report it") from None
    report.params = (count_params(before), count_params(after))
    report.macs = (count_macs(before), count_macs(after))
    report.file_bytes = (before.ByteSize(), after.ByteSize())
    report.output_sqnr_db = round(_output_sqnr(before, after, data.take(spec.report_samples)), 2)
    entry = {"pass": pass_name, "params": asdict(spec), "calibration": data.source,
             "output_sqnr_db": report.output_sqnr_db, "macs": list(report.macs)}
    out = Model(format="onnx", inputs=list(model.inputs), outputs=list(model.outputs), name=model.name, proto=after,
                source_sha256=model.source_sha256, history=[*model.history, entry])
    if data.zoo:
        from edgert.zoo.harness import evaluate

        report.accuracy = {"before": evaluate(data.zoo, model).accuracy, "after": evaluate(data.zoo, out).accuracy}
    report.seconds = round(time.perf_counter() - start, 2)
    return out, report


def _unshare(proto):
    """Give every node its own copy of shared float constants (exporters share equal biases, often via
    Identity nodes), so slicing one node's weights never changes another's."""
    from onnx import numpy_helper

    g = proto.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:  # Identity of a constant: the constant itself
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = numpy_helper.to_array(inits[node.input[0]])
            g.initializer.append(numpy_helper.from_array(copy, node.output[0]))
            inits[node.output[0]] = g.initializer[-1]
        else:
            keep.append(node)
    del g.node[:]
    g.node.extend(keep)
    seen: set[str] = set()
    for node in g.node:
        for i, name in enumerate(node.input):
            t = inits.get(name)
            if t is None or t.data_type != 1 or int(np.prod(t.dims)) <= 1:
                continue
            if name in seen:
                new = f"{name}.{node.name}.{i}"
                g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(t), new))
                inits[new] = g.initializer[-1]
                node.input[i] = new
            seen.add(name)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return proto


def _named(proto):
    import onnx

    del proto.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(proto)


def _channel_energy(proto, tensors: dict[str, bool], data) -> dict[str, np.ndarray]:
    """Mean square of each feature of ``tensors`` (name -> features on the last axis, else axis 1)."""
    run = cal.intermediate_session(proto, list(tensors))
    sums: dict[str, np.ndarray] = {}
    count = 0
    for feeds in data:
        count += 1
        for t, x in run(feeds).items():
            x = np.asarray(x, np.float64)
            axis = x.ndim - 1 if tensors[t] else 1
            axes = tuple(i for i in range(x.ndim) if i != axis)
            e = np.mean(x * x, axis=axes)
            sums[t] = sums.get(t, 0) + e
    return {t: s / max(count, 1) for t, s in sums.items()}


def _importance(proto, graph: grp.ChannelGraph, data) -> dict[int, np.ndarray]:
    """Per prunable group: each channel's share of its consumers' output energy (summed over consumers)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    consumers = [c for c in graph.consumers if any(not graph.groups[graph.find(s)].unsafe for s, _ in c.layout.segments)]
    energy = _channel_energy(proto, {c.input: c.layout.last for c in consumers}, data) if consumers else {}
    scores = {g.id: np.zeros(g.size) for g in graph.prunable()}
    for c in consumers:
        w = numpy_helper.to_array(inits[c.weight]).astype(np.float64)
        wn = np.sum(w * w, axis=tuple(i for i in range(w.ndim) if i != c.in_axis))
        contrib = wn * energy[c.input]
        total = float(contrib.sum()) or 1.0
        offset = 0
        for s, n in c.layout.segments:
            block = contrib[offset * c.layout.inner:(offset + n) * c.layout.inner].reshape(n, c.layout.inner).sum(1)
            root = graph.find(s)
            if root in scores:
                scores[root] += block / total
            offset += n
    return scores


def _choose(proto, graph: grp.ChannelGraph, scores: dict[int, np.ndarray], spec: PruneSpec,
            report: PassReport) -> dict[int, np.ndarray]:
    """Kept channels per group: greedily drop the chunk (``width`` channels) with the least importance per MAC."""
    from edgert.compress.graph import count_macs

    total = count_macs(proto)
    full = graph.macs()
    target = spec.keep * total
    order = {g: np.argsort(s, kind="stable") for g, s in scores.items()}
    kept = {g: graph.groups[g].size for g in scores}
    floor = {g: max(spec.width, math.ceil(spec.min_keep * n)) for g, n in kept.items()}
    removed = dict.fromkeys(kept, 0)
    for g, n in list(kept.items()):
        if n < 2 * spec.width:
            report.left_alone.append({"channels": n, "producers": graph.groups[g].producers,
                                      "reason": f"fewer than 2x{spec.width} channels"})
            del kept[g]
    current = graph.macs(kept)
    while total - (full - current) > target:
        best, best_cost = None, math.inf
        for g, k in kept.items():
            chunk = k % spec.width or spec.width
            if k - chunk < floor[g]:
                continue
            trial = {**kept, g: k - chunk}
            saving = current - graph.macs(trial)
            if saving <= 0:
                continue
            cost = float(scores[g][order[g][removed[g]:removed[g] + chunk]].sum()) / saving
            if cost < best_cost:
                best, best_cost, best_chunk = g, cost, chunk
        if best is None:
            break  # every group is at its floor: report what was reached
        kept[best] -= best_chunk
        removed[best] += best_chunk
        current = graph.macs(kept)
    keep = {}
    for g, k in kept.items():
        if k < graph.groups[g].size:
            keep[g] = np.sort(order[g][removed[g]:])
            report.layers.append({"producers": graph.groups[g].producers, "channels": [graph.groups[g].size, k],
                                  "importance_removed": round(float(scores[g][order[g][:removed[g]]].sum()), 5)})
    return keep


def apply(proto, graph: grp.ChannelGraph, keep: dict[int, np.ndarray]):
    """A copy of ``proto`` with every edit's initializer sliced to the kept channels."""
    import onnx
    from onnx import numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = {t.name: t for t in out.graph.initializer}
    per_init: dict[str, dict[int, np.ndarray]] = {}
    for e in graph.edits:
        if not any(graph.find(s) in keep for s, _ in e.layout.segments):
            continue
        idx = graph.indices(e.layout, keep)
        prev = per_init.setdefault(e.init, {}).get(e.axis)
        if prev is not None and not np.array_equal(prev, idx):
            raise CompressError(f"pruning found two channel choices for '{e.init}'; please report this model")
        per_init[e.init][e.axis] = idx
    for name, axes in per_init.items():
        arr = numpy_helper.to_array(inits[name])
        for axis, idx in axes.items():
            arr = np.take(arr, idx, axis=axis)
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    nodes = {n.name: n for n in out.graph.node}
    for name, layout in graph.depthwise:
        if any(graph.find(s) in keep for s, _ in layout.segments):
            attr = next(a for a in nodes[name].attribute if a.name == "group")
            attr.i = len(graph.indices(layout, keep))
    del out.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(out)


def _layer(proto, node_name: str):
    """The qdq.Layer view (for im2col) of node ``node_name``."""
    from edgert.compress import qdq

    return next((lay for lay in qdq.find_layers(proto) if lay.name == node_name), None)


def refit(before, after, graph: grp.ChannelGraph, keep: dict[int, np.ndarray], data, damp: float) -> None:
    """Least-squares refit (in place, in graph order) of every layer reading pruned channels.

    Each layer's weights (and bias) on its kept inputs are chosen to reproduce the
    float model's output on calibration data from the pruned model's actual
    inputs, with a ridge pull towards the original weights.
    """
    targets = {}
    for c in graph.consumers:
        if any(graph.find(s) in keep for s, _ in c.layout.segments) and c.node not in targets:
            targets[c.node] = c
    order = [n.name for n in after.graph.node if n.name in targets]
    if not order:
        return
    out_idx = {}
    for c in targets.values():
        e = next((e for e in graph.edits if e.init == c.weight and e.axis != c.in_axis), None)
        out_idx[c.node] = graph.indices(e.layout, keep) if e is not None else None
    orig_inputs = cal.intermediate_session(before, sorted({c.input for c in targets.values()}))
    samples = [orig_inputs(feeds) for feeds in data]
    for name in order:
        c = targets[name]
        lay0, lay1 = _layer(before, name), _layer(after, name)
        if lay0 is None or lay1 is None:
            continue
        refit_layer(before, after, lay0, lay1, samples, data, out_idx[name], damp)


def refit_layer(before, after, lay0, lay1, samples, data, rows, damp: float) -> None:
    """Refit one layer of ``after`` so it reproduces layer ``lay0`` of ``before``."""
    from onnx import numpy_helper

    from edgert.compress import rounding

    i0 = {t.name: t for t in before.graph.initializer}
    i1 = {t.name: t for t in after.graph.initializer}
    w0 = numpy_helper.to_array(i0[lay0.weight]).astype(np.float64)
    w1 = numpy_helper.to_array(i1[lay1.weight]).astype(np.float64)
    m0 = rounding.weight_matrix(lay0, w0)
    if rows is not None:
        m0 = m0[rows]
    b0 = numpy_helper.to_array(i0[lay0.bias]).astype(np.float64) if lay0.bias else np.zeros(m0.shape[0] if rows is None else len(rows))
    if lay0.bias and rows is not None:
        b0 = b0[rows]
    with_bias = lay1.op in ("Conv", "Gemm")
    m1 = rounding.weight_matrix(lay1, w1)
    k1 = m1.shape[1] + int(with_bias)
    gram = np.zeros((k1, k1))
    cross = np.zeros((m1.shape[0], k1))
    run = cal.intermediate_session(after, [lay1.inputs[0]])
    for acts0, feeds in zip(samples, data, strict=False):
        x1 = run(feeds)[lay1.inputs[0]]
        c0 = rounding.columns(lay0, acts0[lay0.inputs[0]], w0.shape)
        c1 = rounding.columns(lay1, x1, w1.shape)
        if c0 is None or c1 is None:
            return
        c0, c1 = c0[0].astype(np.float64), c1[0].astype(np.float64)
        y = m0 @ c0 + (b0[:, None] if lay0.op != "MatMul" else 0.0)
        if with_bias:
            c1 = np.vstack([c1, np.ones((1, c1.shape[1]))])
        gram += c1 @ c1.T
        cross += y @ c1.T
    prior = np.hstack([m1, numpy_helper.to_array(i1[lay1.bias]).astype(np.float64)[:, None]]) if with_bias and lay1.bias \
        else (np.hstack([m1, np.zeros((m1.shape[0], 1))]) if with_bias else m1)
    lam = damp * float(np.mean(np.diag(gram))) + 1e-12
    sol = np.linalg.solve(gram + lam * np.eye(k1), (cross + lam * prior).T).T
    w_new = rounding.from_matrix(lay1, sol[:, : m1.shape[1]], w1.shape).astype(np.float32)
    i1[lay1.weight].CopyFrom(numpy_helper.from_array(w_new, lay1.weight))
    if with_bias:
        set_bias(after, lay1, sol[:, -1].astype(np.float32))


def set_bias(proto, layer, bias: np.ndarray) -> None:
    """Give a Conv/Gemm node ``bias`` (adding the input when it had none)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    if layer.bias:
        inits[layer.bias].CopyFrom(numpy_helper.from_array(bias, layer.bias))
        return
    node = next(n for n in proto.graph.node if n.name == layer.name)
    name = f"{layer.name}.bias"
    proto.graph.initializer.append(numpy_helper.from_array(bias, name))
    while len(node.input) < 2:
        node.input.append("")
    if len(node.input) == 2:
        node.input.append(name)
    else:
        node.input[2] = name
