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


def _two_input_module():
    """main(x [2, 4], y [8]) -> (exp(x), reshape(y, [2, 4])): x goes only to a kernel, y to the VM's reshape."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 4), "float32"))
    y = relax.Var("y", relax.TensorType((8,), "float32"))
    with bb.function("main", [x, y]):
        with bb.dataflow():
            out = bb.emit_output(relax.Tuple([relax.op.exp(x), relax.op.reshape(y, (2, 4))]))
        bb.emit_func_output(out)
    return relax.transform.LegalizeOps()(bb.get())


def test_static_bundles_run_a_compiled_vm_with_an_identical_bytecode_twin(tmp_path):
    """main is machine code (no interpreter between calls); main__bytecode, which per-op hooks need, gives the same outputs."""
    import numpy as np
    import tvm
    from tvm import relax

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load
    from edgert.zoo import get

    tgt = load_target("host")
    model = load(get("tcn_kws").onnx_path)
    ex, _ = pipeline.build(to_relax(model), tgt, "default")
    ex.export_library(str(tmp_path / "m.so"))
    lib = tvm.runtime.load_module(str(tmp_path / "m.so"))
    assert lib.implements_function("__vmtir__main", True)
    assert not lib.implements_function(f"__vmtir__main{pipeline.BYTECODE_SUFFIX}", True)
    vm = relax.VirtualMachine(lib, tvm.cpu())
    x = np.random.default_rng(0).standard_normal(model.inputs[0].shape).astype(np.float32)
    compiled = vm["main"](tvm.runtime.tensor(x)).numpy()
    bytecode = vm[f"main{pipeline.BYTECODE_SUFFIX}"](tvm.runtime.tensor(x)).numpy()
    assert compiled.shape == tuple(model.outputs[0].shape) and np.abs(compiled).max() > 0
    np.testing.assert_array_equal(compiled, bytecode)


def test_entry_checks_are_dropped_only_for_parameters_that_kernels_check(tmp_path):
    import numpy as np
    import pytest
    import tvm
    from tvm import relax

    from edgert.compiler import pipeline, tir_lowering
    from edgert.compiler.targets import load_target

    tgt = load_target("host")
    target = tgt.tvm_target()
    with target:
        mod = pipeline.finalize_pipeline(tgt)(_two_input_module())
    checked = [c.args[0].name for c in _extern_calls(mod["main"]) if c.op.global_symbol in
               ("vm.builtin.check_tensor_info", "vm.builtin.match_shape")]
    assert checked == ["y", "y"]  # x's checks are gone; y's (read by vm.builtin.reshape) stay

    ex = pipeline.link_compiled(mod, target, tir_lowering.register())
    ex.export_library(str(tmp_path / "m.so"))
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "m.so")), tvm.cpu())
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    ex_, rs = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(x.reshape(8)))
    np.testing.assert_allclose(ex_.numpy(), np.exp(x), rtol=1e-6)
    np.testing.assert_array_equal(rs.numpy(), x)
    for fn in ("main", f"main{pipeline.BYTECODE_SUFFIX}"):
        for bad_x, bad_y in (((2, 5), (8,)), ((8,), (8,)), ((2, 4), (9,))):
            with pytest.raises((ValueError, TypeError, RuntimeError)):  # the kernel's own entry refuses x; the VM refuses y
                vm[fn](tvm.runtime.tensor(np.zeros(bad_x, np.float32)), tvm.runtime.tensor(np.zeros(bad_y, np.float32)))
        with pytest.raises(TypeError):
            vm[fn](tvm.runtime.tensor(x.astype(np.float64)), tvm.runtime.tensor(x.reshape(8)))


def _extern_calls(func):
    from tvm import relax
    from tvm.relax import PyExprVisitor, expr_functor

    found = []

    @expr_functor.visitor
    class _Calls(PyExprVisitor):
        def visit_call_(self, call):
            if isinstance(call.op, relax.ExternFunc):
                found.append(call)
            super().visit_call_(call)

    _Calls().visit_expr(func)
    return found
