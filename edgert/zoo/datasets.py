"""The zoo's data: scikit-learn's bundled digits and a seeded keyword-spotting-like signal.

Everything is generated or loaded locally (no downloads), with fixed splits:
``train`` for the training scripts in tools/, ``calib`` for compression
passes, ``val`` for accuracy. The three never overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

SPLITS = ("train", "calib", "val")
_FRACTIONS = (0.6, 0.15, 0.25)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 samples along axis 0
    y: np.ndarray  # int64 class labels


def _split(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Split]:
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(_FRACTIONS[0] * len(x)))
    n_calib = int(round(_FRACTIONS[1] * len(x)))
    parts = np.split(order, [n_train, n_train + n_calib])
    return {name: Split(x[idx], y[idx]) for name, idx in zip(SPLITS, parts, strict=True)}


@cache
def digits(size: int = 8) -> dict[str, Split]:
    """8x8 handwritten digits (1797 samples, 10 classes) as (N, 1, size, size) in [0, 1].

    ``size`` a multiple of 8 upsamples by pixel repetition (the same digits at a
    resolution where strided convolutions and patching make sense).
    """
    from edgert.model import require

    datasets = require("sklearn.datasets", "zoo")
    d = datasets.load_digits()
    if size % 8:
        raise ValueError(f"digits size must be a multiple of 8, got {size}")
    images = (d.images / 16.0).astype(np.float32)
    factor = size // 8
    images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    return _split(images[:, None], d.target.astype(np.int64), seed=0)


KWS_CHANNELS, KWS_LENGTH, KWS_CLASSES, KWS_PATTERN = 8, 64, 6, 12


@cache
def kws(n: int = 3000, seed: int = 1234) -> dict[str, Split]:
    """Keyword-spotting-like streams: (N, 8 channels, 64 steps); class k embeds pattern k in noise.

    Each class has a fixed smooth multichannel pattern of 12 steps; a sample is
    coloured noise with one pattern (random amplitude and position) added.
    Class 0 is "no keyword" (noise only), as in real keyword spotting.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(KWS_PATTERN)
    patterns = np.zeros((KWS_CLASSES, KWS_CHANNELS, KWS_PATTERN))
    for k in range(1, KWS_CLASSES):
        freq = rng.uniform(0.1, 0.45, KWS_CHANNELS)[:, None]
        phase = rng.uniform(0, 2 * np.pi, KWS_CHANNELS)[:, None]
        gain = rng.uniform(0.2, 1.0, KWS_CHANNELS)[:, None]
        patterns[k] = gain * np.sin(2 * np.pi * freq * t + phase) * np.hanning(KWS_PATTERN)
    y = rng.integers(0, KWS_CLASSES, n)
    white = rng.standard_normal((n, KWS_CHANNELS, KWS_LENGTH + 2))
    x = 0.5 * white[:, :, 2:] + 0.3 * white[:, :, 1:-1] + 0.2 * white[:, :, :-2]  # coloured noise
    starts = rng.integers(0, KWS_LENGTH - KWS_PATTERN + 1, n)
    amps = rng.uniform(1.0, 2.0, n)
    for i in range(n):
        x[i, :, starts[i] : starts[i] + KWS_PATTERN] += amps[i] * patterns[y[i]]
    return _split(x.astype(np.float32), y.astype(np.int64), seed=seed + 1)
