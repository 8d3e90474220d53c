"""Turn user input files (.npy, images) into arrays that match a bundle's inputs."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import InputError
from edgert.model import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def sanitize(name: str) -> str:
    """File-name form of a tensor name (same rule as the C++ runner)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def parse_input_args(args: list[str] | tuple[str, ...], specs: list[TensorSpec]) -> dict[str, Path]:
    """``NAME=FILE`` pairs (or one bare ``FILE`` for a single-input model)."""
    names = [s.name for s in specs]
    out: dict[str, Path] = {}
    for arg in args:
        name, sep, file = arg.partition("=")
        if not sep or name not in names and Path(arg).exists():
            if len(names) != 1:
                raise InputError(f"--input {arg}: name the input, one of {', '.join(names)} (NAME=FILE)")
            name, file = names[0], arg
        if name not in names:
            raise InputError(f"--input names unknown input '{name}'; the model's inputs are {', '.join(names)}")
        out[name] = Path(file)
    return out


def load_input(path: Path, spec: TensorSpec, image: dict[str, Any] | None) -> np.ndarray:
    """Read one input file and check it against ``spec``."""
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if image is None:
            raise InputError(
                f"input '{spec.name}' ({'x'.join(map(str, spec.shape))} {spec.dtype}) is not an image input; give a .npy file"
            )
        return _load_image(path, spec, image)
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as .npy: {exc}; save it with numpy.save") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path} holds several arrays; give one .npy per input")
    return conform(arr, spec, str(path))


def conform(arr: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    """Check shape, cast dtype where no information is lost in kind (float64 → float32)."""
    want = np.dtype(spec.dtype)
    if tuple(arr.shape) != tuple(spec.shape):
        raise InputError(
            f"input '{spec.name}' from {what} has shape {'x'.join(map(str, arr.shape)) or 'scalar'}, "
            f"the model expects {'x'.join(map(str, spec.shape))}"
        )
    if arr.dtype != want:
        if not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise InputError(f"input '{spec.name}' from {what} is {arr.dtype}, the model expects {want}")
        arr = arr.astype(want)
    return np.ascontiguousarray(arr)


def _load_image(path: Path, spec: TensorSpec, image: dict[str, Any]) -> np.ndarray:
    from edgert.model import require

    pil = require("PIL.Image", "image")
    try:
        with pil.open(path) as im:
            im = im.convert(image["color"]).resize(tuple(reversed(image["size"])), pil.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = (arr * image["scale"] - np.asarray(image["mean"], np.float32)) / np.asarray(image["std"], np.float32)
    if image["layout"] == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return conform(arr[None].astype(spec.dtype), spec, str(path))
