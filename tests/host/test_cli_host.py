"""edgert run MODEL.onnx --backend host, in-process through click's CliRunner."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from edgert.cli import main


def _ort(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_run_host_with_input_output_dir_and_check(data_dir, tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", str(data_dir / "resnet_mini.onnx"), "--backend", "host", "--input",
                                    f"input={tmp_path / 'x.npy'}", "--output-dir", str(out), "--check", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "output: 1x10 float32 argmax=" in res.output
    assert "vs onnxruntime: ok" in res.output and "ms on the host executor" in res.output
    got = np.load(out / "output.npy")
    ref = _ort(data_dir / "resnet_mini.onnx", x)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-5


def test_run_host_random_inputs_by_default(data_dir):
    res = CliRunner().invoke(main, ["run", str(data_dir / "convnet_tiny.onnx"), "--backend", "host"])
    assert res.exit_code == 0, res.output
    assert "random inputs (seed 0): input" in res.output


def test_run_host_errors_are_one_line_with_the_fix(data_dir, tmp_path):
    res = CliRunner().invoke(main, ["run", str(data_dir / "unsupported_ops.onnx"), "--backend", "host"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Celu" in lines[0] and "edgert compile" in lines[0]
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    res = CliRunner().invoke(main, ["run", str(data_dir / "convnet_tiny.onnx"), "--backend", "host", "--input",
                                    f"input={tmp_path / 'bad.npy'}"])
    assert res.exit_code == 2 and "expects 1x3x32x32" in res.output, res.output
    res = CliRunner().invoke(main, ["run", str(data_dir / "convnet_tiny.onnx"), "--backend", "host", "--device", "qemu"])
    assert res.exit_code != 0 and "leave out --device" in res.output, res.output


def test_check_fails_when_an_operator_is_wrong(data_dir, monkeypatch):
    """--check is a real comparison: a Gemm off by 1% makes it exit 7 (CheckFailedError)."""
    from dataclasses import replace

    from edgert.host import registry

    real = registry.lookup

    def skewed(op_type, opset):
        impl = real(op_type, opset)
        if op_type != "Gemm":
            return impl
        return replace(impl, fn=lambda ctx, *args: impl.fn(ctx, *args) * np.float32(1.01))

    monkeypatch.setattr(registry, "lookup", skewed)
    res = CliRunner().invoke(main, ["run", str(data_dir / "convnet_tiny.onnx"), "--backend", "host", "--check"])
    assert res.exit_code == 7, res.output
    assert "differs from onnxruntime" in res.stderr
