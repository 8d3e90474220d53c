"""edgert.Stream and the native stream mode: every backend reproduces the offline model.

Models: ``strided`` (two strided convs with symmetric padding: delay 4, one output every 6
frames; its state updates are gated by a step counter with Where/Mod) and the zoo's tcn_kws.
References: the offline model run by onnxruntime on the whole stream (``strided``) and the
onnxruntime stream (tcn_kws, itself checked against the offline model in
tests/compress/test_continual_zoo.py). Tolerance: 1e-5 x max|reference|.
"""
from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert.compress import continual
from edgert.errors import InputError
from edgert.runtime.stream import Stream, StreamError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compress"))
from continual_cases import CASES, session  # noqa: E402
from test_continual import as_model  # noqa: E402

RTOL = 1e-5
T, L = 16, 60


def close(got, ref) -> float:
    return float(np.max(np.abs(np.asarray(got) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Step models (.onnx) and their host bundles, built once."""
    root = tmp_path_factory.mktemp("stream")
    offline = CASES["strided"][0]
    step, _ = continual(as_model(offline(T)), 2)
    step.save(root / "strided_step.onnx")
    tcn, _ = continual(edgert.load("models_zoo/tcn_kws/model.onnx"), 2)
    tcn.save(root / "tcn_step.onnx")
    log = lambda _msg: None  # noqa: E731
    return {
        "root": root,
        "strided": root / "strided_step.onnx",
        "strided_full": offline(L),  # the offline network over the whole stream
        "tcn": root / "tcn_step.onnx",
        "strided_bundle": edgert.compile(root / "strided_step.onnx", target="host", output=root / "strided.edgert", log=log),
        "tcn_bundle": edgert.compile(root / "tcn_step.onnx", target="host", output=root / "tcn.edgert", log=log),
    }


def frames(shape, n=L, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def strided_reference(models, x):
    """Offline outputs at every position, from onnxruntime on all L frames: [positions, 1, C]."""
    full = session(models["strided_full"])
    y = full.run(None, {"x": np.concatenate(list(x), axis=2)})[0]  # [1, C, positions]
    return np.moveaxis(y, 2, 0)


def check_strided(models, outs, x):
    s = Stream(models["strided"])
    ref = strided_reference(models, x)
    emitted = [t for t in range(L) if outs[t] is not None]
    assert emitted == list(range(s.delay, L, s.stride))
    for j, t in enumerate(emitted):
        if j < len(ref):
            assert close(outs[t][..., 0], ref[j]) <= RTOL, t
    return len(emitted)


def test_onnxruntime_stream_equals_offline(models):
    s = Stream(models["strided"])
    assert (s.delay, s.stride) == (4, 6)
    x = frames([1, 2, 1])
    outs = s.steps(x)
    assert all(o is None for o in outs[: s.delay])
    assert check_strided(models, outs, x) >= (L - s.delay) // s.stride
    s.reset()
    again = s.steps(x[:, 0, :, 0])  # frames may leave out the batch and time axes of size 1
    assert all((a is None) == (b is None) and (a is None or np.array_equal(a, b)) for a, b in zip(outs, again, strict=True))


def test_tvm_bundle_stream_keeps_state_in_tvm(models):
    x = frames([1, 2, 1])
    s = Stream(models["strided_bundle"])
    assert s.backend == "tvm"
    outs = s.steps(x)
    check_strided(models, outs, x)
    import tvm

    # The state never left TVM: the runner holds TVM tensors, handed from one call to the next.
    assert s._runner.state and all(isinstance(v, tvm.runtime.Tensor) for v in s._runner.state.values())


@pytest.mark.parametrize("backend", ["host", "tvm"])
def test_tcn_kws_backends_agree_with_onnxruntime(models, backend):
    x = frames([1, 8, 1], n=100, seed=3)
    ref = Stream(models["tcn"]).steps(x)
    got = Stream(models["tcn_bundle"] if backend == "tvm" else models["tcn"], backend=None if backend == "tvm" else backend).steps(x)
    pairs = [(g, r) for g, r in zip(got, ref, strict=True) if r is not None]
    assert len(pairs) == 100 - 63 and all(g is not None for g, _ in pairs)
    assert max(close(g, r) for g, r in pairs) <= RTOL


def test_native_runner_stream_mode(models, tmp_path):
    from edgert.device import open_device
    from edgert.runtime.session import run_stream_on_device

    x = frames([1, 2, 1])
    with contextlib.closing(open_device("local")) as dev:
        res = run_stream_on_device(models["strided_bundle"], dev, x, repeat=2)
    (name, got), = res.outputs.items()
    ref_stream = [o for o in Stream(models["strided"]).steps(x) if o is not None]
    assert res.frames == L and res.emitted == len(ref_stream) == got.shape[0]
    assert max(close(g, r) for g, r in zip(got, ref_stream, strict=True)) <= RTOL
    assert res.step_ms["median"] > 0


@pytest.mark.qemu
def test_aarch64_stream_under_qemu(models, qemu, tmp_path):
    from edgert.device import open_device
    from edgert.runtime.session import run_stream_on_device

    bundle = edgert.compile(models["strided"], target="generic-aarch64", output=tmp_path / "arm.edgert", log=lambda m: None)
    assert bundle.arch == "aarch64"
    x = frames([1, 2, 1], seed=5)
    with contextlib.closing(open_device("qemu")) as dev:
        res = run_stream_on_device(bundle, dev, x)
    got = res.outputs[next(iter(res.outputs))]
    ref = strided_reference(models, x)
    assert got.shape[0] == res.emitted == len(range(4, L, 6))
    n = min(len(ref), got.shape[0])
    assert close(got[:n, ..., 0], ref[:n]) <= RTOL


def test_cli_run_stream(models, tmp_path):
    from edgert.cli import main

    x = frames([8], n=80, seed=7)  # tcn_kws frames without the batch and time axes
    np.save(tmp_path / "frames.npy", x)
    res = CliRunner().invoke(main, ["run", str(models["tcn_bundle"].path), "--stream", str(tmp_path / "frames.npy"),
                                    "--output-dir", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "stream: 80 frames, 17 outputs (delay 63, stride 1)" in res.output
    got = np.load(tmp_path / "out" / "logits.npy")
    ref = [o for o in Stream(models["tcn"]).steps(x) if o is not None]
    assert got.shape == (17, 1, 6) and max(close(g, r) for g, r in zip(got, ref, strict=True)) <= RTOL


@pytest.mark.parametrize("damage", ["pickled", "truncated", "huge_header"])
def test_cli_run_stream_checks_the_frames_file_before_loading(models, tmp_path, damage):
    """One error line, and no allocation of what a header claims (2**40 frames would be 32 TiB)."""
    from numpy.lib import format as npy

    from edgert.cli import main

    path = tmp_path / "frames.npy"
    if damage == "pickled":
        np.save(path, np.array([object()] * 3, dtype=object), allow_pickle=True)
    elif damage == "truncated":
        np.save(path, frames([8], n=80, seed=7))
        path.write_bytes(path.read_bytes()[:-100])
    else:
        with open(path, "wb") as f:
            npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 8)})
            f.write(b"\0" * 64)
    res = CliRunner().invoke(main, ["run", str(models["tcn_bundle"].path), "--stream", str(path)])
    assert res.exit_code == InputError.exit_code, res.output
    assert str(path) in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_cli_continual_writes_step_model(tmp_path):
    from edgert.cli import main

    res = CliRunner().invoke(main, ["continual", "models_zoo/tcn_kws/model.onnx", "-o", str(tmp_path / "s.onnx"),
                                    "--time-axis", "2"])
    assert res.exit_code == 0, res.output
    assert "delay 63 frames" in res.output and Stream(tmp_path / "s.onnx").delay == 63
    bad = CliRunner().invoke(main, ["continual", "models_zoo/digits_cnn/model.onnx", "-o", str(tmp_path / "d.onnx"),
                                    "--time-axis", "2"])
    assert bad.exit_code == 2 and "Flatten" in bad.output and not (tmp_path / "d.onnx").exists()


def test_refusals(models, tiny_bundle, tmp_path):
    with pytest.raises(StreamError, match="not a continual step model"):
        Stream("models_zoo/tcn_kws/model.onnx")
    with pytest.raises(StreamError, match="not a continual step model"):
        Stream(tiny_bundle("host"))
    with pytest.raises(StreamError, match="onnxruntime or host"):
        Stream(models["tcn"], backend="tvm")
    with pytest.raises(InputError, match=r"takes \[1, 8, 1\]"):
        Stream(models["tcn"]).step(np.zeros((1, 7, 1), np.float32))
    # the C runner refuses --stream on a bundle without states, naming the fix
    from edgert.device import open_device
    from edgert.runtime.session import run_stream_on_device

    plain = edgert.Bundle.open(tiny_bundle("host"))
    with contextlib.closing(open_device("local")) as dev, pytest.raises(InputError, match="edgert continual"):
        run_stream_on_device(plain, dev, np.zeros((3, 1), np.float32))
    # ... and a frames file of the wrong size
    b = models["tcn_bundle"]
    copy = Path(shutil.copytree(b.path, tmp_path / "b"))
    with contextlib.closing(open_device("local")) as dev, pytest.raises(InputError, match="frames"):
        run_stream_on_device(edgert.Bundle.open(copy), dev, np.zeros((3, 5), np.float32))


def _retargeted_step_bundle(src: Path, dest: Path, **change) -> Path:
    """A copy of a step bundle whose manifest names another target (the manifest is not in its own hash list)."""
    import json

    copy = Path(shutil.copytree(src, dest))
    m = json.loads((copy / "manifest.json").read_text())
    m["target"] = {**m["target"], **change}
    (copy / "manifest.json").write_text(json.dumps(m))
    return copy


@pytest.mark.parametrize("kind", ["cuda", "wrong arch"])
def test_stream_refuses_a_bundle_this_machine_cannot_run_before_loading(models, tmp_path, monkeypatch, kind):
    import platform

    import tvm

    from edgert.device import compat
    from edgert.errors import ArchMismatchError, TargetMismatchError

    src = models["tcn_bundle"].path
    if kind == "cuda":
        host_tvm = edgert.Bundle.open(src).target["tvm"]
        path = _retargeted_step_bundle(src, tmp_path / "b", device="cuda", name="jetson-orin-nano",
                                       tvm={"kind": "cuda", "arch": "sm_87", "host": host_tvm})
        # No GPU device node, whatever this machine has: the refusal must come from the check.
        monkeypatch.setattr(compat, "GPU_NODES", (str(tmp_path / "no-such-gpu-node"),))
        want, says, fix = TargetMismatchError, "no NVIDIA GPU", "compile for a CPU target"
    else:
        other = "x86_64" if platform.machine() == "aarch64" else "aarch64"
        path = _retargeted_step_bundle(src, tmp_path / "b", arch=other, name=f"generic-{other}")
        want, says, fix = ArchMismatchError, f"built for {other}", "rebuild with --target host"
    loaded = []
    monkeypatch.setattr(tvm.runtime, "load_module", lambda *a, **k: loaded.append(a) or pytest.fail("loaded"))
    with pytest.raises(want, match=says) as err:
        Stream(path)
    assert type(err.value) is want and fix in str(err.value)
    assert loaded == []


def test_stream_loads_only_the_bytes_it_checked(models, tmp_path):
    # The model library swapped after Bundle.open: the stream refuses it rather than loading it.
    from edgert.errors import BundleIntegrityError

    copy = Path(shutil.copytree(models["tcn_bundle"].path, tmp_path / "b"))
    bundle = edgert.Bundle.open(copy)
    lib = copy / bundle.manifest["runtime"]["model"]
    lib.write_bytes(lib.read_bytes() + b"\0")
    with pytest.raises(BundleIntegrityError, match="modified"):
        Stream(bundle)


@pytest.fixture(scope="module")
def every_case(tmp_path_factory):
    """case -> (step model path, its onnxruntime stream outputs on a random stream, the frames)."""
    root = tmp_path_factory.mktemp("cases")
    out = {}
    for name, (build, axis, _) in CASES.items():
        offline = build(T)
        step, _ = continual(as_model(offline), axis)
        path = root / f"{name}.onnx"
        step.save(path)
        shape = [d.dim_value for d in offline.graph.input[0].type.tensor_type.shape.dim]
        shape[axis] = L
        x = np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)
        x = np.stack([np.take(x, [t], axis=axis) for t in range(L)])
        out[name] = (path, Stream(path).steps(x), x)
    return out


def agree(got, ref) -> float:
    assert [g is None for g in got] == [r is None for r in ref]
    return max(close(g, r) for g, r in zip(got, ref, strict=True) if r is not None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_type_host_executor_and_tvm(every_case, case, tmp_path):
    """Each case's stream on the host executor and on a compiled host bundle equals onnxruntime's
    (whose stream equals the offline model: tests/compress/test_continual.py)."""
    path, ref, x = every_case[case]
    assert agree(Stream(path, backend="host").steps(x), ref) <= RTOL
    bundle = edgert.compile(path, target="host", output=tmp_path / "b.edgert", log=lambda m: None)
    assert agree(Stream(bundle).steps(x), ref) <= RTOL


@pytest.mark.qemu
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_type_aarch64_under_qemu(every_case, case, qemu, tmp_path):
    from edgert.device import open_device
    from edgert.runtime.session import run_stream_on_device

    path, ref, x = every_case[case]
    bundle = edgert.compile(path, target="generic-aarch64", output=tmp_path / "arm.edgert", log=lambda m: None)
    with contextlib.closing(open_device("qemu")) as dev:
        res = run_stream_on_device(bundle, dev, x)
    want = [r for r in ref if r is not None]
    got = res.outputs[next(iter(res.outputs))]
    assert res.emitted == len(want) == got.shape[0]
    assert max(close(g, r) for g, r in zip(got, want, strict=True)) <= RTOL
