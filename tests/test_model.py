"""edgert.model.load on the ONNX test models (tools/build_test_models.py)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgert.errors import DynamicShapeError, ModelError, UnsupportedOperatorError
from edgert.model import TensorSpec, load


@pytest.mark.parametrize(
    "name, in_shape",
    [("convnet_tiny", (1, 3, 32, 32)), ("mobilenetv2_mini", (1, 3, 64, 64)), ("resnet_mini", (1, 3, 64, 64))],
)
def test_specs(data_dir, name, in_shape):
    m = load(data_dir / f"{name}.onnx")
    assert m.format == "onnx" and m.name == name
    assert m.inputs == [TensorSpec("input", in_shape, "float32")]
    assert m.outputs == [TensorSpec("output", (1, 10), "float32")]
    assert len(m.source_sha256) == 64


def test_dynamic_batch_needs_pin(data_dir):
    with pytest.raises(DynamicShapeError) as err:
        load(data_dir / "convnet_dynbatch.onnx")
    msg = str(err.value)
    assert "'input'" in msg and "--input-shape input=1x3x32x32" in msg


@pytest.mark.parametrize("shapes", [{"input": (1, 3, 32, 32)}, ["input=1x3x32x32"]])
def test_dynamic_batch_pinned(data_dir, shapes):
    m = load(data_dir / "convnet_dynbatch.onnx", shapes)
    assert m.inputs == [TensorSpec("input", (1, 3, 32, 32), "float32")]
    assert m.outputs == [TensorSpec("output", (1, 10), "float32")]  # shape inference pins it too


def test_dynamic_batch_pinned_larger(data_dir):
    m = load(data_dir / "convnet_dynbatch.onnx", {"input": (4, 3, 32, 32)})
    assert m.outputs[0].shape == (4, 10)


def test_pin_conflicting_with_fixed_dim(data_dir):
    with pytest.raises(ModelError, match="conflicts"):
        load(data_dir / "convnet_dynbatch.onnx", {"input": (1, 3, 64, 64)})


def test_external_data_loads(data_dir):
    from onnx.external_data_helper import uses_external_data

    m = load(data_dir / "convnet_extdata.onnx")
    assert m.inputs == [TensorSpec("input", (1, 3, 32, 32), "float32")]
    assert not any(uses_external_data(t) for t in m.proto.graph.initializer)
    # Same seeded weights as convnet_tiny, just stored beside the graph.
    tiny = {t.name: t.raw_data for t in load(data_dir / "convnet_tiny.onnx").proto.graph.initializer}
    assert {t.name: t.raw_data for t in m.proto.graph.initializer} == tiny


def test_external_data_missing(data_dir, tmp_path):
    shutil.copy(data_dir / "convnet_extdata.onnx", tmp_path)
    with pytest.raises(ModelError, match="convnet_extdata.onnx.data"):
        load(tmp_path / "convnet_extdata.onnx")


def test_unsupported_operators_all_listed(data_dir):
    pytest.importorskip("tvm")
    with pytest.raises(UnsupportedOperatorError) as err:
        load(data_dir / "unsupported_ops.onnx")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("2 unsupported")
    for part in ("Celu", "celu_1", "celu_2", "LpNormalization", "lpnorm"):
        assert part in msg


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -1])
def test_truncated(data_dir, tmp_path, cut):
    data = (data_dir / "convnet_tiny.onnx").read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[: int(len(data) * cut)] if cut > 0 else data[:cut])
    with pytest.raises(ModelError):
        load(bad)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    bad = tmp_path / "noise.onnx"
    bad.write_bytes(np.random.default_rng(seed).bytes(2000))
    with pytest.raises(ModelError):
        load(bad)


def test_directory_and_missing_path(tmp_path):
    with pytest.raises(ModelError, match="directory"):
        load(tmp_path)
    with pytest.raises(ModelError, match="not found"):
        load(tmp_path / "nope.onnx")


def test_save_keeps_history_and_the_manifest_records_it(data_dir, tmp_path):
    import edgert

    model = load(data_dir / "convnet_tiny.onnx")
    model.history.append({"pass": "example", "params": {"keep": 0.5}})
    model.save(tmp_path / "m.onnx")
    again = load(tmp_path / "m.onnx")
    assert again.history == [{"pass": "example", "params": {"keep": 0.5}}]
    bundle = edgert.compile(again, target="host", output=tmp_path / "m.edgert")
    assert bundle.manifest["compression_history"] == again.history
