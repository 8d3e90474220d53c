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
