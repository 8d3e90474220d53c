"""Unstructured and N:M weight sparsity with second-order (SparseGPT) reconstruction.

Weights stay dense ONNX initializers with exact zeros: the compiler measures
their sparsity and routes them to block-sparse kernels where that is faster,
and any runtime still runs the model.

- ``unstructured:S`` sets a fraction S of the Conv/Gemm/MatMul weights to
  zero. Per-layer ratios come from one global threshold on LAMP scores (each
  weight's square over the sum of the squares of the layer's weights at least
  as large), so small, dense-critical layers keep more.
- ``N:M`` keeps N of every M consecutive weights along the reduction axis
  (the im2col order: input channel, kernel row, kernel column) in every layer
  whose reduction length is a multiple of M.

Each layer is then pruned with SparseGPT's column-by-column OBS update from
the Hessian of its input on calibration data (``H = X X^T``, im2col for Conv),
layer after layer in graph order so later layers see the already sparse
earlier ones.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from edgert.compress import calibration as cal
from edgert.compress import qdq, rounding

_BLOCK = 128


def lamp_sparsities(weights: dict[str, np.ndarray], sparsity: float) -> dict[str, float]:
    """Per-layer sparsity from one global threshold on LAMP scores (Lee et al., 2021)."""
    scores = {}
    for name, w in weights.items():
        sq = np.sort((w.astype(np.float64) ** 2).ravel())
        tail = np.cumsum(sq[::-1])[::-1]  # sum of squares of weights at least as large
        scores[name] = sq / np.maximum(tail, 1e-30)
    everything = np.concatenate(list(scores.values()))
    k = int(round(sparsity * everything.size))
    if k == 0:
        return dict.fromkeys(weights, 0.0)
    threshold = np.partition(everything, k - 1)[k - 1]
    return {name: float(np.mean(s <= threshold)) for name, s in scores.items()}


def sparsegpt(w: np.ndarray, hessian: np.ndarray, sparsity: float = 0.0, nm: tuple[int, int] | None = None,
              damp: float = 0.01) -> np.ndarray:
    """Prune rows of ``w`` [out, K] (``sparsity`` or N:M) minimising ``tr(dW H dW^T)`` (Frantar & Alistarh, 2023)."""
    w = w.astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    k = w.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * float(np.mean(np.diag(h))) * np.eye(k)
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: the OBS update of column i uses row i of it
    for i1 in range(0, k, _BLOCK):
        i2 = min(i1 + _BLOCK, k)
        w1 = w[:, i1:i2].copy()
        q1 = np.zeros_like(w1)
        err1 = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        mask = np.zeros_like(w1, bool)
        if nm is None and sparsity > 0:
            score = w1**2 / np.diag(h1)[None, :] ** 2
            cut = int(round(sparsity * score.size))
            if cut:
                mask.ravel()[np.argsort(score.ravel(), kind="stable")[:cut]] = True
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                score = w1[:, i:i + m] ** 2 / np.diag(h1)[None, i:i + m] ** 2
                drop = np.argsort(score, axis=1, kind="stable")[:, : m - n]
                np.put_along_axis(mask[:, i:i + m], drop, True, axis=1)
            col = w1[:, i]
            q = np.where(mask[:, i], 0.0, col)
            q1[:, i] = q
            err = (col - q) / h1[i, i]
            w1[:, i:] -= err[:, None] * h1[i, i:][None, :]
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


def sparsify(model, spec, calib):
    """``prune`` for ``unstructured`` and ``nm`` specs: ``(Model, PassReport)``."""
    from onnx import numpy_helper

    from edgert.compress.prune import PassReport, finish, prepare

    start = time.perf_counter()
    proto, data = prepare(model, calib, spec.samples, "sparsity")
    before = proto.__class__()
    before.CopyFrom(proto)
    report = PassReport("prune", asdict(spec), data.source, data.size)
    inits = {t.name: t for t in proto.graph.initializer}
    layers = [lay for lay in qdq.find_layers(proto) if lay.weight is not None]
    weights = {lay.name: numpy_helper.to_array(inits[lay.weight]) for lay in layers}
    nm = (spec.n, spec.m) if spec.kind == "nm" else None
    if nm is None:
        ratios = lamp_sparsities(weights, spec.sparsity)
    else:
        ratios = {}
        for lay in layers:
            k = rounding.weight_matrix(lay, weights[lay.name]).shape[1]  # per group for grouped convs
            if k % spec.m:
                report.left_alone.append({"layer": lay.name, "reason": f"reduction length {k} is not a multiple of {spec.m}"})
            else:
                ratios[lay.name] = 1 - spec.n / spec.m
    total = zeros = 0
    for lay in layers:
        w = weights[lay.name]
        total += w.size
        if ratios.get(lay.name, 0.0) <= 0.0:
            zeros += int(np.sum(w == 0))
            continue
        hess = _hessians(proto, lay, w.shape, data)
        if hess is None:
            report.left_alone.append({"layer": lay.name, "reason": "Conv auto_pad form (re-export with explicit pads)"})
            zeros += int(np.sum(w == 0))
            continue
        w2 = rounding.weight_matrix(lay, w.astype(np.float64))
        g = rounding.groups(lay)
        rows = w2.shape[0] // g
        new = np.empty_like(w2)
        err = sig = 0.0
        for gi in range(g):
            block = w2[gi * rows:(gi + 1) * rows]
            pruned = sparsegpt(block, hess[gi], ratios[lay.name], nm, spec.damp)
            new[gi * rows:(gi + 1) * rows] = pruned
            d = pruned - block
            err += float(np.einsum("ik,kl,il->", d, hess[gi], d))
            sig += float(np.einsum("ik,kl,il->", block, hess[gi], block))
        w_new = rounding.from_matrix(lay, new, w.shape).astype(np.float32)
        inits[lay.weight].CopyFrom(numpy_helper.from_array(w_new, lay.weight))
        zeros += int(np.sum(w_new == 0))
        report.layers.append({"layer": lay.name, "op": lay.op, "shape": list(w.shape),
                              "sparsity": round(float(np.mean(w_new == 0)), 4),
                              "layer_sqnr_db": round(float(10 * np.log10(max(sig, 1e-30) / max(err, 1e-30))), 2)})
    report.sparsity = round(zeros / max(total, 1), 4)
    return finish(model, before, proto, "prune", spec, data, report, start)


def _hessians(proto, lay: qdq.Layer, w_shape, data) -> np.ndarray | None:
    """``sum X X^T`` of the layer's input columns [groups, K, K] in the current model (None: layout not handled)."""
    run = cal.intermediate_session(proto, [lay.inputs[0]])
    total = None
    for feeds in data:
        cols = rounding.columns(lay, run(feeds)[lay.inputs[0]], w_shape)
        if cols is None:
            return None
        c = cols.astype(np.float64)
        part = np.einsum("gkp,glp->gkl", c, c)
        total = part if total is None else total + part
    return total
