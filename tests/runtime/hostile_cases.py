"""Hostile inputs for the native runner (edgert-run) and the C API, shared by
test_native_hostile.py (the shipped build) and test_sanitizers.py (the same cases under
AddressSanitizer/UBSan).

A case prepares a private copy of a bundle and a scratch folder and returns the runner's arguments;
its expectation is the exit status, the EDGERT "code" and a piece of the message.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Generous: a case that hangs (a FIFO read, a runaway loop) fails on this instead of stalling the suite.
RUN_TIMEOUT = 120


@dataclass(frozen=True)
class Expect:
    exit: int
    code: str
    message: str  # a piece of the EDGERT message


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Path, Path], list[str]]  # (bundle copy, scratch folder) -> runner arguments
    expect: Expect


def run_runner(runner: Path, bundle: Path, args: list[str], env: dict | None = None,
               prefix: tuple[str, ...] = ()) -> tuple[int, dict, str]:
    """Runs the runner (under `prefix`, e.g. qemu) on a bundle; exactly one EDGERT line on stdout, parsed."""
    proc = subprocess.run([*prefix, str(runner), str(bundle), *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT, env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("EDGERT "), proc.stdout + proc.stderr
    return proc.returncode, json.loads(lines[0][len("EDGERT "):]), proc.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under folder: relative path -> sha256, link target, or kind."""
    out = {}
    if not folder.exists():
        return out
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, data: dict | str | bytes) -> None:
    path = bundle / "manifest.json"
    if isinstance(data, dict):
        path.write_text(json.dumps(data))
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


# ------------------------------------------------------------------ .npy files


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_header(header: str, version: int = 1) -> bytes:
    """A hand-written .npy prefix + header dict (padded as numpy pads), for headers numpy refuses to write."""
    text = header.encode("latin1")
    prefix_len = 10 if version == 1 else 12
    text += b" " * ((64 - (prefix_len + len(text) + 1) % 64) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text


def _input(bundle: Path) -> tuple[str, list[int]]:
    spec = manifest(bundle)["inputs"][0]
    return spec["name"], spec["shape"]


def input_case(name: str, make: Callable[[list[int], Path], bytes | Path], message: str) -> Case:
    """The bundle's first input from a file `make(shape, scratch)` writes (bytes) or names (a Path)."""

    def prepare(bundle: Path, scratch: Path) -> list[str]:
        input_name, shape = _input(bundle)
        made = make(shape, scratch)
        path = made if isinstance(made, Path) else scratch / f"{name}.npy"
        if not isinstance(made, Path):
            path.write_bytes(made)
        return ["--input", f"{input_name}={path}"]

    return Case(name, prepare, Expect(2, "input", message))


def _good(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _fifo(scratch: Path, name: str) -> Path:
    path = scratch / name
    os.mkfifo(path)
    return path


def _dir(scratch: Path, name: str) -> Path:
    path = scratch / name
    path.mkdir()
    return path


INPUT_CASES = [
    input_case("npy_wrong_magic", lambda s, d: b"NOTNUMPY" + npy_bytes(_good(s))[8:], "is not a .npy file"),
    input_case("npy_empty_file", lambda s, d: b"", "is not a .npy file"),
    input_case("npy_truncated_header", lambda s, d: npy_bytes(_good(s))[:40], "truncated .npy header"),
    input_case("npy_truncated_data", lambda s, d: npy_bytes(_good(s))[:-10], "truncated or corrupt"),
    input_case("npy_extra_data", lambda s, d: npy_bytes(_good(s)) + b"\0" * 16, "truncated or corrupt"),
    input_case("npy_fortran_order", lambda s, d: npy_bytes(np.asfortranarray(_good(s))), "Fortran-ordered"),
    input_case("npy_big_endian", lambda s, d: npy_bytes(_good(s).astype(">f4")), "big-endian"),
    input_case("npy_object_dtype", lambda s, d: npy_bytes(np.array([{}, None], dtype=object), allow_pickle=True),
               "Python objects"),
    input_case("npy_structured_dtype", lambda s, d: npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])),
               "unsupported .npy dtype"),
    input_case("npy_wrong_dtype", lambda s, d: npy_bytes(_good(s).astype(np.float64)), "'<f8'"),
    input_case("npy_wrong_shape", lambda s, d: npy_bytes(np.zeros((1, 3, 4, 4), np.float32)), "has shape [1,3,4,4]"),
    # Declared shapes far beyond the file: read nothing from them, whether or not the byte count wraps.
    input_case("npy_huge_shape", lambda s, d: npy_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 8, 40000000000), }") + b"\0" * 768,
        "declares <f4 [1,3,8,40000000000]"),
    input_case("npy_shape_wraps_around", lambda s, d: npy_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387905, 1), }") + b"\0" * 4,
        "more bytes than fit in memory"),
    input_case("npy_negative_dim", lambda s, d: npy_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }") + b"\0" * 12, "bad dimension"),
    input_case("npy_no_shape", lambda s, d: npy_header("{'descr': '<f4', 'fortran_order': False, }"),
               "cannot read the shape"),
    input_case("npy_bad_version", lambda s, d: b"\x93NUMPY\x09\x00" + npy_bytes(_good(s))[8:],
               "unsupported .npy format version 9"),
    input_case("npy_header_len_huge", lambda s, d: b"\x93NUMPY\x02\x00\xff\xff\xff\xff" + b"{" * 64,
               "truncated .npy header"),
    input_case("npy_fifo", lambda s, d: _fifo(d, "fifo.npy"), "not a regular file"),
    input_case("npy_directory", lambda s, d: _dir(d, "folder.npy"), "not a regular file"),
    input_case("npy_missing", lambda s, d: d / "absent.npy", "cannot read"),
    Case("input_unknown_name", lambda b, d: ["--input", f"no_such_input={b / 'golden' / 'input_0.npy'}"],
         Expect(2, "input", "has no input 'no_such_input'")),
    Case("stream_on_plain_bundle", lambda b, d: ["--stream", str(b / "golden" / "input_0.npy")],
         Expect(2, "input", "edgert continual")),
]


# ------------------------------------------------------------------ manifest.json


def manifest_case(name: str, edit: Callable[[dict], dict | str | bytes], message: str,
                  expect: tuple[int, str] = (5, "bundle")) -> Case:
    def prepare(bundle: Path, scratch: Path) -> list[str]:
        write_manifest(bundle, edit(manifest(bundle)))
        return ["--golden"]

    return Case(name, prepare, Expect(expect[0], expect[1], message))


def _set(path: tuple, value):
    """An edit setting manifest[path[0]][path[1]]... (("inputs", 0, "shape")) to value."""

    def edit(m: dict) -> dict:
        *parents, last = path
        node = m
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return m

    return edit


_DELETE = object()


def _replace_with_fifo(rel: str) -> Callable[[Path, Path], list[str]]:
    def prepare(bundle: Path, scratch: Path) -> list[str]:
        (bundle / rel).unlink()
        os.mkfifo(bundle / rel)
        return ["--golden"]

    return prepare


def _same_output_names(m: dict) -> dict:
    m["outputs"][1]["name"] = m["outputs"][0]["name"]
    return m


def _big_manifest(m: dict) -> str:
    return json.dumps(m) + " " * (17 << 20)


MANIFEST_CASES = [
    manifest_case("manifest_not_json", lambda m: "{not json", "invalid JSON"),
    manifest_case("manifest_truncated", lambda m: json.dumps(m)[: len(json.dumps(m)) // 2], "invalid JSON"),
    manifest_case("manifest_binary", lambda m: bytes(range(256)) * 4, "invalid JSON"),
    manifest_case("manifest_top_level_array", lambda m: "[]", "not a JSON object"),
    manifest_case("manifest_empty_object", lambda m: "{}", "'format' is not"),
    manifest_case("manifest_deep_nesting", lambda m: "[" * 100000 + "]" * 100000, "nested too deeply"),
    manifest_case("manifest_inputs_wrong_type", _set(("inputs",), "x"), "inputs has the wrong type"),
    manifest_case("manifest_shape_wrong_type", _set(("inputs", 0, "shape"), {"a": 1}), "shape has the wrong type"),
    manifest_case("manifest_no_files", _set(("files",), _DELETE), "has no 'files'"),
    manifest_case("manifest_no_arch", _set(("target", "arch"), _DELETE), "target has no 'arch'"),
    manifest_case("manifest_file_hash_not_string", _set(("files", "lib/model.so"), 5), "is not a sha256 string"),
    manifest_case("manifest_unknown_dtype", _set(("inputs", 0, "dtype"), "complex64"), "unsupported dtype 'complex64'"),
    manifest_case("manifest_dim_huge_number", _set(("inputs", 0, "shape"), [1e300]), "non-negative integers"),
    manifest_case("manifest_dim_negative", _set(("inputs", 0, "shape"), [1, -3]), "non-negative integers"),
    manifest_case("manifest_dim_fraction", _set(("inputs", 0, "shape"), [2.5]), "non-negative integers"),
    # Each dimension is allowed on its own; their product wraps size_t to 0 (2^40 * 2^40 * 4 bytes).
    manifest_case("manifest_tensor_wraps_around", _set(("inputs", 0, "shape"), [2**40, 2**40]),
                  "larger than this device's memory"),
    manifest_case("manifest_tensor_too_large", _set(("inputs", 0, "shape"), [1, 2**45]), "larger than this device's memory"),
    manifest_case("manifest_too_many_dims", _set(("inputs", 0, "shape"), [1] * 100), "100 dimensions"),
    manifest_case("manifest_version_huge", lambda m: json.dumps(m).replace('"format_version": 1,', '"format_version": 1e400,'),
                  "format version inf is newer than this runtime supports"),
    manifest_case("manifest_version_wrong_type", _set(("format_version",), "1"), "format_version has the wrong type"),
    manifest_case("manifest_device_unknown", _set(("target", "device"), "tpu"), "target.device 'tpu'"),
    manifest_case("manifest_too_large", _big_manifest, "too large"),
    # Found after the run, before any output is written: the output folder stays as it was.
    manifest_case("manifest_output_names_clash", _same_output_names, "two outputs map to the file name"),
    Case("manifest_fifo", _replace_with_fifo("manifest.json"), Expect(5, "bundle", "not a regular file")),
]


# ------------------------------------------------------------------ file integrity


def _outside_copy(rel: str, link: bool) -> Callable[[Path, Path], list[str]]:
    """Moves a listed file out of the bundle (same bytes, so the same hash) and links it back."""

    def prepare(bundle: Path, scratch: Path) -> list[str]:
        outside = scratch / Path(rel).name
        shutil.move(bundle / rel, outside)
        if link:
            (bundle / rel).symlink_to(outside)
        return ["--golden"]

    return prepare


def _listed_outside(bundle: Path, scratch: Path) -> list[str]:
    """A manifest entry '../outside.so' whose hash matches the file it reaches."""
    outside = bundle.parent / "outside.so"
    shutil.copy(bundle / "lib" / "model.so", outside)
    write_manifest(bundle, _set(("files", "../outside.so"), sha256(outside))(manifest(bundle)))
    return ["--golden"]


def _golden_unlisted(bundle: Path, scratch: Path) -> list[str]:
    """A golden input outside the files the manifest lists (so never hash-checked)."""
    outside = bundle.parent / "golden_outside.npy"
    shutil.copy(bundle / "golden" / "input_0.npy", outside)
    write_manifest(bundle, _set(("golden", "inputs", 0), "../golden_outside.npy")(manifest(bundle)))
    return ["--golden"]


INTEGRITY_CASES = [
    Case("model_symlink_outside", _outside_copy("lib/model.so", link=True),
         Expect(5, "integrity", "'lib/model.so' points outside the bundle")),
    Case("golden_symlink_outside", _outside_copy("golden/output_0.npy", link=True),
         Expect(5, "integrity", "'golden/output_0.npy' points outside the bundle")),
    Case("manifest_path_dotdot", _listed_outside, Expect(5, "integrity", "'../outside.so' points outside the bundle")),
    Case("golden_not_listed", _golden_unlisted, Expect(5, "integrity", "is not in the manifest's files")),
    Case("listed_file_fifo", _replace_with_fifo("golden/output_1.npy"),
         Expect(5, "integrity", "golden/output_1.npy (not a regular file)")),
    Case("header_missing", _outside_copy("include/edgert.h", link=False),
         Expect(5, "integrity", "include/edgert.h (missing)")),
]

BUNDLE_CASES = INPUT_CASES + MANIFEST_CASES + INTEGRITY_CASES


# ------------------------------------------------------------------ stream mode


def _frame(bundle: Path) -> dict:
    return next(t for t in manifest(bundle)["inputs"] if not t["name"].startswith("state_in_"))


def stream_frames(bundle: Path, n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    shape = _frame(bundle)["shape"]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(dtype)


def stream_case(name: str, make: Callable[[Path], bytes], message: str, expect: tuple[int, str] = (2, "input"),
                extra: tuple[str, ...] = ()) -> Case:
    def prepare(bundle: Path, scratch: Path) -> list[str]:
        path = scratch / f"{name}.npy"
        path.write_bytes(make(bundle))
        return ["--stream", str(path), *extra]

    return Case(name, prepare, Expect(expect[0], expect[1], message))


def _frame_elems(bundle: Path) -> int:
    return int(np.prod(_frame(bundle)["shape"]))


def _wrapping_frames(bundle: Path) -> bytes:
    """n * frame bytes == one frame's bytes modulo 2^64 (n = 2^62 + 1, frames of 4k bytes): an
    unchecked product lets the runner step through 2^62 frames of a one-frame buffer."""
    e = _frame_elems(bundle)
    header = npy_header(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({2**62 + 1}, {e}), }}")
    return header + b"\0" * (4 * e)


STREAM_CASES = [
    stream_case("stream_frames_wrap_around", _wrapping_frames, "more bytes than fit in memory"),
    stream_case("stream_frame_size", lambda b: npy_bytes(np.zeros((3, _frame_elems(b) + 1), np.float32)),
                "give frames along axis 0"),
    stream_case("stream_no_frames", lambda b: npy_bytes(np.zeros((0, _frame_elems(b)), np.float32)),
                "give frames along axis 0"),
    stream_case("stream_scalar", lambda b: npy_bytes(np.float32(1.0)), "give frames along axis 0"),
    stream_case("stream_wrong_dtype", lambda b: npy_bytes(stream_frames(b, 3, dtype=np.float64)), "holds dtype '<f8'"),
    stream_case("stream_truncated", lambda b: npy_bytes(stream_frames(b, 3))[:-4], "truncated or corrupt"),
    stream_case("stream_with_input", lambda b: npy_bytes(stream_frames(b, 3)), "--stream takes no --input",
                expect=(2, "usage"), extra=("--golden",)),
    Case("stream_state_unknown", lambda b, d: [*_edit_stream(b, "name_in", "no_such_state"), *_frames_arg(b, d)],
         Expect(5, "bundle", "names 'no_such_state', which the model does not have")),
    Case("stream_stride_zero", lambda b, d: [*_edit_stream(b, "stride", 0), *_frames_arg(b, d)],
         Expect(5, "bundle", "stream.stride >= 1")),
]


def _edit_stream(bundle: Path, key: str, value) -> list[str]:
    m = manifest(bundle)
    if key in ("delay", "stride"):
        m["stream"][key] = value
    else:
        m["stream"]["states"][0][key] = value
    write_manifest(bundle, m)
    return []


def _frames_arg(bundle: Path, scratch: Path) -> list[str]:
    path = scratch / "frames.npy"
    np.save(path, stream_frames(bundle, 3))
    return ["--stream", str(path)]


# ------------------------------------------------------------------ running a case


def check_case(case: Case, runner: Path | None, pristine: Path, scratch: Path, env: dict | None = None,
               prefix: tuple[str, ...] = ()) -> str:
    """Runs one case on a private copy of `pristine` with `runner` (None: the copy's own
    bin/edgert-run); asserts its expectation and that neither the output folder nor the bundle
    changed. Returns the runner's stderr (for sanitizer checks)."""
    bundle = Path(shutil.copytree(pristine, scratch / "bundle", symlinks=True))
    runner = runner or bundle / "bin" / "edgert-run"
    args = case.prepare(bundle, scratch)
    out = scratch / "out"
    out.mkdir(exist_ok=True)
    (out / "keep.npy").write_bytes(b"earlier output")
    before_out, before_bundle = snapshot(out), snapshot(bundle)
    code, report, err = run_runner(runner, bundle, [*args, "--output-dir", str(out)], env=env, prefix=prefix)
    assert (code, report["status"], report["code"]) == (case.expect.exit, "error", case.expect.code), (case.name, report, err)
    assert case.expect.message in report["message"], (case.name, report["message"])
    assert snapshot(out) == before_out, f"{case.name}: the output folder changed"
    assert snapshot(bundle) == before_bundle, f"{case.name}: the bundle changed"
    return err


# ------------------------------------------------------------------ the C API program


# name -> (status, piece of edgert_last_error()); "value" rows compare the printed number.
CAPI_EXPECT = {
    "null_open_dir": (1, "NULL"),
    "null_num_inputs": (0, ""),
    "null_num_outputs": (0, ""),
    "null_input_info": (1, "NULL"),
    "null_output_info": (1, "NULL"),
    "null_set_input": (1, "NULL model"),
    "null_run": (1, "NULL model"),
    "null_get_output": (1, "NULL model"),
    "null_set_call_hook": (1, "NULL model"),
    "null_is_stream": (0, ""),
    "null_stream_info": (1, "NULL"),
    "null_stream_reset": (1, "NULL model"),
    "null_stream_step": (1, "NULL model"),
    "open_null_out": (1, "NULL"),
    "open_missing_dir": (2, "bundle not found"),
    "open_missing_dir_handle_null": (1, ""),
    "open_not_a_bundle": (2, "is not an edgert bundle"),
    "open_a_file": (2, "is not an edgert bundle"),
    "open": (0, ""),
    "input_info_index_past_end": (1, "out of range"),
    "input_info_index_max": (1, "out of range"),
    "input_info_null_info": (1, "NULL"),
    "output_info_index_past_end": (1, "out of range"),
    "input_info": (0, ""),
    "output_info": (0, ""),
    "run_before_inputs": (1, "was not set"),
    "get_output_before_run": (1, "no outputs yet"),
    "set_input_null_data": (1, "NULL model or buffer"),
    "set_input_short": (1, "bytes, got"),
    "set_input_long": (1, "bytes, got"),
    "set_input_zero_bytes": (1, "bytes, got 0"),
    "set_input_size_max": (1, f"bytes, got {2**64 - 1}"),
    "set_input_index_past_end": (1, "out of range"),
    "set_input_index_max": (1, "out of range"),
    "run_after_refused_inputs": (1, "was not set"),
    "stream_info_not_stream": (1, "not a step model"),
    "stream_reset_not_stream": (1, "not a step model"),
    "stream_step_not_stream": (1, "not a step model"),
    "is_stream_plain": (0, ""),
    "set_input": (0, ""),
    "set_call_hook": (0, ""),
    "run": (0, ""),
    "hook_calls_positive": (1, ""),
    "unset_call_hook": (0, ""),
    "get_output_short": (1, "bytes, got"),
    "get_output_long": (1, "bytes, got"),
    "get_output_null_data": (1, "NULL model or buffer"),
    "get_output_index_past_end": (1, "out of range"),
    "get_output": (0, ""),
    "open_second": (0, ""),
    "second_run_before_inputs": (1, "was not set"),
    "first_still_runs": (0, ""),
}

CAPI_STREAM_EXPECT = {
    "stream_open": (0, ""),
    "stream_is_stream": (1, ""),
    "stream_info": (0, ""),
    "stream_info_null_delay": (1, "NULL"),
    "stream_frame_info": (0, ""),
    "stream_step_before_frame": (1, "was not set"),
    "stream_set_frame_long": (1, "bytes, got"),
    "stream_set_frame": (0, ""),
    "stream_step": (0, ""),
    "stream_first_step_emitted": (0, ""),  # the test's stream model has a delay > 0
    "stream_step_null_emitted": (0, ""),
    "stream_reset": (0, ""),
}


def build_capi_program(cc: str, include: Path, libdir: Path, out: Path, flags: tuple[str, ...] = ()) -> Path:
    """Compiles capi_hostile.c against the libedgert.so in libdir."""
    exe = out / "capi_hostile"
    cmd = [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", *flags, "-I", str(include), str(HERE / "capi_hostile.c"),
           "-o", str(exe), "-L", str(libdir), "-ledgert", f"-Wl,-rpath,{libdir}", f"-Wl,-rpath-link,{libdir}"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def run_capi_program(exe: Path, bundle: Path, scratch: Path, stream_bundle: Path | None = None,
                     env: dict | None = None) -> tuple[dict[str, tuple[int, str]], np.ndarray, str]:
    """Runs it on the bundle's golden input; returns case -> (result, message), output 0, stderr."""
    spec = manifest(bundle)
    x = np.load(bundle / spec["golden"]["inputs"][0])
    (scratch / "input.bin").write_bytes(np.ascontiguousarray(x).tobytes())
    args = [str(exe), str(bundle), str(scratch / "input.bin"), str(scratch / "output.bin")]
    if stream_bundle is not None:
        args.append(str(stream_bundle))
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=env)
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("DONE"), proc.stdout + proc.stderr
    cases = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CASE\t"):
            _, name, result, message = line.split("\t", 3)
            cases[name] = (int(result), message)
    out = spec["outputs"][0]
    y = np.frombuffer((scratch / "output.bin").read_bytes(), dtype=out["dtype"]).reshape(out["shape"])
    return cases, y, proc.stderr


def check_capi_cases(cases: dict[str, tuple[int, str]], expected: dict[str, tuple[int, str]]) -> None:
    for name, (status, piece) in expected.items():
        assert name in cases, f"the C program did not report {name}"
        got_status, message = cases[name]
        assert got_status == status, (name, got_status, message)
        assert piece in message, (name, message)
