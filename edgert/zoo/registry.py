"""Zoo models as data: models_zoo/<name>/{model.onnx, meta.json, card.md}."""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgert.errors import EdgertError
from edgert.model import TensorSpec


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    dataset: str
    dataset_args: dict[str, Any]
    input: TensorSpec
    output: str
    classes: int
    float_accuracy: float
    params: int
    macs: int
    dir: Path

    @property
    def onnx_path(self) -> Path:
        return self.dir / "model.onnx"

    @property
    def card_path(self) -> Path:
        return self.dir / "card.md"


def zoo_dir() -> Path:
    """The installed zoo (package data), or models_zoo/ of a source checkout."""
    try:
        installed = Path(str(resources.files("edgert.models_zoo")))
        if any(installed.glob("*/meta.json")):
            return installed
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "models_zoo"


def list_models() -> list[ZooModel]:
    return [_read(p.parent) for p in sorted(zoo_dir().glob("*/meta.json"))]


def get(name: str) -> ZooModel:
    path = zoo_dir() / name / "meta.json"
    if not path.is_file():
        names = ", ".join(m.name for m in list_models()) or "none installed"
        raise EdgertError(f"unknown zoo model '{name}'; the zoo has: {names}")
    return _read(path.parent)


def _read(folder: Path) -> ZooModel:
    meta = json.loads((folder / "meta.json").read_text())
    return ZooModel(
        name=meta["name"],
        task=meta["task"],
        dataset=meta["dataset"],
        dataset_args=meta.get("dataset_args", {}),
        input=TensorSpec.from_json(meta["input"]),
        output=meta["output"],
        classes=int(meta["classes"]),
        float_accuracy=float(meta["float_accuracy"]),
        params=int(meta["params"]),
        macs=int(meta["macs"]),
        dir=folder,
    )
