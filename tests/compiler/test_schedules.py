"""edgert's default schedules: every common operator gets a template, and results stay exact."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper


def _model(tmp_path, name, nodes, in_shape, inits=None, extra_inputs=()):
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape)), *extra_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _w(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32") * 0.2


def _conv(ci, co, k, stride=1, pad=None, group=1, dilation=1, relu=True, clip=False):
    pad = k // 2 * dilation if pad is None else pad
    nodes = [
        helper.make_node(
            "Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4, group=group, dilations=[dilation] * 2
        )
    ]
    if clip:
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    else:
        nodes.append(helper.make_node("Relu" if relu else "Identity", ["c"], ["y"]))
    inits = {"w": _w(co, ci // group, k, k), "b": _w(co, seed=2)}
    if clip:
        inits |= {"lo": np.array(0.0, "float32"), "hi": np.array(6.0, "float32")}
    return nodes, inits


CASES = {
    "conv3x3": lambda: (*_conv(16, 32, 3), (1, 16, 14, 14)),
    "conv3x3_s2_odd": lambda: (*_conv(12, 24, 3, stride=2), (1, 12, 15, 15)),
    "conv7x7_c3": lambda: (*_conv(3, 16, 7, stride=2), (1, 3, 32, 32)),
    "conv1x1": lambda: (*_conv(24, 40, 1, pad=0), (1, 24, 9, 9)),
    "depthwise_relu6": lambda: (*_conv(32, 32, 3, group=32, clip=True), (1, 32, 12, 12)),
    "grouped": lambda: (*_conv(16, 32, 3, group=4), (1, 16, 10, 10)),
    "dilated": lambda: (*_conv(8, 8, 3, dilation=2), (1, 8, 13, 13)),
    "conv1d_causal": lambda: (
        [
            helper.make_node("Pad", ["x", "pads"], ["p"]),
            helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3], dilations=[2]),
        ],
        {"pads": np.array([0, 0, 4, 0, 0, 0], "int64"), "w": _w(24, 16, 3)},
        (1, 16, 50),
    ),
    # A low-rank pair (k x k conv to r channels without bias, then 1x1): its functions once
    # had two parameters of one name, and the weight repacking picked the wrong one.
    "lowrank_pair": lambda: (
        [
            helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c0"], ["h"]),
            helper.make_node("Conv", ["h", "wa"], ["r"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["r", "wb", "b"], ["c"], kernel_shape=[1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        {"w0": _w(16, 8, 3, 3, seed=6), "b0": _w(16, seed=7), "wa": _w(16, 16, 3, 3), "wb": _w(32, 16, 1, 1, seed=4),
         "b": _w(32, seed=5)},
        (1, 8, 8, 8),
    ),
    # A matmul whose output gains a unit axis before its ReLU (a streaming conv step).
    "matmul_unit_reshape_relu": lambda: (
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Reshape", ["m", "shape"], ["r"]),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        {"w": _w(48, 32), "shape": np.array([1, 32, 1], "int64")},
        (1, 48),
    ),
    "gemm": lambda: ([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"w": _w(40, 72), "b": _w(40)}, (1, 72)),
    # Weight times a column (a continual step model's conv): rewritten to a row times W^T.
    "matmul_column_relu": lambda: (
        [
            helper.make_node("MatMul", ["w", "x"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        {"w": _w(1, 40, 96), "b": _w(40, 1, seed=2)},
        (1, 96, 1),
    ),
    "matmul_batched": lambda: ([helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": _w(32, 48)}, (2, 10, 32)),
    "maxpool": lambda: (
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])],
        {},
        (1, 16, 15, 15),
    ),
    "avgpool_global": lambda: ([helper.make_node("GlobalAveragePool", ["x"], ["y"])], {}, (1, 24, 7, 7)),
    "softmax": lambda: ([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], {}, (2, 4, 37)),
    "layernorm": lambda: (
        [helper.make_node("LayerNormalization", ["x", "g", "bb"], ["y"], axis=-1)],
        {"g": _w(64), "bb": _w(64, seed=3)},
        (1, 10, 64),
    ),
    "transpose_add": lambda: (
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Add", ["t", "a"], ["y"])],
        {"a": _w(16)},
        (1, 16, 6, 6),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_default_schedules_cover_op_and_match_reference(case, tmp_path):
    import tvm
    from tvm import relax

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    nodes, inits, shape = CASES[case]()
    model = load(_model(tmp_path, case, nodes, shape, inits))
    tgt = load_target("host")
    ex, report = pipeline.build(to_relax(model), tgt, mode="default")
    # Nothing may fall back to TVM's naive loops for these common operators.
    assert report.counts.naive == [], report.counts.naive
    assert len(report.counts.default) >= 1
    x = model.random_inputs(3)
    (ref,) = model.reference_run(x)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x["x"])).numpy()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


def test_relu6_fuses_into_channels_last_conv(tmp_path):
    """Clip (ReLU6) must not force the activation back to NCHW around every conv."""
    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    nodes, inits, shape = CASES["depthwise_relu6"]()
    model = load(_model(tmp_path, "dw", nodes, shape, inits))
    mod = pipeline.fuse(to_relax(model), load_target("host"))
    names = [gv.name_hint for gv in mod.get_global_vars()]
    conv = [n for n in names if "conv2d" in n]
    assert len(conv) == 1 and "maximum" in conv[0] and "minimum" in conv[0], names
    # Only the model's own input/output transposes remain (NCHW <-> NHWC once each).
    assert sum("transpose" in n for n in names) <= 2, names


def test_enumerated_choices_are_distinct_and_all_correct(tmp_path):
    """What `edgert tune` measures: several different schedules of one conv, all exact."""
    import tvm

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.schedules import CpuInfo, enumerate_space
    from edgert.compiler.targets import load_target
    from edgert.compiler.tuning import _random_args, task_module
    from edgert.model import load

    nodes, inits, shape = CASES["conv3x3"]()
    model = load(_model(tmp_path, "c", nodes, shape, inits))
    tgt = load_target("host")
    mod = pipeline.fuse(to_relax(model), tgt)
    func = next(f for gv, f in mod.functions.items() if "conv2d" in gv.name_hint)
    task = task_module(func)
    space = enumerate_space(task["main"], CpuInfo.from_target(tgt))
    assert len(space) >= 4
    dev = tvm.cpu()
    outs = []
    for sch in [space[0], space[len(space) // 2], space[-1]]:
        args = _random_args(task["main"], dev, np)
        lib = tvm.compile(sch.mod, target=tgt.tvm_target())
        lib["main"](*args)
        outs.append(args[-1].numpy())
    plain = _random_args(task["main"], dev, np)
    tvm.compile(task, target=tgt.tvm_target())["main"](*plain)
    for out in outs:
        np.testing.assert_allclose(out, plain[-1].numpy(), rtol=1e-4, atol=1e-4)


def test_cpu_info_follows_target():
    from edgert.compiler.schedules import CpuInfo
    from edgert.compiler.targets import load_target

    rpi = CpuInfo.from_target(load_target("rpi4"))
    assert (rpi.lanes, rpi.vector_registers, rpi.num_cores) == (4, 32, 4)


def test_unit_axis_reshape_joins_the_matmul_kernel(tmp_path):
    """[1, C] -> [1, C, 1] keeps every element in place: the ReLU after it fuses into the matmul."""
    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    nodes, inits, shape = CASES["matmul_unit_reshape_relu"]()
    mod = pipeline.fuse(to_relax(load(_model(tmp_path, "mur", nodes, shape, inits))), load_target("host"))
    names = [gv.name_hint for gv in mod.get_global_vars() if gv.name_hint != "main"]
    assert len(names) == 1 and all(k in names[0] for k in ("matmul", "reshape", "relu")), names


# -- edgert's TIR pipeline (edgert/compiler/tir_lowering.py): register tiles on the stack
def _conv_func(tmp_path, case):
    """The fused, unscheduled conv PrimFunc of CASES[case], and the host target."""
    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    nodes, inits, shape = CASES[case]()
    tgt = load_target("host")
    mod = pipeline.fuse(to_relax(load(_model(tmp_path, case, nodes, shape, inits))), tgt)
    return next(f for gv, f in mod.functions.items() if "conv2d" in gv.name_hint), tgt


def _scheduled_conv(tmp_path, case):
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from edgert.compiler.schedules import CpuInfo, schedule
    from edgert.compiler.tuning import task_module

    func, tgt = _conv_func(tmp_path, case)
    sch, rule, _ = schedule(task_module(func)["main"], CpuInfo.from_target(tgt))
    assert rule == "tiled_reduction"
    # The weight repacking block runs once at compile time in a real build (prepack_weights).
    return RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(sch.mod), tgt


def _build(mod, tgt, tir_pipeline):
    import tvm

    lib = tvm.compile(mod, target=tgt.tvm_target(), tir_pipeline=tir_pipeline)
    return lib, lib.mod.inspect_source("asm")


def test_register_tiles_leave_the_workspace_and_results_stay_exact(tmp_path):
    import tvm

    from edgert.compiler import tir_lowering
    from edgert.compiler.tuning import _random_args

    mod, tgt = _scheduled_conv(tmp_path, "depthwise_relu6")
    plain, plain_asm = _build(mod, tgt, "default")
    ours, ours_asm = _build(mod, tgt, tir_lowering.register())
    # TVM's own lowering: one allocate/free call pair per tile of outputs.
    assert "TVMBackendAllocWorkspace" in plain_asm
    assert "TVMBackendAllocWorkspace" not in ours_asm
    dev = tvm.cpu()
    a = _random_args(mod["main"], dev, np)
    b = [tvm.runtime.tensor(x.numpy()) for x in a]
    plain["main"](*a)
    ours["main"](*b)
    np.testing.assert_array_equal(a[-1].numpy(), b[-1].numpy())


def test_only_small_local_buffers_are_marked():
    import tvm
    from tvm import tirx

    from edgert.compiler import tir_lowering

    small = tirx.decl_buffer((8,), "float32x16", scope="local")
    large = tirx.decl_buffer((4096,), "float32", scope="local")
    shared = tirx.decl_buffer((8,), "float32", scope="global")
    marks = [tir_lowering._small_local(b) for b in (small, large, shared)]
    assert marks == [True, False, False]
    assert tir_lowering.register() in tvm.tirx.compilation_pipeline.PIPELINE_MAP


def test_column_matmul_becomes_a_row_matmul_with_its_epilogue(tmp_path):
    """W [1, M, K] x [1, K, 1]: the kernel's output axis is M (vectorised), bias and ReLU fused."""
    import tvm

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    nodes, inits, shape = CASES["matmul_column_relu"]()
    mod = pipeline.fuse(to_relax(load(_model(tmp_path, "col", nodes, shape, inits))), load_target("host"))
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    # The input's unit-axis reshape stays a function here; the build turns it into a view
    # (RewriteDataflowReshape), so the kernel count is one.
    kernels = {n: f for n, f in funcs.items() if not n.startswith("reshape")}
    assert len(kernels) == 1, sorted(funcs)
    (name, func), = kernels.items()
    assert "matmul" in name and "relu" in name, name
    shapes = sorted([int(d) for d in p.shape] for p in func.params)
    assert [1, 1, 96] in shapes and [1, 96, 40] in shapes, shapes  # the row and W^T


def _parallel_loops(func) -> int:
    return func.script().count("T.parallel(")


def test_small_reductions_stay_on_the_calling_thread(tmp_path, monkeypatch):
    """Waking the thread pool costs more than a second core saves on a kernel under ~256k multiply-adds."""
    from edgert.compiler.schedules import base

    monkeypatch.delenv("EDGERT_PARALLEL_MIN_MACS", raising=False)
    assert 9 * 9 * 40 * 24 < base.PARALLEL_MIN_MACS  # CASES["conv1x1"], at the default bar
    mod, _ = _scheduled_conv(tmp_path, "conv1x1")
    assert _parallel_loops(mod["main"]) == 0
    macs = 14 * 14 * 32 * 16 * 9  # CASES["conv3x3"]
    monkeypatch.setenv("EDGERT_PARALLEL_MIN_MACS", str(macs + 1))
    mod, _ = _scheduled_conv(tmp_path, "conv3x3")
    assert _parallel_loops(mod["main"]) == 0
    monkeypatch.setenv("EDGERT_PARALLEL_MIN_MACS", str(macs))
    mod, _ = _scheduled_conv(tmp_path, "conv3x3")
    assert _parallel_loops(mod["main"]) == 1


def test_records_that_split_a_small_kernel_are_passed_over(tmp_path, monkeypatch):
    """A tuning record made before the parallel bar replays its parallel loop on a small kernel: not applied."""
    from edgert.compiler import tuning
    from edgert.compiler.schedules import CpuInfo, schedule

    def scheduled(func, tgt):
        return schedule(tuning.task_module(func)["main"], CpuInfo.from_target(tgt))[0].mod["main"]

    small, tgt = _conv_func(tmp_path, "conv1x1")  # 78k multiply-adds
    large, _ = _conv_func(tmp_path, "conv3x3")  # 903k
    monkeypatch.setenv("EDGERT_PARALLEL_MIN_MACS", "0")  # every kernel split, as the old records are
    old_small, old_large = scheduled(small, tgt), scheduled(large, tgt)
    assert _parallel_loops(old_small) == _parallel_loops(old_large) == 1
    monkeypatch.delenv("EDGERT_PARALLEL_MIN_MACS")
    assert tuning._splits_a_small_kernel(small, old_small)
    assert not tuning._splits_a_small_kernel(large, old_large)  # above the bar: the split is kept
    assert not tuning._splits_a_small_kernel(small, scheduled(small, tgt))  # today's record: single-threaded


def _gelu_matmul(tmp_path):
    """``GELU(x @ W + b)`` written as ONNX exports it: x * 0.5 * (1 + Erf(x / sqrt 2))."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["h"]),
        helper.make_node("Div", ["h", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Mul", ["h", "e1"], ["p"]),
        helper.make_node("Mul", ["p", "half"], ["y"]),
    ]
    inits = {"w": _w(64, 128), "b": _w(128, seed=2), "sqrt2": np.array(np.sqrt(2), np.float32),
             "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}
    return _model(tmp_path, "gelu", nodes, (16, 64), inits)


def test_branching_epilogue_runs_on_the_register_tile_and_erf_vectorises(tmp_path):
    """A GELU after a matmul reads the product twice (the erf branch and the multiply): the whole
    epilogue is folded into the write-back of the register tile, and erf is TOPI's polynomial,
    not one libm call per element, so the stores are vector stores (vit_digits' MLP matmul:
    12.5 -> 3 us). The result stays within float32 rounding of onnxruntime."""
    import tvm
    from tvm import relax, s_tir
    from tvm.tirx import ForKind

    from edgert.compiler import pipeline
    from edgert.compiler.build import to_relax
    from edgert.compiler.targets import load_target
    from edgert.model import load

    model = load(_gelu_matmul(tmp_path))
    tgt = load_target("host")
    lowered, report = pipeline.lower(to_relax(model), tgt, mode="default")
    funcs = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(funcs) == 1 and not report.counts.naive
    func = funcs[0]
    assert "T.erf(" not in func.script()
    sch = s_tir.Schedule(func)
    out = func.params[-1].name
    writers = [b for b in sch.get_child_blocks(sch.get_sblock("root"))
               if any(w.source.name == out for w in sch.get(b).writes)]
    assert len(writers) == 1
    assert any(sch.get(lp).kind == ForKind.VECTORIZED for lp in sch.get_loops(writers[0]))
    ex, _ = pipeline.build(to_relax(model), tgt, mode="default")
    x = model.random_inputs(4)
    (ref,) = model.reference_run(x)
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x["x"])).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
