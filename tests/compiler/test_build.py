"""Compiled bundles keep the accuracy of the model they were built from (judged with the zoo harness)."""
from edgert.zoo import evaluate, get


def test_bundles_keep_zoo_accuracy_in_process_and_under_qemu(qemu, tmp_path):
    import edgert

    zoo = get("digits_cnn")
    onnx_path = zoo.onnx_path
    host = edgert.compile(onnx_path, target="host", output=tmp_path / "h.edgert")
    in_process = evaluate("digits_cnn", host)
    assert in_process.agreement == 1.0 and in_process.backend == "bundle (in-process)"
    assert abs(in_process.accuracy - zoo.float_accuracy) <= 0.005
    arm = edgert.compile(onnx_path, target="generic-aarch64", output=tmp_path / "a.edgert")
    emulated = evaluate("digits_cnn", arm, device="qemu", limit=8)
    assert emulated.samples == 8 and emulated.agreement == 1.0


def test_static_models_skip_the_per_register_kills_dynamic_ones_keep_them():
    """KillAfterLastUse costs one VM call per tensor per run; with static shapes it frees nothing sooner."""
    import tvm
    from tvm import relax

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load
    from edgert.zoo import get

    tgt = load_target("host")
    ex, _ = pipeline.build(to_relax(load(get("tcn_kws").onnx_path)), tgt, "default")
    text = ex.as_text()
    assert "null_value" not in text and "call " in text

    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((n, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.add(relax.op.exp(x), relax.op.exp(x)))
        bb.emit_func_output(y)
    dynamic = bb.get()
    assert not pipeline._static_shapes(dynamic)
    ex = tvm.compile(relax.transform.LegalizeOps()(dynamic), target=tgt.tvm_target(),
                     relax_pipeline=pipeline.finalize_pipeline(tgt))
    assert "null_value" in ex.as_text()  # symbolic shapes: tensors are freed after their last use
