"""edgert.tflite: loading, checking, TVM conversion and the LiteRT reference."""
from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest

from edgert.errors import DynamicShapeError, MissingDependencyError, ModelError, UnsupportedOperatorError
from edgert.model import TensorSpec, load

pytest.importorskip("tflite")


def _tvm_outputs(model, feeds):
    tvm = pytest.importorskip("tvm")
    from tvm import relax

    from edgert import tflite

    ex = tvm.compile(tflite.to_relax(model), target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(feeds[s.name]) for s in model.inputs))
    return [out.numpy()]


def _assert_close(got, ref):
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_load_specs(data_dir):
    path = data_dir / "convnet_tiny.tflite"
    m = load(path)
    assert m.format == "tflite" and m.name == "convnet_tiny"
    assert m.inputs == [TensorSpec("input", (1, 32, 32, 3), "float32")]
    assert m.outputs == [TensorSpec("output", (1, 10), "float32")]
    assert m.data == path.read_bytes()
    assert m.source_sha256 == hashlib.sha256(m.data).hexdigest()


def test_tvm_matches_litert(data_dir):
    pytest.importorskip("ai_edge_litert")
    m = load(data_dir / "convnet_tiny.tflite")
    feeds = m.random_inputs()
    ref = m.reference_run(feeds)
    assert ref[0].shape == (1, 10) and abs(ref[0].sum() - 1) < 1e-5  # softmax output
    _assert_close(_tvm_outputs(m, feeds)[0], ref[0])


def test_dynamic_batch_needs_pin(data_dir):
    with pytest.raises(DynamicShapeError) as err:
        load(data_dir / "convnet_dynbatch.tflite")
    assert "'input'" in str(err.value) and "--input-shape input=1x32x32x3" in str(err.value)


def test_dynamic_batch_pinned_runs(data_dir):
    pytest.importorskip("ai_edge_litert")
    m = load(data_dir / "convnet_dynbatch.tflite", {"input": (3, 32, 32, 3)})
    assert m.inputs == [TensorSpec("input", (3, 32, 32, 3), "float32")]
    assert m.outputs == [TensorSpec("output", (-1, 10), "float32")]  # known once run
    feeds = m.random_inputs()
    ref = m.reference_run(feeds)
    assert ref[0].shape == (3, 10)
    _assert_close(_tvm_outputs(m, feeds)[0], ref[0])


@pytest.mark.parametrize("shapes", [{"input": (1, 32, 32, 4)}, {"input": (1, 32, 32)}, {"image": (1, 32, 32, 3)}])
def test_bad_pin(data_dir, shapes):
    with pytest.raises(ModelError):
        load(data_dir / "convnet_dynbatch.tflite", shapes)


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, -1])
def test_truncated(data_dir, tmp_path, keep):
    data = (data_dir / "convnet_tiny.tflite").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ModelError, match="TFLite flatbuffer"):
        load(bad)


@pytest.mark.parametrize("offset", range(8))  # root table offset, then the 'TFL3' identifier
def test_flipped_header_byte(data_dir, tmp_path, offset):
    data = bytearray((data_dir / "convnet_tiny.tflite").read_bytes())
    data[offset] ^= 0xFF
    bad = tmp_path / "flipped.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="TFLite flatbuffer"):
        load(bad)


def test_unsupported_operators_all_listed(data_dir, tmp_path):
    """Rewrite the opcodes of CONV_2D (ops #0 and #3) and SOFTMAX (#8) to builtins TVM lacks."""
    pytest.importorskip("tvm")
    import tflite

    data = bytearray((data_dir / "convnet_tiny.tflite").read_bytes())
    fb = tflite.Model.GetRootAsModel(data, 0)
    for i in range(fb.OperatorCodesLength()):
        code = fb.OperatorCodes(i)
        new = {3: 15, 25: 30}.get(code.BuiltinCode())  # CONV_2D -> LSH_PROJECTION, SOFTMAX -> SKIP_GRAM
        if new:
            tab = code._tab
            data[tab.Pos + tab.Offset(4)] = new  # deprecated_builtin_code (int8)
            data[tab.Pos + tab.Offset(10)] = new  # low byte of builtin_code (int32, little-endian)
    bad = tmp_path / "unsupported.tflite"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsupportedOperatorError) as err:
        load(bad)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 operator(s)")
    assert "LSH_PROJECTION (ops: #0 -> c1, #3 -> pw)" in msg
    assert "SKIP_GRAM (ops: #8 -> output)" in msg


def test_missing_packages_named(data_dir, monkeypatch):
    from edgert import tflite

    m = load(data_dir / "convnet_tiny.tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgert\[reference\]'"):
        tflite.reference_run(m, m.random_inputs())
    monkeypatch.setitem(sys.modules, "tflite", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgert\[reference\]'"):
        load(data_dir / "convnet_tiny.tflite")
