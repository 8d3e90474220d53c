"""`edgert zoo export`: a zoo model with its calibration data, as plain files."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np

from edgert.errors import EdgertError
from edgert.fsutil import atomic_dir
from edgert.zoo.harness import calibration_data
from edgert.zoo.registry import get


def export(name: str, output: Path) -> Path:
    """Write model.onnx, calibration.npz (one array per input, samples on axis 0), card.md, meta.json."""
    model = get(name)
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise EdgertError(f"{output} exists and is not empty; choose a new folder for the export")
    with atomic_dir(output) as tmp:
        for part in ("model.onnx", "card.md", "meta.json"):
            shutil.copy2(model.dir / part, tmp / part)
        buf = io.BytesIO()
        np.savez(buf, **calibration_data(name))
        (tmp / "calibration.npz").write_bytes(buf.getvalue())
    return output
