"""Per-layer weight refinement from calibration data: bias correction and AdaRound.

Both work on a layer's input *columns* (im2col for Conv, rows for Gemm/MatMul),
so that the layer is ``y = W2 @ col`` per group. Streaming keeps only the
column mean (float and fake-quantised input) and, for AdaRound, the Gram
matrix ``sum col col^T``: the layer's squared output error for any weight
change ``dW`` is ``tr(dW G dW^T)``, so nothing grows with the sample count.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.compress.qdq import QMAX, Layer, fake_quant

_ZETA, _GAMMA = 1.1, -0.1  # AdaRound's rectified sigmoid stretch


@dataclass
class ColumnStats:
    """Streaming first and second moments of one layer's input columns, per group."""

    total: np.ndarray  # [G, K] sum of float columns
    total_q: np.ndarray  # [G, K] sum of fake-quantised columns
    gram: np.ndarray | None  # [G, K, K] sum col col^T of the fake-quantised columns
    count: int = 0

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def mean_q(self) -> np.ndarray:
        return self.total_q / max(self.count, 1)


def weight_matrix(layer: Layer, w: np.ndarray) -> np.ndarray:
    """The weight as [out_channels, K] rows matching ``columns``."""
    if layer.op == "Conv":
        return w.reshape(w.shape[0], -1)
    return w if layer.w_axis == 0 else w.T


def from_matrix(layer: Layer, w2: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if layer.op == "Conv":
        return w2.reshape(shape)
    return w2 if layer.w_axis == 0 else w2.T


def groups(layer: Layer) -> int:
    return int(layer.attrs.get("group", 1)) if layer.op == "Conv" else 1


def columns(layer: Layer, x: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray | None:
    """Input columns [G, K, P] of ``layer`` for input ``x``; None for layouts not handled (auto_pad)."""
    if layer.op != "Conv":
        k = w_shape[1] if layer.w_axis == 0 else w_shape[0]
        return x.reshape(-1, k).T[None]
    attrs = layer.attrs
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    spatial = len(w_shape) - 2
    if spatial not in (1, 2):
        return None
    kernel = list(w_shape[2:])
    strides = list(attrs.get("strides", [1] * spatial))
    dil = list(attrs.get("dilations", [1] * spatial))
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    if spatial == 1:  # treat Conv1d as Conv2d with height 1
        x = x[:, :, None, :]
        kernel, strides, dil, pads = [1, *kernel], [1, *strides], [1, *dil], [0, pads[0], 0, pads[1]]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    extent = ((kernel[0] - 1) * dil[0] + 1, (kernel[1] - 1) * dil[1] + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=(2, 3))
    win = win[:, :, :: strides[0], :: strides[1], :: dil[0], :: dil[1]]  # [N, C, Ho, Wo, kh, kw]
    n, c, ho, wo = win.shape[:4]
    g = groups(layer)
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(g, c // g * kernel[0] * kernel[1], n * ho * wo)


def new_stats(g: int, k: int, gram: bool) -> ColumnStats:
    return ColumnStats(np.zeros((g, k)), np.zeros((g, k)), np.zeros((g, k, k)) if gram else None)


def update(stats: ColumnStats, cols: np.ndarray, in_scale: float) -> None:
    cols = cols.astype(np.float64)
    colq = fake_quant(cols, in_scale).astype(np.float64)
    stats.total += cols.sum(axis=2)
    stats.total_q += colq.sum(axis=2)
    if stats.gram is not None:
        stats.gram += np.einsum("gkp,glp->gkl", colq, colq)
    stats.count += cols.shape[2]


def output_error(dw: np.ndarray, gram: np.ndarray) -> float:
    """Sum of squared output errors of weight change ``dw`` [Cout, K] over the columns behind ``gram``."""
    g = gram.shape[0]
    d = dw.reshape(g, -1, dw.shape[1])
    return float(np.einsum("gok,gkl,gol->", d, gram, d))


def corrected_bias(w2: np.ndarray, w2q: np.ndarray, bias: np.ndarray | None, stats: ColumnStats) -> np.ndarray:
    """Bias that cancels the mean output shift of quantised weights and input: b - (Wq E[x_q] - W E[x])."""
    g = stats.total.shape[0]
    rows = w2.shape[0] // g
    shift = np.concatenate([
        w2q[i * rows : (i + 1) * rows] @ stats.mean_q[i] - w2[i * rows : (i + 1) * rows] @ stats.mean[i] for i in range(g)
    ])
    base = np.zeros(w2.shape[0]) if bias is None else bias.astype(np.float64)
    return (base - shift).astype(np.float32)


def adaround(w2: np.ndarray, scales: np.ndarray, gram: np.ndarray, iters: int = 500,
             reg: float = 0.1, lr: float = 0.05) -> tuple[np.ndarray, float, float]:
    """Choose up/down rounding per weight to minimise the layer's output error (AdaRound).

    Returns the int8 matrix and the output error of nearest rounding and of
    the result; the result is never worse than nearest rounding on the
    calibration data (it falls back to it).
    """
    s = scales.astype(np.float64)[:, None]
    w = w2.astype(np.float64)
    nearest = np.clip(np.round(w / s), -QMAX, QMAX)
    err_nearest = output_error(nearest * s - w, gram)
    if err_nearest == 0.0:
        return nearest.astype(np.int8), 0.0, 0.0
    floor = np.floor(w / s)
    rest = np.clip(w / s - floor, 0.01, 0.99)
    v = -np.log((_ZETA - _GAMMA) / (rest - _GAMMA) - 1)  # h(v) == rest at the start
    m = np.zeros_like(v)
    u = np.zeros_like(v)
    g = gram.shape[0]
    warmup = iters // 5
    for t in range(1, iters + 1):
        sig = 1 / (1 + np.exp(-v))
        h_raw = sig * (_ZETA - _GAMMA) + _GAMMA
        h = np.clip(h_raw, 0, 1)
        dw = (np.clip(floor + h, -QMAX, QMAX)) * s - w
        grad_w = 2 * np.einsum("gok,gkl->gol", dw.reshape(g, -1, dw.shape[1]), gram).reshape(dw.shape) / err_nearest
        grad_h = grad_w * s
        if t > warmup:  # the regulariser pushes h to 0 or 1, its exponent annealed from 20 to 2
            beta = 20 - (18 * (t - warmup) / max(iters - warmup, 1))
            a = np.abs(2 * h - 1)
            grad_h = grad_h + reg * (-beta * np.power(a, beta - 1) * np.sign(2 * h - 1) * 2) / h.size * w.shape[0]
        grad_v = grad_h * ((h_raw > 0) & (h_raw < 1)) * sig * (1 - sig) * (_ZETA - _GAMMA)
        m = 0.9 * m + 0.1 * grad_v
        u = 0.999 * u + 0.001 * grad_v**2
        v -= lr * (m / (1 - 0.9**t)) / (np.sqrt(u / (1 - 0.999**t)) + 1e-8)
    hard = np.clip(floor + (v >= 0), -QMAX, QMAX)  # h(v) >= 0.5 exactly when v >= 0
    err = output_error(hard * s - w, gram)
    if err >= err_nearest:
        return nearest.astype(np.int8), err_nearest, err_nearest
    return hard.astype(np.int8), err_nearest, err
