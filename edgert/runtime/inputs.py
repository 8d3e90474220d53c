"""Turn user input files (.npy, images) into arrays that match a bundle's inputs."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import InputError, first_line
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
    return conform(read_npy(path, spec), spec, str(path))


# What a damaged .npy header makes NumPy's reader raise (it evaluates the header as a Python literal).
_HEADER_ERRORS = (ValueError, SyntaxError, TypeError, RecursionError, UnicodeDecodeError, EOFError, MemoryError,
                  tokenize.TokenError)


def npy_header(f, size: int, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header at ``f`` (a file or zip member of ``size`` bytes), checked
    before any data is read: no pickled objects, and exactly the data bytes the header promises."""
    fix = "save it with numpy.save(FILE, array)"
    head = f.read(6)
    if head[:4] == b"PK\x03\x04":
        raise InputError(f"{where} is an .npz archive; give one .npy file per input ({fix})")
    if head != b"\x93NUMPY":
        raise InputError(f"{where} is not a .npy file (no NumPy header); {fix}")
    try:
        version = bytes(f.read(2))
        read = np.lib.format.read_array_header_1_0 if version == b"\x01\x00" else np.lib.format.read_array_header_2_0
        if version not in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
            raise ValueError(f"unknown format version {tuple(version)}")
        shape, _, dtype = read(f)
    except _HEADER_ERRORS as exc:
        raise InputError(f"{where} has a damaged .npy header ({first_line(exc)}); {fix}") from None
    if dtype.hasobject:
        raise InputError(f"{where} holds Python objects (a pickled array), which edgert never loads; save a numeric "
                         f"array ({fix})")
    count = 1
    for d in shape:
        count *= int(d)
    held = size - f.tell()
    if held != count * dtype.itemsize:
        raise InputError(f"{where} holds {held} data bytes but its header promises {count * dtype.itemsize} "
                         f"({'x'.join(map(str, shape))} {dtype}); the file is truncated or damaged: {fix}")
    return tuple(int(d) for d in shape), dtype


def read_npy(path: Path, spec: TensorSpec | None) -> np.ndarray:
    """One array from a .npy file, its header checked against ``spec`` (None: any shape) and the file size
    before the data is read.

    Never unpickles (object arrays are refused) and never allocates more than the file holds."""
    try:
        with open(path, "rb") as f:
            shape, _ = npy_header(f, path.stat().st_size, str(path))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}; check the path and its permissions") from None
    if spec is not None and (len(shape) != len(spec.shape)
                             or any(w >= 0 and g != w for g, w in zip(shape, spec.shape, strict=False))):
        raise InputError(f"input '{spec.name}' from {path} has shape {'x'.join(map(str, shape)) or 'scalar'}, "
                         f"the model expects {'x'.join(map(str, spec.shape))}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as .npy: {first_line(exc)}; save it with numpy.save(FILE, array)") from None


def conform(arr: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    """Check shape, cast dtype where no information is lost in kind (float64 → float32), refuse NaN/Inf.

    Non-finite values are refused rather than warned about: outputs computed from them are
    meaningless, and a warning scrolls past in a batch of runs."""
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
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"input '{spec.name}' from {what} has {int(np.isnan(arr).sum())} NaN and {int(np.isinf(arr).sum())} "
                f"infinite value(s) (first at index {first}); edgert refuses non-finite inputs: replace them, "
                "e.g. with numpy.nan_to_num"
            )
    return np.ascontiguousarray(arr)


def _load_image(path: Path, spec: TensorSpec, image: dict[str, Any]) -> np.ndarray:
    from edgert.model import require

    pil = require("PIL.Image", "image")
    try:
        # From memory: a damaged chunk length then reads what the file holds instead of allocating
        # what the header claims (a buffered file read allocates the requested size first).
        with pil.open(io.BytesIO(path.read_bytes())) as im:
            im = im.convert(image["color"]).resize(tuple(reversed(image["size"])), pil.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except pil.DecompressionBombError as exc:  # not an OSError: a header claiming billions of pixels
        raise InputError(f"image {path} is too large to decode safely ({first_line(exc)}); resize it first") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {first_line(exc)}; give a PNG, JPEG or BMP file that opens in "
                         "an image viewer") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = (arr * image["scale"] - np.asarray(image["mean"], np.float32)) / np.asarray(image["std"], np.float32)
    if image["layout"] == "NCHW":
        arr = arr.transpose(2, 0, 1)
    return conform(arr[None].astype(spec.dtype), spec, str(path))
