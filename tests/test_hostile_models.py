"""Hostile ONNX and TFLite models (issue 11, item 1): each entry point works or raises the expected EdgertError.

Every case runs in tools/fuzz_models.py's worker process, under an address-space cap of
DEFAULT_MEM_MB, so a huge allocation fails the case (as ``other:MemoryError``) instead of
the machine, and a crash or hang is reported with the case saved. Directed cases assert the
exact error class per entry point; a bounded Hypothesis run asserts no other exception,
crash or hang and prints its counts (``pytest -s``).
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

HUGE = 1 << 40


@pytest.fixture(scope="module")
def fz(tool):
    return tool("fuzz_models")


@pytest.fixture(scope="module")
def fuzzer(fz, tmp_path_factory):
    with fz.Fuzzer(tmp_path_factory.mktemp("fuzz-failures"), check_timeout=120) as f:
        yield f


def _base(fz, name: str):
    import onnx

    files = dict(fz.onnx_bases()[name])
    return onnx.ModelProto.FromString(files["model.onnx"]), files


def _run(fz, fuzzer, proto_or_bytes, files=None, checks=("load", "host", "cli_host")):
    data = proto_or_bytes if isinstance(proto_or_bytes, bytes) else proto_or_bytes.SerializeToString()
    result = fuzzer.run(fz.Case("onnx", "directed", {**(files or {}), "model.onnx": data}, "model.onnx", checks))
    assert not result.bad, fuzzer.table()
    return result


def _set_ints(proto, name: str, values) -> None:
    from onnx import numpy_helper

    t = next(t for t in proto.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(np.array(values, np.int64), name))


# Each mutation: (base model, function changing the proto in place).
def _truncate_raw(p):
    t = next(t for t in p.graph.initializer if t.raw_data)
    t.raw_data = t.raw_data[:-4]


def _absurd_init_dims(p):
    t = p.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([HUGE])


def _dangling(p):
    p.graph.node[1].input[0] = "no_such_tensor"


def _cycle(p):
    p.graph.node[0].input[0] = p.graph.node[2].output[0]


def _absurd_input(p):
    dims = p.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = HUGE


def _opset(version):
    def mutate(p):
        p.opset_import[0].version = version
    return mutate


def _no_opset(p):
    del p.opset_import[:]


def _no_outputs(p):
    del p.graph.output[:]


def _dup_output(p):
    p.graph.node[1].output[0] = p.graph.node[0].output[0]


MODEL_ERRORS = {
    "truncated raw_data": ("convnet_tiny", _truncate_raw),
    "initializer dims 2^40": ("convnet_tiny", _absurd_init_dims),
    "dangling node input": ("convnet_tiny", _dangling),
    "cycle": ("convnet_tiny", _cycle),
    "input of 2^40 elements": ("convnet_tiny", _absurd_input),
    "opset 2^40": ("convnet_tiny", _opset(HUGE)),
    "opset 0": ("convnet_tiny", _opset(0)),
    "no opset import": ("convnet_tiny", _no_opset),
    "no graph outputs": ("convnet_tiny", _no_outputs),
    "value produced twice": ("convnet_tiny", _dup_output),
    "ConstantOfShape 2^40": ("shape_ops", lambda p: _set_ints(p, "s2", [HUGE])),
    "ConstantOfShape 2^20 x 2^20": ("shape_ops", lambda p: _set_ints(p, "s2", [1 << 20, 1 << 20])),
    "Expand to 2^40": ("shape_ops", lambda p: _set_ints(p, "s3", [1 << 20, 1 << 20])),
    "Reshape to 2^40": ("shape_ops", lambda p: _set_ints(p, "s1", [HUGE])),
}


@pytest.mark.parametrize("what", sorted(MODEL_ERRORS))
def test_malformed_onnx_refused(fz, fuzzer, what):
    base, mutate = MODEL_ERRORS[what]
    proto, files = _base(fz, base)
    mutate(proto)
    result = _run(fz, fuzzer, proto, files)
    assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, result.messages


def test_truncated_and_empty_files(fz, fuzzer):
    _, files = _base(fz, "convnet_tiny")
    for cut in (0, 10, 500, len(files["model.onnx"]) - 3):
        result = _run(fz, fuzzer, files["model.onnx"][:cut])
        assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, (cut, result.messages)


@pytest.mark.parametrize("field,value", [("op_type", "FooBar"), ("domain", "com.evil")])
def test_unknown_operator_or_domain(fz, fuzzer, field, value):
    proto, files = _base(fz, "convnet_tiny")
    setattr(proto.graph.node[2], field, value)
    result = _run(fz, fuzzer, proto, files)
    assert result.outcomes == {"load": "UnsupportedOperatorError", "host": "UnsupportedHostOperatorError",
                               "cli_host": "exit 2"}, result.messages
    assert ("FooBar" if field == "op_type" else "com.evil.Relu") in result.messages["load"]


@pytest.mark.parametrize("location,offset,length", [
    ("missing.bin", 0, None),          # file absent
    ("data.bin", 0, HUGE),             # length past the end: must not be allocated
    ("data.bin", HUGE, None),          # offset past the end
    ("data.bin", -1, None),
    ("data.bin", 0, 7),                # bytes that do not fill the tensor
])
def test_bad_external_data(fz, fuzzer, location, offset, length):
    from onnx import TensorProto

    proto, files = _base(fz, "convnet_tiny")
    t = proto.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            e = t.external_data.add()
            e.key, e.value = key, str(value)
    result = _run(fz, fuzzer, proto, {**files, "data.bin": b"\x01" * 64})
    assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, result.messages


@pytest.mark.timeout(60)
@pytest.mark.parametrize("absolute", [False, True])
def test_external_data_outside_the_folder_is_never_opened(data_dir, tmp_path, absolute):
    """The location names a FIFO outside the model's folder: opening it to read would block for ever."""
    import onnx
    from onnx import TensorProto

    from edgert.errors import ModelError
    from edgert.host import HostExecutor
    from edgert.model import load

    secret = tmp_path / "secret.fifo"
    os.mkfifo(secret)
    folder = tmp_path / "model"
    folder.mkdir()
    proto = onnx.load(str(data_dir / "convnet_tiny.onnx"))
    t = proto.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", str(secret) if absolute else "../secret.fifo"
    onnx.save(proto, folder / "model.onnx")
    for call in (load, HostExecutor):
        with pytest.raises(ModelError, match="outside the model's folder"):
            call(folder / "model.onnx")


def test_valid_bases_still_work(fz, fuzzer):
    """The checks refuse the mutants, not the models they come from."""
    for name in sorted(fz.onnx_bases()):
        proto, files = _base(fz, name)
        result = _run(fz, fuzzer, proto, files)
        want = "ok" if name != "unsupported_ops" else "UnsupportedOperatorError"
        assert result.outcomes["load"] == want, (name, result.messages)


TFLITE_ERRORS = {"truncated": lambda d: d[:len(d) // 2], "empty": lambda d: b"",
                 "no identifier": lambda d: d[:4] + b"XXXX" + d[8:],
                 "root offset past the end": lambda d: (len(d) + 8).to_bytes(4, "little") + d[4:]}


@pytest.mark.parametrize("what", sorted(TFLITE_ERRORS))
def test_malformed_tflite_refused(fz, fuzzer, what):
    data = TFLITE_ERRORS[what](fz.tflite_bases()["convnet_tiny"])
    result = fuzzer.run(fz.Case("tflite", what, {"model.tflite": data}, "model.tflite", ("load", "tflite_relax")))
    assert result.outcomes == {"load": "ModelError", "tflite_relax": "skip"}, result.messages


def _fuzz(fz, fuzzer, strategy, examples: int, seconds: float) -> None:
    before, failed = fuzzer.tried, len(fuzzer.failures)
    fz.fuzz(fuzzer, strategy, examples, seconds, seed=11)
    print(f"\n{fuzzer.table()}")
    assert fuzzer.tried > before
    assert len(fuzzer.failures) == failed, fuzzer.table()
    assert fuzzer.max_rss_kb < fuzzer.mem_mb * 1024


def test_fuzz_onnx(fz, fuzzer):
    """Mutated ONNX models through load, the host executor, compress (int8/prune/lowrank) and 'edgert run'."""
    _fuzz(fz, fuzzer, fz.onnx_cases(), examples=300, seconds=40)


def test_fuzz_onnx_compile(fz, fuzzer):
    """A few mutants through TVM compile (slow): those that load compile or fail with an EdgertError, output untouched."""
    _fuzz(fz, fuzzer, fz.onnx_cases(("load", "compile"), mild=True), examples=5, seconds=30)
    assert fuzzer.counts["compile"]["ok"] + sum(n for o, n in fuzzer.counts["compile"].items() if o.endswith("Error")) > 0


def test_fuzz_tflite(fz, fuzzer):
    """Truncated, flipped and offset-corrupted flatbuffers through load and TVM's TFLite frontend."""
    _fuzz(fz, fuzzer, fz.tflite_cases(), examples=200, seconds=20)


# Regressions: bugs the fuzzer found (each was an uncaught exception before its fix).
@pytest.mark.parametrize("field", ["domain", "location"])
def test_string_that_is_not_utf8(fz, fuzzer, field):
    """protobuf returns undecodable text as bytes (was a TypeError in check_operators / external data)."""
    from onnx import TensorProto

    proto, files = _base(fz, "convnet_tiny")
    if field == "domain":
        proto.graph.node[2].domain = "zzzzzz"
    else:
        t = proto.graph.initializer[0]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", "zzzzzz"
    data = proto.SerializeToString()
    assert data.count(b"zzzzzz") == 1
    result = _run(fz, fuzzer, data.replace(b"zzzzzz", b"\xff" * 6), files)
    assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, result.messages
    assert "not UTF-8 text" in result.messages["load"]


def test_nul_in_external_location_and_control_characters_in_names(fz, fuzzer):
    """A NUL in the location raised ValueError in path resolution; a newline in the graph name split the CLI's line."""
    from onnx import TensorProto

    proto, files = _base(fz, "convnet_tiny")
    t = proto.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", "data\0.bin"
    result = _run(fz, fuzzer, proto, files)
    assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, result.messages
    assert "NUL byte" in result.messages["load"]
    proto, files = _base(fz, "convnet_tiny")
    proto.graph.name = "\n\x02evil"
    result = _run(fz, fuzzer, proto, files)
    assert result.outcomes == {"load": "ModelError", "host": "ModelError", "cli_host": "exit 2"}, result.messages
    assert "control characters" in result.messages["host"]


@pytest.mark.parametrize("how", ["quantize", "lowrank"])
def test_model_computing_nan_on_calibration_data(fz, fuzzer, how):
    """A NaN BatchNormalization epsilon gives NaN activations (was a bincount ValueError / SVD LinAlgError)."""
    proto, files = _base(fz, "convnet_tiny")
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    next(a for a in bn.attribute if a.name == "epsilon").f = float("nan")
    case = fz.Case("onnx", "bn eps", {**files, "model.onnx": proto.SerializeToString()}, "model.onnx",
                   ("load", "compress"), {"compress": how})
    result = fuzzer.run(case)
    assert result.outcomes == {"load": "ok", "compress": "CalibrationError"}, result.messages
    assert "NaN or infinite" in result.messages["compress"]


@pytest.mark.parametrize("group", [0, HUGE])
def test_conv_group_absurd(fz, fuzzer, group):
    """group=0 divided by zero in the host Conv's weight repacking (was a ZeroDivisionError).

    ONNX shape inference does not check group against the channels, so the model loads; running and
    compiling (its reference run in onnxruntime) refuse it, leaving the output folder as it was."""
    proto, files = _base(fz, "convnet_tiny")
    conv = proto.graph.node[0]
    next(a for a in conv.attribute if a.name == "group").i = group
    result = _run(fz, fuzzer, proto, files, checks=("load", "host", "cli_host", "compile"))
    assert result.outcomes == {"load": "ok", "host": "ModelError", "cli_host": "exit 2", "compile": "ModelError"}, \
        result.messages


def test_harness_reports_crash_hang_and_huge_allocation(fz, tmp_path):
    """The worker's own failure modes: a segfault, a hang and a 32 GiB allocation are each reported and saved,
    and the next case runs in a fresh worker; a write left behind in an output folder is caught."""
    with fz.Fuzzer(tmp_path / "failures", check_timeout=5) as fuzzer:
        outcomes = [fuzzer.run(fz.Case("onnx", check, {"m.onnx": b""}, "m.onnx", ("load", check, "load"))).outcomes
                    for check in ("selftest_crash", "selftest_hang", "selftest_alloc")]
        assert outcomes[0] == {"load": "ModelError", "selftest_crash": f"crash:{int(signal.SIGSEGV)}"}
        assert outcomes[1] == {"load": "ModelError", "selftest_hang": "timeout"}
        assert outcomes[2] == {"load": "ModelError", "selftest_alloc": "other:MemoryError"}
        assert [sorted(p.name for p in r.saved.iterdir()) for r in fuzzer.failures] == [["case.json", "m.onnx"]] * 3
        assert "Fatal Python error: Segmentation fault" in fuzzer.failures[0].messages["selftest_crash"]
        assert "check_selftest_hang" in fuzzer.failures[1].messages["selftest_hang"]  # the hung stack, from faulthandler
        assert fuzzer.run(fz.Case("onnx", "after", {"m.onnx": b""}, "m.onnx", ("load",))).outcomes == {"load": "ModelError"}
        dirty = fuzzer.run(fz.Case("onnx", "dirty", {"m.onnx": b""}, "m.onnx", ("selftest_dirty",)))
        assert dirty.outcomes == {"selftest_dirty": "other:dirty-output"} and "half.npy" in dirty.messages["selftest_dirty"]
