"""Low-rank factorisation: a weighted layer becomes two thinner ones, ranks chosen from calibration data.

``lowrank(model, spec, calib)``: every Gemm/MatMul with a constant weight and
every Conv (group 1) is a candidate. With the input covariance of the layer on
calibration data ``C = L L^T`` (im2col columns for Conv), the rank-r weight
closest *in output error* is ``W' = U_r S_r V_r^T L^-1`` from the SVD
``W L = U S V^T`` (data-aware SVD): the squared singular values are the
output energy each rank carries. The layer is then rewritten as

- MatMul ``x W`` -> ``(x A) B``; Gemm -> Gemm (no bias) -> Gemm (bias);
- Conv kxk -> Conv kxk with ``r`` outputs (same strides/pads) -> Conv 1x1 (bias),

and only when ``r (K + out) < K out`` (it saves MACs). Ranks are multiples of
``width``. ``energy=0.95`` keeps, per layer, the smallest rank carrying 95% of
the output energy; ``keep=0.6`` fits all candidates into 60% of their MACs,
lowering ranks greedily where the *predicted model output error* per MAC saved
is least: discarded energy x the layer's measured sensitivity (the model
output error over the layer output error when only that layer is factorised).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgert.compress import calibration as cal
from edgert.compress import qdq, rounding
from edgert.compress.spec import parse_options
from edgert.errors import CompressError

_PROBES = 8  # ranks per layer at which the model output error is measured


@dataclass(frozen=True)
class LowRankSpec:
    energy: float | None = None  # per-layer output energy kept, e.g. 0.95
    keep: float | None = None  # fraction of the candidate layers' MACs kept, e.g. 0.6
    width: int = 8  # ranks are multiples of this
    ops: tuple[str, ...] = ("Gemm", "MatMul", "Conv")
    samples: int | None = 128
    refit: bool = True  # least-squares refit of each second factor (and bias) on the factorised model's inputs
    damp: float = 0.01  # added to the covariance diagonal (x its mean) before the Cholesky
    report_samples: int = 32

    def __post_init__(self):
        if (self.energy is None) == (self.keep is None):
            raise CompressError("--lowrank needs one of energy=E or keep=F, e.g. --lowrank energy=0.95")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise CompressError(f"--lowrank energy={self.energy} must lie in (0, 1], e.g. 0.95")
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            raise CompressError(f"--lowrank keep={self.keep} must lie in (0, 1], e.g. 0.6")
        unknown = set(self.ops) - {"Gemm", "MatMul", "Conv"}
        if unknown:
            raise CompressError(f"--lowrank ops: {', '.join(sorted(unknown))} cannot be factorised; use Gemm, MatMul, Conv")


def parse_spec(text: str) -> LowRankSpec:
    """``energy=0.95`` or ``keep=0.6``, plus ``width=N``, ``ops=MatMul+Gemm``, ``samples=N``."""
    types = {"energy": float, "keep": float, "width": int, "samples": int, "damp": float, "report_samples": int}
    return LowRankSpec(**parse_options("--lowrank", text, types, booleans=("refit",), lists=("ops",),
                                       bare_hint="energy=0.95 or keep=0.6"))


@dataclass
class _Candidate:
    layer: qdq.Layer
    w2: np.ndarray  # [out, K]
    chol: np.ndarray  # L, C = L L^T
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray
    positions: int  # output positions per sample (MACs = positions * out * K)
    shape: tuple[int, ...]

    @property
    def out(self) -> int:
        return self.w2.shape[0]

    @property
    def k(self) -> int:
        return self.w2.shape[1]

    def macs(self, rank: int | None) -> int:
        full = self.positions * self.out * self.k
        return full if rank is None else self.positions * rank * (self.out + self.k)

    def discarded(self, rank: int | None) -> float:
        return 0.0 if rank is None else float(np.sum(self.s[rank:] ** 2))

    def ranks(self, width: int) -> list[int]:
        """Ranks that save MACs, largest first."""
        top = min(self.out, self.k)
        return [r for r in range(width * (top // width), 0, -width) if self.macs(r) < self.macs(None)]


def lowrank(model, spec: LowRankSpec | None = None, calib: Any = None):
    """Factorise weighted layers into two low-rank ones: ``(Model, PassReport)``; ``model`` is not modified."""
    from edgert.compress.prune import PassReport, finish, prepare

    spec = spec or LowRankSpec(energy=0.95)
    start = time.perf_counter()
    proto, data = prepare(model, calib, spec.samples, "low-rank factorisation")
    report = PassReport("lowrank", asdict(spec), data.source, data.size)
    cands = _candidates(proto, spec, data, report)
    if spec.energy is not None:
        ranks = {}
        for c in cands:
            cum = np.cumsum(c.s**2) / max(float(np.sum(c.s**2)), 1e-30)
            r = int(np.searchsorted(cum, spec.energy - 1e-9)) + 1
            r = min(spec.width * math.ceil(r / spec.width), min(c.out, c.k))
            ranks[c.layer.name] = r if c.macs(r) < c.macs(None) else None
    else:
        ranks = _budget(proto, cands, spec, data)
    out = _rewrite(proto, cands, ranks)
    if spec.refit:
        _refit(proto, out, [c for c in cands if ranks.get(c.layer.name) is not None], data, spec.damp)
    for c in cands:
        r = ranks.get(c.layer.name)
        total = float(np.sum(c.s**2))
        report.layers.append({
            "layer": c.layer.name, "op": c.layer.op, "shape": list(c.shape), "rank": r, "full_rank": int(min(c.out, c.k)),
            "energy_kept": round(1 - c.discarded(r) / max(total, 1e-30), 5), "macs": [c.macs(None), c.macs(r)],
        })
    return finish(model, proto, out, "lowrank", spec, data, report, start)


def _candidates(proto, spec: LowRankSpec, data, report) -> list[_Candidate]:
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    layers = []
    for lay in qdq.find_layers(proto):
        if lay.weight is None or lay.op not in spec.ops:
            continue
        if lay.op == "Conv" and rounding.groups(lay) != 1:
            report.left_alone.append({"layer": lay.name, "reason": "grouped Conv"})
            continue
        layers.append(lay)
    if not layers:
        return []
    run = cal.intermediate_session(proto, sorted({lay.inputs[0] for lay in layers}))
    weights = {lay.name: numpy_helper.to_array(inits[lay.weight]).astype(np.float64) for lay in layers}
    grams: dict[str, np.ndarray] = {}
    positions: dict[str, int] = {}
    count = 0
    for feeds in data:
        acts = run(feeds)
        count += 1
        for lay in layers:
            cols = rounding.columns(lay, acts[lay.inputs[0]], weights[lay.name].shape)
            if cols is None:
                continue
            c = cols[0].astype(np.float64)
            grams[lay.name] = grams.get(lay.name, 0) + c @ c.T
            positions[lay.name] = c.shape[1]
    cands = []
    for lay in layers:
        if lay.name not in grams:
            report.left_alone.append({"layer": lay.name, "reason": "Conv auto_pad form"})
            continue
        w2 = rounding.weight_matrix(lay, weights[lay.name])
        cov = grams[lay.name] / count
        cov = cov + (spec.damp * float(np.mean(np.diag(cov))) + 1e-12) * np.eye(cov.shape[0])
        chol = np.linalg.cholesky(cov)
        u, s, vt = np.linalg.svd(w2 @ chol, full_matrices=False)
        cands.append(_Candidate(lay, w2, chol, u, s, vt, positions[lay.name], weights[lay.name].shape))
    return cands


def _refit(before, after, cands: list[_Candidate], data, damp: float) -> None:
    """Refit each second factor, in graph order, to the float layer's output from the factorised model's input."""
    from edgert.compress.prune import _layer, refit_layer

    if not cands:
        return
    orig = cal.intermediate_session(before, sorted({c.layer.inputs[0] for c in cands}))
    samples = [orig(feeds) for feeds in data]
    for c in cands:
        second = _layer(after, f"{c.layer.name}/b")
        if second is not None:
            refit_layer(before, after, c.layer, second, samples, data, None, damp)


def _budget(proto, cands: list[_Candidate], spec: LowRankSpec, data) -> dict[str, int | None]:
    """Ranks under ``spec.keep`` of the candidates' MACs, weighing discarded energy by measured sensitivity."""
    from edgert.compress.quantize import _layer_sqnr

    probe = data.take(spec.report_samples)
    steps = {c.layer.name: c.ranks(spec.width) for c in cands}
    measured: dict[str, dict[int, float]] = {}
    for c in cands:
        options = steps[c.layer.name]
        if len(options) > _PROBES:
            options = [options[int(i)] for i in np.linspace(0, len(options) - 1, _PROBES).round()]
        points = {}
        for r in sorted(set(options), reverse=True):
            trial = _rewrite(proto, [c], {c.layer.name: r})
            points[r] = 10 ** (-_layer_sqnr(proto, trial, [], probe)["__all__"] / 10)  # noise / output energy
        measured[c.layer.name] = points
    rank: dict[str, int | None] = {c.layer.name: None for c in cands}
    by_name = {c.layer.name: c for c in cands}
    full = sum(c.macs(None) for c in cands)
    target = spec.keep * full

    def noise(c: _Candidate, r: int | None) -> float:
        """Measured model output error with only ``c`` at rank ``r`` (between probes: scaled by discarded energy)."""
        if r is None:
            return 0.0
        points = measured[c.layer.name]
        if r in points:
            return points[r]
        near = min(points, key=lambda p: abs(p - r))
        return points[near] * c.discarded(r) / max(c.discarded(near), 1e-30)

    total = full
    while total > target:
        best, best_cost = None, math.inf
        for name, options in steps.items():
            c, r = by_name[name], rank[name]
            nxt = next((o for o in options if r is None or o < r), None)
            if nxt is None:
                continue
            saving = c.macs(r) - c.macs(nxt)
            cost = (noise(c, nxt) - noise(c, r)) / saving
            if cost < best_cost:
                best, best_cost, best_rank = name, cost, nxt
        if best is None:
            break
        total -= by_name[best].macs(rank[best]) - by_name[best].macs(best_rank)
        rank[best] = best_rank
    return rank


def _rewrite(proto, cands: list[_Candidate], ranks: dict[str, int | None]):
    """A copy of ``proto`` with each candidate of non-None rank split into two nodes."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    todo = {c.layer.name: c for c in cands if ranks.get(c.layer.name) is not None}
    nodes = []
    for node in g.node:
        c = todo.get(node.name)
        if c is None:
            nodes.append(node)
            continue
        r = ranks[node.name]
        first = np.linalg.solve(c.chol.T, c.vt[:r].T).T  # V_r^T L^-1: [r, K]
        second = c.u[:, :r] * c.s[:r][None, :]  # U_r S_r: [out, r]
        mid, a_name, b_name = f"{node.name}/lowrank", f"{node.name}.lowrank_a", f"{node.name}.lowrank_b"
        if c.layer.op == "Conv":
            a = first.reshape(r, *c.shape[1:])
            b = second.reshape(c.out, r, *([1] * (len(c.shape) - 2)))
            attrs = {k: v for k, v in c.layer.attrs.items() if k != "group"}
            n1 = helper.make_node("Conv", [node.input[0], a_name], [mid], name=f"{node.name}/a", **attrs)
            n2 = helper.make_node("Conv", [mid, b_name, *node.input[2:3]], list(node.output), name=f"{node.name}/b")
        elif c.layer.op == "Gemm":
            a, b = first, second  # [r, K], [out, r] with transB=1
            n1 = helper.make_node("Gemm", [node.input[0], a_name], [mid], name=f"{node.name}/a", transB=1)
            n2 = helper.make_node("Gemm", [mid, b_name, *node.input[2:3]], list(node.output), name=f"{node.name}/b", transB=1)
        else:
            a, b = first.T, second.T  # x [.., K] @ [K, r] @ [r, out]
            n1 = helper.make_node("MatMul", [node.input[0], a_name], [mid], name=f"{node.name}/a")
            n2 = helper.make_node("MatMul", [mid, b_name], list(node.output), name=f"{node.name}/b")
        g.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(a, np.float32), a_name),
                              numpy_helper.from_array(np.ascontiguousarray(b, np.float32), b_name)])
        nodes.extend([n1, n2])
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(out)
