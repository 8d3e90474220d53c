"""Accuracy of any variant of a zoo model: ONNX (onnxruntime) or a compiled bundle on a device."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from edgert.errors import EdgertError
from edgert.zoo import datasets
from edgert.zoo.registry import ZooModel, get


@dataclass(frozen=True)
class Evaluation:
    name: str
    accuracy: float  # fraction of validation samples classified correctly
    agreement: float  # fraction whose prediction equals the float model's
    samples: int
    backend: str


def _split(model: ZooModel, split: str) -> datasets.Split:
    return getattr(datasets, model.dataset)(**model.dataset_args)[split]


def validation_data(name: str) -> datasets.Split:
    return _split(get(name), "val")


def calibration_data(name: str, n: int | None = None) -> dict[str, np.ndarray]:
    """``{input_name: samples}`` from the calibration split (never used for validation).

    Samples lie along axis 0; each ``x[i:i+1]`` is one model input.
    """
    model = get(name)
    x = _split(model, "calib").x
    return {model.input.name: x[:n] if n else x}


def evaluate(name: str, model_or_bundle, device: str | None = None, limit: int | None = None) -> Evaluation:
    """Accuracy on the validation split of zoo model ``name`` for an ONNX model or a bundle.

    ``model_or_bundle`` is an .onnx path, an ``edgert.Model``, a ``Bundle`` or a
    bundle path. Bundles run in this process when ``device`` is None, else on
    that device (``local``/``qemu``) through their native runner, one sample
    per run (use ``limit`` for slow devices). ``limit`` takes the first N
    validation samples.
    """
    zoo = get(name)
    val = _split(zoo, "val")
    n = min(limit or len(val.y), len(val.y))
    predict, backend = _predictor(zoo, model_or_bundle, device)
    preds = np.array([predict(val.x[i : i + 1]) for i in range(n)])
    reference = _float_predictions(name)[:n]
    return Evaluation(name, float(np.mean(preds == val.y[:n])), float(np.mean(preds == reference)), n, backend)


@cache
def _float_predictions(name: str) -> np.ndarray:
    zoo = get(name)
    predict, _ = _predictor(zoo, zoo.onnx_path, None)
    val = _split(zoo, "val")
    return np.array([predict(val.x[i : i + 1]) for i in range(len(val.y))])


def _predictor(zoo: ZooModel, subject, device: str | None):
    from edgert.bundle import Bundle
    from edgert.model import Model, load

    if isinstance(subject, (str, Path)):
        path = Path(subject)
        subject = load(path) if path.suffix in (".onnx", ".tflite") else Bundle.open(path)
    if isinstance(subject, Model):
        return _onnx_predictor(zoo, subject), subject.format
    if isinstance(subject, Bundle):
        return _bundle_predictor(zoo, subject, device)
    raise EdgertError(f"cannot evaluate a {type(subject).__name__}; give an .onnx file, a Model or a bundle")


def _onnx_predictor(zoo: ZooModel, model):
    from edgert import reference

    session = reference.session(model)
    name = model.inputs[0].name
    return lambda x: int(np.argmax(session(_as_input(x, zoo, name))[0]))


def _bundle_predictor(zoo: ZooModel, bundle, device: str | None):
    name = bundle.inputs[0].name
    if device is None:
        return (lambda x: int(np.argmax(next(iter(bundle.run(_as_input(x, zoo, name)).values()))))), "bundle (in-process)"
    from edgert.device import open_device
    from edgert.runtime.session import run_on_device

    dev = open_device(device)

    def predict(x):
        outputs = run_on_device(bundle, dev, _as_input(x, zoo, name)).outputs
        return int(np.argmax(next(iter(outputs.values()))))

    return predict, f"bundle on {dev.name}"


def _as_input(x: np.ndarray, zoo: ZooModel, name: str) -> dict[str, np.ndarray]:
    return {name: x.reshape(zoo.input.shape).astype(zoo.input.dtype)}
