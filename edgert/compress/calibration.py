"""Calibration data and streaming activation statistics for post-training quantisation.

A ``Calibration`` yields model feeds one sample at a time (from an ``.npz``, a
folder of images, a zoo model's calibration split or in-memory arrays);
``collect`` runs the float model in onnxruntime with the wanted intermediate
tensors exposed as outputs and folds every sample into a ``TensorStats``: a
running min/max and a fixed-size histogram of |x|. Memory depends on the
number of tensors and bins, never on the number of samples. ``amax`` turns a
histogram into a symmetric clipping range with min-max, percentile, entropy
(TensorRT's KL search) or MSE.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import CalibrationError

METHODS = ("minmax", "percentile", "entropy", "mse")
NUM_BINS = 2048
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class Calibration:
    """Re-iterable calibration samples: ``iter(calib)`` gives ``{input_name: array}`` feeds."""

    make: Callable[[], Iterator[dict[str, np.ndarray]]]
    size: int
    source: str
    zoo: str | None = None  # the zoo model whose calibration split this is (labels available)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self.make()

    def take(self, n: int | None) -> Calibration:
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= self.size:
            return self
        import itertools

        return Calibration(lambda: itertools.islice(self.make(), n), n, self.source, self.zoo)


def load_calibration(data: Any, model) -> Calibration:
    """Calibration samples for ``model`` from an ``.npz`` path, an image folder, a zoo name, a dict or a Calibration."""
    if isinstance(data, Calibration):
        return data
    if isinstance(data, dict):
        return _from_arrays(data, model, "arrays")
    text = str(data)
    path = Path(text)
    if path.is_dir():
        return _from_images(path, model)
    if path.suffix.lower() == ".npz":
        if not path.is_file():
            raise CalibrationError(f"calibration file not found: {path}")
        arrays = _read_npz(path)
        return _from_arrays(arrays, model, str(path))
    from edgert.zoo import registry

    if (registry.zoo_dir() / text / "meta.json").is_file():
        from edgert.zoo import calibration_data

        calib = _from_arrays(calibration_data(text), model, f"zoo:{text}")
        calib.zoo = text
        return calib
    raise CalibrationError(
        f"--calib '{text}' is not an .npz file, an image folder or a zoo model name "
        "(see 'edgert zoo list'); give one array per model input with samples along axis 0"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each member's header checked first (a damaged one must not allocate what it claims)."""
    import zipfile

    from edgert.errors import InputError
    from edgert.runtime.inputs import npy_header

    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    npy_header(f, info.file_size, f"{path}:{info.filename}")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except InputError as exc:
        raise CalibrationError(f"calibration data {exc}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CalibrationError(f"cannot read {path} as .npz ({exc}); save it with numpy.savez") from None


def _from_arrays(arrays: dict[str, np.ndarray], model, source: str) -> Calibration:
    specs = model.inputs
    if len(arrays) == 1 and len(specs) == 1 and specs[0].name not in arrays:
        arrays = {specs[0].name: next(iter(arrays.values()))}  # one input: the array's name does not matter
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise CalibrationError(
            f"calibration data {source} has no array for input(s) {', '.join(missing)}; "
            f"it has {', '.join(arrays) or 'none'} (one array per model input, samples along axis 0)"
        )
    counts = {len(arrays[s.name]) for s in specs}
    if len(counts) != 1 or 0 in counts:
        raise CalibrationError(f"calibration arrays in {source} must hold the same non-zero number of samples")
    n = counts.pop()
    per_sample = {}
    for s in specs:
        a = np.asarray(arrays[s.name])
        size = int(np.prod(s.shape))
        if a[0].size != size:
            raise CalibrationError(
                f"calibration array '{s.name}' in {source} has samples of shape {'x'.join(map(str, a.shape[1:]))}, "
                f"the model input is {'x'.join(map(str, s.shape))}"
            )
        per_sample[s.name] = a

    def make():
        for i in range(n):
            yield {s.name: per_sample[s.name][i].reshape(s.shape).astype(s.dtype) for s in specs}

    return Calibration(make, n, source)


def _from_images(folder: Path, model) -> Calibration:
    from edgert.compiler.build import ImageConfig
    from edgert.runtime.inputs import load_input

    if len(model.inputs) != 1:
        raise CalibrationError("an image folder calibrates single-input models only; give an .npz with one array per input")
    spec = model.inputs[0]
    image = ImageConfig().for_input(spec)
    if image is None:
        raise CalibrationError(
            f"input '{spec.name}' ({'x'.join(map(str, spec.shape))}) is not an image input; give an .npz instead"
        )
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{folder} holds no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")

    def make():
        for f in files:
            yield {spec.name: load_input(f, spec, image)}

    return Calibration(make, len(files), str(folder))


class TensorStats:
    """Streaming statistics of one tensor: min, max and a histogram of |x| with a fixed number of bins.

    The histogram covers [0, width * bins); when a sample exceeds it, the range
    doubles and pairs of bins merge (bin edges stay aligned, so nothing is
    re-estimated). The memory is ``bins`` counters, whatever the sample count.
    """

    def __init__(self, bins: int = NUM_BINS):
        self.counts = np.zeros(bins, np.int64)
        self.width = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.samples = 0

    @property
    def amax(self) -> float:
        return float(max(abs(self.min), abs(self.max))) if self.samples else 0.0

    def nbytes(self) -> int:
        return self.counts.nbytes + 4 * 8

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).ravel()
        if x.size == 0:
            return
        self.samples += 1
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        a = np.abs(x)
        top = float(a.max())
        bins = len(self.counts)
        if self.width == 0.0:
            if top == 0.0:
                self.counts[0] += a.size
                return
            self.width = top * 1.0001 / bins  # a little headroom so the max falls inside
        while top >= self.width * bins:
            merged = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts[: bins // 2] = merged
            self.counts[bins // 2 :] = 0
            self.width *= 2
        idx = np.minimum((a / self.width).astype(np.int64), bins - 1)
        self.counts += np.bincount(idx, minlength=bins)


def amax(stats: TensorStats, method: str = "minmax", percentile: float = 99.99, levels: int = 127) -> float:
    """The clipping threshold for symmetric quantisation with ``levels`` positive steps."""
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}'; use one of {', '.join(METHODS)}")
    if stats.samples == 0 or stats.width == 0.0 or method == "minmax":
        return stats.amax
    counts = stats.counts.astype(np.float64)
    edges = np.arange(len(counts) + 1) * stats.width
    if method == "percentile":
        cdf = np.cumsum(counts) / counts.sum()
        i = int(np.searchsorted(cdf, percentile / 100.0))
        lo = cdf[i - 1] if i > 0 else 0.0
        frac = (percentile / 100.0 - lo) / max(cdf[i] - lo, 1e-12)
        return float(min(edges[i] + frac * stats.width, stats.amax))
    if method == "entropy":
        return float(min(_entropy_threshold(counts, levels + 1) * stats.width, stats.amax))
    return float(min(_mse_threshold(counts, edges, levels), stats.amax))


def _entropy_threshold(counts: np.ndarray, levels: int, stride: int = 8) -> int:
    """TensorRT's search: the bin count i whose clipped, re-quantised distribution is closest (KL) to the original."""
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels or np.count_nonzero(counts) <= levels:
        return last  # few distinct values (an image of 17 grey levels): int8 holds them all, nothing to clip
    counts = counts.copy()
    counts[0] = counts[1]  # as NVIDIA's calibrator: the spike of exact zeros (after ReLU) would dominate the KL
    best, best_kl = last, np.inf
    total = counts.sum()
    for i in list(range(levels, last, stride)) + [last]:
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()  # outliers are clipped into the last bin
        # Q: merge the unclipped bins into `levels` chunks, spread each evenly over its
        # non-empty bins; the clipped mass is in P only, so clipping too much costs KL.
        chunk = (np.arange(i) * levels) // i
        nz = p > 0
        sums = np.bincount(chunk, weights=counts[:i], minlength=levels)
        filled = np.bincount(chunk, weights=nz, minlength=levels)
        q = np.where(nz, sums[chunk] / np.maximum(filled[chunk], 1), 0.0)
        p /= total
        q /= q.sum()
        if np.any(q[nz] == 0):
            continue  # P has mass where Q has none: infinite divergence
        kl = float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _mse_threshold(counts: np.ndarray, edges: np.ndarray, levels: int, candidates: int = 128) -> float:
    """The threshold minimising the expected squared quantisation error over the histogram (bin centres)."""
    centres = (edges[:-1] + edges[1:]) / 2
    nz = counts > 0
    c, w = centres[nz], counts[nz]
    top = edges[np.nonzero(counts)[0][-1] + 1]
    best, best_err = top, np.inf
    for t in np.linspace(top / candidates, top, candidates):
        step = t / levels
        q = np.minimum(np.round(c / step), levels) * step
        err = float(np.sum(w * (c - q) ** 2))
        if err < best_err:
            best, best_err = t, err
    return float(best)


def intermediate_session(proto, tensors: list[str]):
    """An onnxruntime ``feeds -> {tensor: array}`` callable exposing ``tensors`` (intermediates included)."""
    import onnx
    from onnx import helper

    from edgert.model import require

    ort = require("onnxruntime", "reference")
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    existing = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in existing:
            m.graph.output.append(helper.make_empty_tensor_value_info(t))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
        from edgert.errors import first_line

        raise CalibrationError(f"onnxruntime cannot load the model for calibration: {first_line(exc)}") from None
    names = list(tensors)
    state = ort.capi.onnxruntime_pybind11_state
    # onnxruntime's run errors derive from Exception only; these are the ones a model that loads can raise.
    run_errors = tuple(getattr(state, n) for n in ("Fail", "InvalidArgument", "RuntimeException", "NotImplemented",
                                                   "InvalidGraph", "EPFail") if hasattr(state, n))

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not names:
            return {}  # onnxruntime reads an empty list as "every output"
        try:
            out = dict(zip(names, sess.run(names, feeds), strict=True))
        except run_errors as exc:
            from edgert.errors import first_line

            raise CalibrationError(f"onnxruntime cannot run the model on the calibration data: {first_line(exc)}; "
                                   "check the model with onnx.checker and its input shapes") from None
        for name, value in out.items():
            # Statistics, Cholesky and SVD of NaN/Inf fail deep inside NumPy: say where they come from.
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CalibrationError(
                    f"the model computes NaN or infinite values in '{name}' on the calibration data; check the "
                    "model's weights and attributes (e.g. a BatchNormalization epsilon <= 0) and the data's range"
                )
        return out

    return run


def collect(proto, calib: Calibration, tensors: list[str], bins: int = NUM_BINS) -> dict[str, TensorStats]:
    """Stream ``calib`` through the float model; statistics of each named tensor."""
    run = intermediate_session(proto, tensors)
    stats = {t: TensorStats(bins) for t in tensors}
    for feeds in calib:
        for name, value in run(feeds).items():
            stats[name].update(value)
    if not any(s.samples for s in stats.values()):
        raise CalibrationError(f"calibration data {calib.source} gave no samples; give at least one")
    return stats
