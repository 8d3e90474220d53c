"""Whole models on the host executor against onnxruntime.

Tolerance: max |host - onnxruntime| <= 1e-4 * max |onnxruntime| + 1e-5 for float models (summation
order differs: BLAS vs onnxruntime's kernels). Quantised models compare the integer outputs' float
logits within 1/127 of their largest magnitude: a value exactly between two quantisation steps may
round the other way than in onnxruntime (float summation order before requantisation), and such
one-step differences in intermediate tensors propagate.
"""
from __future__ import annotations

import numpy as np
import pytest

ZOO = ("digits_cnn", "mobilenetv2_digits", "vit_digits", "tcn_kws")
REAL_CNNS = ("mobilenetv2_mini.onnx", "resnet_mini.onnx", "shufflenet_mini.onnx", "convnet_tiny.onnx")


def _feeds(path, seed=0):
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in proto.graph.input if i.name not in inits}


def _ort(path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _compare(path, threads=None):
    from edgert.host import HostExecutor

    feeds = _feeds(path)
    got = HostExecutor(path, threads=threads).run(feeds)
    ref = _ort(path, feeds)
    assert set(got) == set(ref)
    for name, want in ref.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype
        err = np.abs(got[name] - want).max()
        assert err <= 1e-4 * np.abs(want).max() + 1e-5, f"{path.name}:{name} max|err| {err:.3g} vs max|ref| {np.abs(want).max():.3g}"


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_matches_onnxruntime(name):
    from edgert.zoo import registry

    _compare(registry.get(name).onnx_path)


@pytest.mark.parametrize("name", REAL_CNNS)
def test_real_cnn_architecture_matches_onnxruntime(name, data_dir):
    _compare(data_dir / name, threads=2 if name.startswith("mobilenet") else 1)



@pytest.mark.parametrize("name", ["mobilenetv2_mini.onnx", "shufflenet_mini.onnx"])
def test_real_cnn_with_every_kernel_split_over_native_threads_matches_onnxruntime(name, data_dir, monkeypatch):
    """Every depthwise and 1x1 convolution split into native-task chunks on 2 threads (MIN_NATIVE_WORK=0):
    the same tolerance as above."""
    from edgert.host import parallel

    monkeypatch.setattr(parallel, "MIN_NATIVE_WORK", 0)
    calls = []
    real = parallel.run_native
    monkeypatch.setattr(parallel, "run_native", lambda *a: (calls.append(a[2].size - 1), real(*a)))
    _compare(data_dir / name, threads=2)
    assert len(calls) >= 3 and min(calls) >= 2  # the split path ran

class _Reader:
    def __init__(self, path, n=4):
        self.it = iter([_feeds(path, seed) for seed in range(n)])

    def get_next(self):
        return next(self.it, None)


@pytest.mark.parametrize("fmt,ops", [("QDQ", None), ("QOperator", ["Conv"]), ("QOperator", ["MatMul"]), ("dynamic", None)])
def test_quantised_models_match_onnxruntime(fmt, ops, tmp_path, data_dir):
    """QDQ runs as its float spec; QOperator gives QLinearConv / QLinearMatMul; dynamic gives ConvInteger / MatMulInteger."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    from edgert.host import HostExecutor
    from edgert.zoo import registry

    src = registry.get("vit_digits" if ops == ["MatMul"] else "digits_cnn").onnx_path
    out = tmp_path / "q.onnx"
    if fmt == "dynamic":
        quantize_dynamic(str(src), str(out))
    else:
        quantize_static(str(src), str(out), _Reader(src), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                        op_types_to_quantize=ops)
    used = {n.op_type for n in onnx.load(str(out)).graph.node}
    expected_ops = {"QDQ": {"QuantizeLinear", "DequantizeLinear"}, "dynamic": {"ConvInteger", "MatMulInteger"},
                    "QOperator": {"QLinearConv"} if ops == ["Conv"] else {"QLinearMatMul"}}[fmt]
    assert expected_ops <= used, used
    feeds = _feeds(out)
    got = HostExecutor(out).run(feeds)
    ref = _ort(out, feeds)
    for name, want in ref.items():
        err = np.abs(got[name] - want).max()
        spread = np.abs(want).max()
        assert err <= spread / 127 + 1e-4, f"{name}: max|err| {err:.3g} vs max|ref| {spread:.3g}"
