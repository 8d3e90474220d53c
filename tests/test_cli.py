"""End to end through the command line, in-process with click's CliRunner."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import main

# A hand-built conv net, MobileNetV2-, ResNet- and ShuffleNetV2-style graphs, and a TFLite model.
MODELS = ["convnet_tiny.onnx", "mobilenetv2_mini.onnx", "resnet_mini.onnx", "shufflenet_mini.onnx", "convnet_tiny.tflite"]


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0]
    return lines[0]


def test_targets_lists_boards():
    r = cli("targets")
    assert r.exit_code == 0
    for name in ("host", "generic-aarch64", "rpi4", "rpi5", "jetson-orin-nano", "jetson-agx-orin", "android-arm64"):
        assert name in r.stdout
    assert "sm_87" in r.stdout and "+dotprod" in r.stdout


def test_unknown_target_one_line(data_dir, tmp_path):
    r = cli("compile", data_dir / "convnet_tiny.onnx", "--target", "rpi9", "-o", tmp_path / "x")
    one_line_error(r, 2, "unknown target 'rpi9'", "rpi4")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("model", MODELS)
def test_compile_host_run_local_check(model, data_dir, tmp_path):
    out = tmp_path / "b.edgert"
    r = cli("compile", data_dir / model, "--target", "host", "-o", out)
    assert r.exit_code == 0, r.output
    r = cli("run", out, "--device", "local", "--check", "--output-dir", tmp_path / "outs")
    assert r.exit_code == 0, r.output
    assert "ok" in r.stdout.splitlines()[-1]
    saved = list((tmp_path / "outs").glob("*.npy"))
    assert len(saved) == 1 and np.load(saved[0]).ndim == 2


@pytest.mark.qemu
@pytest.mark.parametrize("model", MODELS)
def test_compile_aarch64_run_qemu_check(model, data_dir, tmp_path, qemu):
    out = tmp_path / "b.edgert"
    r = cli("compile", data_dir / model, "--target", "generic-aarch64", "-o", out)
    assert r.exit_code == 0, r.output
    from edgert.bundle import Bundle
    from edgert.compiler.toolchain import elf_machine

    b = Bundle.open(out)
    assert {elf_machine(b.path / rel) for rel in ("lib/model.so", "bin/edgert-run", "lib/libtvm_runtime.so")} == {"aarch64"}
    r = cli("run", out, "--device", "qemu", "--check")
    assert r.exit_code == 0, r.output
    assert "ok" in r.stdout


def test_aarch64_bundle_refused_locally(compiled):
    b = compiled("convnet_tiny.onnx", "generic-aarch64")
    r = cli("run", b.path, "--device", "local")
    one_line_error(r, 5, "aarch64", "--device qemu")


def test_tampered_bundle_one_line(compiled, tmp_path):
    b = compiled("convnet_tiny.onnx", "host")
    copy = tmp_path / "t.edgert"
    shutil.copytree(b.path, copy)
    with open(copy / "lib" / "model.so", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    r = cli("run", copy, "--check")
    one_line_error(r, 5, "integrity", "lib/model.so")


def test_bad_input_shape_one_line(compiled, tmp_path):
    b = compiled("convnet_tiny.onnx", "host")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    r = cli("run", b.path, "--input", f"input={tmp_path / 'x.npy'}")
    one_line_error(r, 2, "input", "1x3x16x16", "1x3x32x32")


def test_user_input_and_image(compiled, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    b = compiled("convnet_tiny.onnx", "host")
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float64)  # float64 is cast
    np.save(tmp_path / "x.npy", x)
    r = cli("run", b.path, "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "o")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "o" / "output.npy")
    ref = b.run({"input": x.astype(np.float32)})["output"]
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))

    img = (np.arange(48 * 40 * 3) % 256).astype(np.uint8).reshape(40, 48, 3)
    Image.fromarray(img).save(tmp_path / "cat.png")
    r = cli("run", b.path, "--input", tmp_path / "cat.png", "--output-dir", tmp_path / "o2")
    assert r.exit_code == 0, r.output
    resized = np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR), np.float32) / 255.0
    want = b.run({"input": resized.transpose(2, 0, 1)[None]})["output"]
    assert np.allclose(np.load(tmp_path / "o2" / "output.npy"), want, rtol=1e-5, atol=1e-6)


def test_corrupt_model_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    r = cli("compile", bad, "-o", tmp_path / "out")
    one_line_error(r, 2, "bad.onnx")
    assert not (tmp_path / "out").exists()


def test_dynamic_input_needs_pin(data_dir, tmp_path):
    r = cli("compile", data_dir / "convnet_dynbatch.onnx", "-o", tmp_path / "d")
    one_line_error(r, 2, "'input'", "--input-shape input=1x3x32x32")
    r = cli("compile", data_dir / "convnet_dynbatch.onnx", "--input-shape", "input=2x3x32x32", "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    r = cli("run", tmp_path / "d", "--check")
    assert r.exit_code == 0, r.output


def test_unsupported_ops_listed(data_dir, tmp_path):
    r = cli("compile", data_dir / "unsupported_ops.onnx", "-o", tmp_path / "u")
    line = one_line_error(r, 2, "unsupported operator")
    assert line.count("nodes:") >= 2


def test_external_data_and_tar_gz(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ext.tar.gz"
    r = cli("compile", data_dir / "convnet_extdata.onnx", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file() and not (tmp_path / "ext.dir").exists()
    r = cli("run", out, "--check")
    assert r.exit_code == 0, r.output


@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc (CUDA toolkit) is not installed on this machine")
def test_jetson_bundle_holds_sm87_machine_code(data_dir, tmp_path):
    from edgert.bundle import Bundle
    from edgert.compiler.cuda import cuda_elf_arches
    from edgert.compiler.toolchain import elf_machine

    out = tmp_path / "j.edgert"
    r = cli("compile", data_dir / "convnet_tiny.onnx", "--target", "jetson-orin-nano", "-o", out)
    assert r.exit_code == 0, r.output
    b = Bundle.open(out)
    assert cuda_elf_arches(b.path / "lib" / "model.so") == ["sm_87"]
    assert elf_machine(b.path / "lib" / "libtvm_runtime_cuda.so") == "aarch64"
    assert b.manifest["runtime"]["device"] == "cuda" and b.manifest["versions"]["cuda"][0].isdigit()


def test_existing_non_bundle_output_is_never_replaced(data_dir, tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    r = cli("compile", data_dir / "convnet_tiny.onnx", "-o", precious)
    one_line_error(r, 5, "not an edgert bundle")
    assert (precious / "notes.txt").read_text() == "keep me"


def test_deploy_model_compiles_first_then_bundle_is_unchanged(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "cache"))
    model = tiny_bundle("host").parent / "tiny.onnx"  # one conv: compiles in seconds
    r = cli("deploy", model, "--target", "host", "--device", "local", "-o", tmp_path / "b.edgert")
    assert r.exit_code == 0, r.output
    assert f"deployed: {tmp_path / 'cache' / 'device' / 'local' / 'bundles'}" in r.stdout
    assert "golden check on local: ok" in r.stdout and (tmp_path / "b.edgert" / "manifest.json").is_file()
    again = cli("deploy", tmp_path / "b.edgert", "--device", "local", "--no-check")
    assert again.exit_code == 0 and "sent 0 file(s)" in again.stdout and "golden check" not in again.stdout


def test_deploy_usage_errors_one_line(data_dir, compiled, tmp_path):
    bundle = compiled("convnet_tiny.onnx", "host").path
    one_line_error(cli("deploy", data_dir / "convnet_tiny.onnx", "--device", "local"), 1, "pass --target NAME")
    one_line_error(cli("deploy", bundle, "--device", "local", "--target", "rpi4"), 1, "already compiled")
    one_line_error(cli("deploy", bundle, "--device", "pi@board"), 2, "ssh://pi@board")
    one_line_error(cli("deploy", data_dir / "convnet_tiny.onnx", "--target", "rpi4", "--device", "local",
                       "-o", tmp_path / "x"), 5, "rpi4", "aarch64")
    assert not (tmp_path / "x").exists()  # refused before compiling
