"""``edgert run MODEL.onnx --backend host``: inputs from files (or seeded random), outputs, optional onnxruntime check."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgert.errors import CheckFailedError, InputError
from edgert.model import TensorSpec

# The check's tolerance: max |host - onnxruntime| <= CHECK_RTOL * max |onnxruntime| (+ CHECK_ATOL).
CHECK_RTOL, CHECK_ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class HostRunConfig:
    model: Path
    inputs: dict[str, Path] = field(default_factory=dict)  # NAME -> .npy; the rest are seeded random
    check: bool = False
    threads: int | None = None


@dataclass
class OutputCheck:
    name: str
    max_abs_err: float
    max_abs_ref: float

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= CHECK_RTOL * self.max_abs_ref + CHECK_ATOL


@dataclass
class HostRunResult:
    outputs: dict[str, np.ndarray]
    run_ms: float
    load_ms: float
    random_inputs: list[str]
    checks: list[OutputCheck] = field(default_factory=list)


def input_specs(executor) -> list[TensorSpec]:
    """The model's inputs; a dynamic dimension is reported as -1."""
    from edgert.model import _ONNX_DTYPES

    specs = []
    for name in executor.input_names:
        tt = executor.input_types[name]
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        specs.append(TensorSpec(name, shape, _ONNX_DTYPES.get(tt.elem_type, "float32")))
    return specs


def run_host(config: HostRunConfig) -> HostRunResult:
    from edgert.host.executor import HostExecutor

    t0 = time.perf_counter()
    ex = HostExecutor(config.model, threads=config.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    feeds, random = {}, []
    rng = np.random.default_rng(0)
    for spec in input_specs(ex):
        if spec.name in config.inputs:
            arr = _load_npy(config.inputs[spec.name], spec)
        else:
            if any(d < 0 for d in spec.shape):
                raise InputError(f"input '{spec.name}' has a dynamic shape {spec.shape}; give it with --input {spec.name}=FILE.npy")
            dt = np.dtype(spec.dtype)
            arr = rng.standard_normal(spec.shape).astype(dt) if dt.kind == "f" else rng.integers(0, 16, spec.shape).astype(dt)
            random.append(spec.name)
        feeds[spec.name] = arr
    t0 = time.perf_counter()
    outputs = ex.run(feeds)
    run_ms = (time.perf_counter() - t0) * 1e3
    result = HostRunResult(outputs, run_ms, load_ms, random)
    if config.check:
        from edgert.model import require

        ort = require("onnxruntime", "reference")
        sess = ort.InferenceSession(str(config.model), providers=["CPUExecutionProvider"])
        refs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
        for name, ref in refs.items():
            got = outputs[name].astype(np.float64)
            result.checks.append(OutputCheck(name, float(np.abs(got - ref).max()) if ref.size else 0.0,
                                             float(np.abs(ref).max()) if ref.size else 0.0))
        bad = [c for c in result.checks if not c.ok]
        if bad:
            c = bad[0]
            raise CheckFailedError(
                f"host executor output '{c.name}' differs from onnxruntime: max|err| {c.max_abs_err:.3g} vs max|ref| "
                f"{c.max_abs_ref:.3g} (tolerance {CHECK_RTOL:g} of it); report the model, or run a compiled bundle instead")
    return result


def _load_npy(path: Path, spec: TensorSpec) -> np.ndarray:
    from edgert.runtime.inputs import conform, read_npy

    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    arr = read_npy(path, spec)
    if any(d < 0 for d in spec.shape):
        spec = TensorSpec(spec.name, tuple(arr.shape), spec.dtype) if len(arr.shape) == len(spec.shape) else spec
    return conform(arr, spec, str(path))
