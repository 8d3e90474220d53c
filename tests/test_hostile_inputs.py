"""Hostile input files (issue 11, item 1): .npy and image inputs are read or refused with an InputError.

Directed cases call edgert.runtime.inputs in-process (nothing here can allocate more than the
file holds: the header is checked first); the bounded Hypothesis run goes through
tools/fuzz_models.py's capped worker, including 'edgert run BUNDLE --input' on a compiled bundle,
and prints its counts (``pytest -s``). NaN/Inf inputs are refused, not warned about.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from edgert.errors import InputError
from edgert.model import TensorSpec
from edgert.runtime.inputs import conform, load_input

SPEC = TensorSpec("input", (1, 3, 8, 8), "float32")
IMAGE = {"layout": "NCHW", "color": "RGB", "size": [8, 8], "scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3}


def _npy(arr, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


GOOD = np.random.default_rng(0).random(SPEC.shape, dtype=np.float32)


def _refused(tmp_path: Path, name: str, data: bytes, match: str, image=None) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=match):
        load_input(path, SPEC, image)


def test_good_npy_and_lossless_casts(tmp_path):
    for arr in (GOOD, GOOD.astype(np.float64), GOOD.astype(">f4"), np.asfortranarray(GOOD)):
        path = tmp_path / "x.npy"
        path.write_bytes(_npy(arr))
        got = load_input(path, SPEC, None)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, GOOD, rtol=1e-6)


@pytest.mark.parametrize("value,count", [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")])
def test_nan_and_inf_are_refused_with_where(tmp_path, value, count):
    arr = GOOD.copy()
    arr[0, 2, 3, 4] = value
    _refused(tmp_path, "x.npy", _npy(arr), rf"{count} value\(s\) \(first at index \(0, 2, 3, 4\)\)")
    with pytest.raises(InputError, match="non-finite"):
        conform(arr, SPEC, "the given array")  # the in-process API (Bundle.run) too


@pytest.mark.parametrize("dtype", ["complex64", "<U3", "f4,i4", "datetime64[s]"])
def test_wrong_dtype(tmp_path, dtype):
    arr = np.zeros(SPEC.shape, dtype=dtype)
    _refused(tmp_path, "x.npy", _npy(arr), "the model expects float32")


@pytest.mark.parametrize("shape", [(1, 3, 8), (3, 8, 8, 1), (), (0, 3, 8, 8)])
def test_wrong_shape_refused_from_the_header(tmp_path, shape):
    _refused(tmp_path, "x.npy", _npy(np.zeros(shape, np.float32)), "the model expects 1x3x8x8")


def test_pickled_object_array_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):  # unpickling would call this: the test would fail loudly
            return (pytest.fail, ("unpickled",))

    _refused(tmp_path, "x.npy", _npy(np.array([Boom()], dtype=object), allow_pickle=True), "Python objects")


def test_header_promising_2_40_elements_allocates_nothing(tmp_path):
    data = _npy(GOOD).replace(b"(1, 3, 8, 8)", f"({1 << 40}, 3, 8, 8)".encode())
    _refused(tmp_path, "x.npy", data, r"header promises 844424930131968 \(1099511627776x3x8x8 float32\)")
    # Right shape, truncated data: the size check fires before np.load reads.
    _refused(tmp_path, "y.npy", _npy(GOOD)[:-100], "truncated or damaged")


@pytest.mark.parametrize("data,match", [
    (b"", "not a .npy file"),
    (b"1 2 3\n", "not a .npy file"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': <f4'" + b" " * 64, "damaged .npy header"),
    (b"\x93NUMPY\x09\x00" + b"\0" * 32, "damaged .npy header"),
])
def test_corrupt_npy(tmp_path, data, match):
    _refused(tmp_path, "x.npy", data, match)


def test_npz_instead_of_npy(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, input=GOOD)
    _refused(tmp_path, "x.npy", buf.getvalue(), "an .npz archive")


def _png(size=(8, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_images(fz, tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(_png((31, 17)))
    assert load_input(path, SPEC, IMAGE).shape == SPEC.shape
    _refused(tmp_path, "cut.png", _png()[:40], "cannot read image", IMAGE)
    _refused(tmp_path, "text.jpg", b"#!/bin/sh\necho hi\n", "cannot read image", IMAGE)
    _refused(tmp_path, "empty.bmp", b"", "cannot read image", IMAGE)
    _refused(tmp_path, "bomb.png", fz._png_header(1 << 16, 1 << 16), "too large to decode safely", IMAGE)
    _refused(tmp_path, "ok2.png", _png(), "not an image input; give a .npy file", None)


@pytest.fixture(scope="module")
def fz(tool):
    return tool("fuzz_models")


def test_fuzz_inputs(fz, tmp_path, tiny_bundle):
    """Mutated .npy and image files through load_input and 'edgert run BUNDLE --input' (output dir unchanged on refusal)."""
    with fz.Fuzzer(tmp_path / "failures", check_timeout=120, bundle=tiny_bundle("host")) as fuzzer:
        fz.fuzz(fuzzer, fz.input_cases(), examples=150, seconds=40, seed=11)
        print(f"\n{fuzzer.table()}")
        assert fuzzer.tried >= 20
        assert not fuzzer.failures, fuzzer.table()
        assert fuzzer.counts["cli_bundle"]["ok"] > 0 and fuzzer.counts["cli_bundle"]["exit 2"] > 0
        assert fuzzer.max_rss_kb < fuzzer.mem_mb * 1024


def test_calibration_npz_member_promising_2_40_elements(data_dir, tmp_path):
    """--calib reads .npz members the same way: the header is checked before anything is allocated."""
    import zipfile

    from edgert.compress.calibration import load_calibration
    from edgert.errors import CalibrationError
    from edgert.model import load

    model = load(data_dir / "convnet_tiny.onnx")
    good = _npy(np.zeros((2, 3, 32, 32), np.float32))
    for name, member in (("huge", good.replace(b"(2, 3, 32, 32)", f"({1 << 40}, 3, 32, 32)".encode())),
                         ("pickled", _npy(np.array([None], dtype=object), allow_pickle=True)), ("good", good)):
        with zipfile.ZipFile(tmp_path / f"{name}.npz", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("input.npy", member)
        if name == "good":
            assert load_calibration(str(tmp_path / "good.npz"), model).size == 2
        else:
            with pytest.raises(CalibrationError, match="promises|Python objects"):
                load_calibration(str(tmp_path / f"{name}.npz"), model)


def test_png_chunk_claiming_4_gib_is_not_allocated(fz, tmp_path):
    """A flipped IDAT length made PIL read 4 GiB from the file object (a MemoryError under the worker's cap)."""

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype="uint8")).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[data.index(b"IDAT") - 4] = 0xFC  # the byte the fuzzer flipped: IDAT length 0xFC0000xx
    with fz.Fuzzer(tmp_path / "failures", check_timeout=60) as fuzzer:
        result = fuzzer.run(fz.Case("image", "idat length", {"x.png": bytes(data)}, "x.png", ("input_load",)))
    # The pixels precede the bogus length, so the image decodes; reading from memory allocates nothing more.
    assert result.outcomes == {"input_load": "ok"}, result.messages
