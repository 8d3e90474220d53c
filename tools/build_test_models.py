"""Write the small random-weight test models in tests/data/.

Needs only numpy, onnx, flatbuffers and tflite (the `tflite` package's
generated schema builders write the .tflite files), plus onnxruntime and
ai-edge-litert to check every model runs -- all in
`pip install 'edgert[reference]'`. No PyTorch or
TensorFlow: the ONNX graphs are built with onnx.helper and the TFLite
flatbuffer is written directly, so the output is byte-identical on every run.

Usage:  python tools/build_test_models.py [OUT_DIR]   (default tests/data)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR of opset 17's release, so older runtimes read the files too


class Graph:
    """Collects nodes and seeded weights; every node gets a name for error messages.

    ``m2`` tracks each tensor's expected second moment for a standard-normal
    input, so BatchNormalization gets the running variance a trained net would
    have measured there (its outputs are then ~unit scale, as in a real net).
    Analytic rather than measured with onnxruntime, so the bytes never depend
    on the machine's float rounding.
    """

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.m2 = {"input": 1.0}

    def const(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
        return name

    def op(self, op_type: str, name: str, inputs: list[str], **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        m2 = self.m2.get(inputs[0], 1.0)
        # ReLU(6) of a zero-mean signal keeps half its energy; Add of independent signals sums
        # it; the max of 4 (9) ReLU'd Gaussians has ~3x (~5x) the energy of one.
        if op_type == "Add":
            m2 = sum(self.m2[i] for i in inputs)
        elif op_type in ("Relu", "Clip"):
            m2 /= 2
        elif op_type == "MaxPool":
            m2 *= {4: 3.0, 9: 5.0}[int(np.prod(attrs["kernel_shape"]))]
        self.m2[name] = m2
        return name

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, bias=False) -> str:
        fan_in = cin // group * k * k
        # He init keeps the activation variance ~constant through ReLU layers.
        w = self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / fan_in)
        inputs = [x, self.const(f"{name}.weight", w)]
        if bias:
            inputs.append(self.const(f"{name}.bias", self.rng.standard_normal(cout) * 0.1))
        out = self.op("Conv", name, inputs, kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=group)
        self.m2[out] = 2.0 * self.m2[x]
        return out

    def bn(self, x: str, name: str, c: int) -> str:
        # Stats of a trained net: gamma near 1, small shifts, running variance close to
        # (and always positive like) the input's real per-channel variance.
        r, m2 = self.rng, self.m2[x]
        params = [
            self.const(f"{name}.gamma", r.uniform(0.5, 1.5, c)),
            self.const(f"{name}.beta", r.normal(0.0, 0.1, c)),
            self.const(f"{name}.mean", r.normal(0.0, 0.1 * np.sqrt(m2), c)),
            self.const(f"{name}.var", m2 * r.uniform(0.8, 1.25, c)),
        ]
        out = self.op("BatchNormalization", name, [x, *params], epsilon=1e-5)
        self.m2[out] = 1.0
        return out

    def relu6(self, x: str, name: str) -> str:
        if "relu6.min" not in {t.name for t in self.inits}:
            self.const("relu6.min", np.array(0.0))
            self.const("relu6.max", np.array(6.0))
        return self.op("Clip", name, [x, "relu6.min", "relu6.max"])

    def head(self, x: str, c: int, classes: int = 10) -> str:
        x = self.op("GlobalAveragePool", "gap", [x])
        x = self.op("Flatten", "flatten", [x], axis=1)
        w = self.rng.standard_normal((classes, c)) * np.sqrt(1.0 / c)
        b = self.rng.standard_normal(classes) * 0.1
        return self.op("Gemm", "fc", [x, self.const("fc.weight", w), self.const("fc.bias", b)], transB=1)

    def model(self, name: str, in_shape: list, out_shape: list) -> onnx.ModelProto:
        self.nodes[-1].output[0] = "output"  # stable I/O names: input -> output
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edgert-tools", ir_version=IR_VERSION)
        onnx.checker.check_model(m, full_check=True)
        return m


def convnet_tiny(name: str = "convnet_tiny", batch: int | str = 1) -> onnx.ModelProto:
    g = Graph(seed=1)
    x = g.conv("input", "conv1", 3, 8, 3, bias=True)
    x = g.bn(x, "bn1", 8)
    x = g.op("Relu", "relu1", [x])
    x = g.op("MaxPool", "pool1", [x], kernel_shape=[2, 2], strides=[2, 2])
    x = g.conv(x, "conv2", 8, 16, 3, bias=True)
    g.head(x, 16)
    return g.model(name, [batch, 3, 32, 32], [batch, 10])


def mobilenetv2_mini() -> onnx.ModelProto:
    g = Graph(seed=2)
    x = g.relu6(g.bn(g.conv("input", "stem", 3, 16, 3, stride=2), "stem.bn", 16), "stem.act")
    cin = 16
    # (expansion, out channels, stride): stride-1 equal-channel blocks get the residual Add.
    for i, (t, cout, s) in enumerate([(2, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1)]):
        p, hidden, inp = f"block{i}", cin * t, x
        x = g.relu6(g.bn(g.conv(x, f"{p}.expand", cin, hidden, 1), f"{p}.expand.bn", hidden), f"{p}.expand.act")
        x = g.conv(x, f"{p}.dw", hidden, hidden, 3, stride=s, group=hidden)
        x = g.relu6(g.bn(x, f"{p}.dw.bn", hidden), f"{p}.dw.act")
        x = g.bn(g.conv(x, f"{p}.project", hidden, cout, 1), f"{p}.project.bn", cout)
        if s == 1 and cin == cout:
            x = g.op("Add", f"{p}.add", [inp, x])
        cin = cout
    x = g.relu6(g.bn(g.conv(x, "last", cin, 64, 1), "last.bn", 64), "last.act")
    g.head(x, 64)
    return g.model("mobilenetv2_mini", [1, 3, 64, 64], [1, 10])


def resnet_mini() -> onnx.ModelProto:
    g = Graph(seed=3)
    x = g.op("Relu", "stem.relu", [g.bn(g.conv("input", "stem", 3, 16, 7, stride=2), "stem.bn", 16)])
    x = g.op("MaxPool", "stem.pool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 16
    for stage, cout in enumerate([16, 32]):
        for b in range(2):
            p, s = f"layer{stage}.{b}", 2 if stage > 0 and b == 0 else 1
            y = g.op("Relu", f"{p}.relu1", [g.bn(g.conv(x, f"{p}.conv1", cin, cout, 3, stride=s), f"{p}.bn1", cout)])
            y = g.bn(g.conv(y, f"{p}.conv2", cout, cout, 3), f"{p}.bn2", cout)
            if s != 1 or cin != cout:
                x = g.bn(g.conv(x, f"{p}.down", cin, cout, 1, stride=s), f"{p}.down.bn", cout)
            x = g.op("Relu", f"{p}.relu2", [g.op("Add", f"{p}.add", [x, y])])
            cin = cout
    g.head(x, cin)
    return g.model("resnet_mini", [1, 3, 64, 64], [1, 10])


def shufflenet_mini() -> onnx.ModelProto:
    """ShuffleNetV2-style block with the shape arithmetic torch.onnx emits for chunk and channel_shuffle.

    Shape -> Gather (1-D index) -> Add/Div/Mul feeds Slice ends, and Shape -> Gather -> Div -> Cast ->
    Unsqueeze -> Concat feeds Reshape: TVM 0.27's ONNX frontend fails on this unless edgert folds it.
    """
    g = Graph(seed=5)

    def iconst(name: str, value: int, vector: bool = True) -> str:
        g.inits.append(numpy_helper.from_array(np.array([value] if vector else value, np.int64), name))
        g.m2[name] = 0.0  # shape arithmetic, not an activation
        return name

    c = 16
    x = g.op("Relu", "stem.relu", [g.bn(g.conv("input", "stem.conv", 3, c, 3, stride=2), "stem.bn", c)])
    # x1, x2 = x.chunk(2, dim=1)
    shape = g.op("Shape", "chunk.shape", [x])
    chans = g.op("Gather", "chunk.gather", [shape, iconst("idx1", 1)], axis=0)
    half = g.op("Div", "chunk.div", [g.op("Add", "chunk.add", [chans, iconst("one", 1)]), iconst("two", 2)])
    end1 = g.op("Mul", "chunk.mul1", [half, iconst("one_b", 1)])
    end2 = g.op("Mul", "chunk.mul2", [half, iconst("two_b", 2)])
    x1 = g.op("Slice", "chunk.slice1", [x, iconst("zero", 0), end1, "idx1"])
    x2 = g.op("Slice", "chunk.slice2", [x, end1, end2, "idx1"])
    h = c // 2
    b = g.op("Relu", "branch.relu1", [g.bn(g.conv(x2, "branch.pw1", h, h, 1), "branch.bn1", h)])
    b = g.bn(g.conv(b, "branch.dw", h, h, 3, group=h), "branch.bn2", h)
    b = g.op("Relu", "branch.relu2", [g.bn(g.conv(b, "branch.pw2", h, h, 1), "branch.bn3", h)])
    cat = g.op("Concat", "concat", [x1, b], axis=1)
    g.m2[cat] = 1.0
    # channel_shuffle(cat, groups=2): view(b, 2, c/2, h, w).transpose(1, 2).reshape(b, -1, h, w)
    dims = [g.op("Gather", f"shuffle.gather{i}", [g.op("Shape", f"shuffle.shape{i}", [cat]), iconst(f"i{i}", i, vector=False)], axis=0)
            for i in range(4)]
    per_group = g.op("Cast", "shuffle.cast", [g.op("Div", "shuffle.div", [dims[1], iconst("groups", 2, vector=False)])], to=7)
    axes = iconst("axes0", 0)
    unsq = [g.op("Unsqueeze", f"shuffle.unsq{i}", [d, axes]) for i, d in enumerate([dims[0], per_group, dims[2], dims[3]])]
    shape5 = g.op("Concat", "shuffle.shape5", [unsq[0], iconst("groups_vec", 2), *unsq[1:]], axis=0)
    r = g.op("Reshape", "shuffle.reshape1", [cat, shape5])
    t = g.op("Transpose", "shuffle.transpose", [r], perm=[0, 2, 1, 3, 4])
    shape4 = g.op("Concat", "shuffle.shape4", [unsq[0], iconst("minus1", -1), unsq[2], unsq[3]], axis=0)
    x = g.op("Reshape", "shuffle.reshape2", [t, shape4])
    for name in (r, t, x):
        g.m2[name] = 1.0
    g.head(x, c)
    return g.model("shufflenet_mini", [1, 3, 32, 32], [1, 10])


def unsupported_ops() -> onnx.ModelProto:
    # Celu and LpNormalization run in onnxruntime but TVM's Relax ONNX frontend has no converter.
    g = Graph(seed=4)
    x = g.conv("input", "conv", 3, 4, 3, bias=True)
    x = g.op("Celu", "celu_1", [x], alpha=1.0)
    x = g.op("LpNormalization", "lpnorm", [x], axis=1, p=2)
    x = g.op("Celu", "celu_2", [x], alpha=0.5)
    g.op("Relu", "relu", [x])
    return g.model("unsupported_ops", [1, 3, 8, 8], [1, 4, 8, 8])


def check_runs(path: Path) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 2 for d in inp.shape]
    out = sess.run(None, {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)})[0]
    assert np.all(np.isfinite(out)) and 1e-3 < np.abs(out).max() < 1e3, (path, np.abs(out).max())


def write_onnx(out_dir: Path) -> list[Path]:
    written = []
    for name, m in [
        ("convnet_tiny", convnet_tiny()),
        ("mobilenetv2_mini", mobilenetv2_mini()),
        ("resnet_mini", resnet_mini()),
        ("shufflenet_mini", shufflenet_mini()),
        ("convnet_dynbatch", convnet_tiny("convnet_dynbatch", batch="batch")),
        ("unsupported_ops", unsupported_ops()),
    ]:
        path = out_dir / f"{name}.onnx"
        onnx.save_model(m, str(path))
        written.append(path)
    ext = out_dir / "convnet_extdata.onnx"
    m = convnet_tiny("convnet_extdata")
    # save_model appends to an existing data file, so start from none.
    (out_dir / "convnet_extdata.onnx.data").unlink(missing_ok=True)
    onnx.save_model(m, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="convnet_extdata.onnx.data", size_threshold=0)
    written += [ext, out_dir / "convnet_extdata.onnx.data"]
    for path in written:
        if path.suffix == ".onnx":
            onnx.checker.check_model(str(path))
            check_runs(path)
    return written


# ---- TFLite ---------------------------------------------------------------

def _tflite_bytes(dynamic_batch: bool = False) -> bytes:
    """convnet_tiny in TFLite form (float32, NHWC 1x32x32x3 -> softmax over 10).

    With ``dynamic_batch`` every activation's shape_signature has batch -1, as
    the TF converter writes for a ``None`` batch dimension.

    input -CONV_2D(s2,relu)-> c1 -DEPTHWISE_CONV_2D-> RELU6 -CONV_2D 1x1-> ADD(c1)
    -AVERAGE_POOL_2D-> RESHAPE -> FULLY_CONNECTED -> SOFTMAX -> output
    """
    import importlib

    import flatbuffers

    # `from tflite import X` gives the reader class; the builder functions live in the module.
    Buffer, Conv2DOptions, DepthwiseConv2DOptions, FullyConnectedOptions, Model, Operator, OperatorCode, \
        Pool2DOptions, ReshapeOptions, SoftmaxOptions, SubGraph, Tensor = (
            importlib.import_module(f"tflite.{m}") for m in (
                "Buffer", "Conv2DOptions", "DepthwiseConv2DOptions", "FullyConnectedOptions", "Model", "Operator",
                "OperatorCode", "Pool2DOptions", "ReshapeOptions", "SoftmaxOptions", "SubGraph", "Tensor"))
    from tflite.ActivationFunctionType import ActivationFunctionType as Act
    from tflite.BuiltinOperator import BuiltinOperator as Op
    from tflite.BuiltinOptions import BuiltinOptions as Opt
    from tflite.Padding import Padding
    from tflite.TensorType import TensorType

    rng = np.random.default_rng(5)

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    # name -> (shape, dtype, constant data or None); buffer 0 stays empty by convention.
    tensors: dict[str, tuple[list[int], int, np.ndarray | None]] = {}

    def tensor(name, shape, data=None, ttype=TensorType.FLOAT32):
        tensors[name] = (shape, ttype, data)
        return name

    tensor("input", [1, 32, 32, 3])
    tensor("c1.w", [8, 3, 3, 3], he((8, 3, 3, 3), 27))  # OHWI
    tensor("c1.b", [8], (rng.standard_normal(8) * 0.1).astype(np.float32))
    tensor("c1", [1, 16, 16, 8])
    tensor("dw.w", [1, 3, 3, 8], he((1, 3, 3, 8), 9))  # 1HWC
    tensor("dw.b", [8], (rng.standard_normal(8) * 0.1).astype(np.float32))
    tensor("dw", [1, 16, 16, 8])
    tensor("dw.relu6", [1, 16, 16, 8])
    tensor("pw.w", [8, 1, 1, 8], he((8, 1, 1, 8), 8))
    tensor("pw.b", [8], np.zeros(8, np.float32))
    tensor("pw", [1, 16, 16, 8])
    tensor("add", [1, 16, 16, 8])
    tensor("pool", [1, 1, 1, 8])
    tensor("shape", [2], np.array([-1, 8], np.int32), TensorType.INT32)
    tensor("flat", [1, 8])
    tensor("fc.w", [10, 8], he((10, 8), 8))
    tensor("fc.b", [10], (rng.standard_normal(10) * 0.1).astype(np.float32))
    tensor("logits", [1, 10])
    tensor("output", [1, 10])

    # (op, inputs, outputs, options type, options builder)
    def conv_opts(b, stride, act):
        Conv2DOptions.Start(b)
        Conv2DOptions.AddPadding(b, Padding.SAME)
        Conv2DOptions.AddStrideW(b, stride)
        Conv2DOptions.AddStrideH(b, stride)
        Conv2DOptions.AddDilationWFactor(b, 1)
        Conv2DOptions.AddDilationHFactor(b, 1)
        Conv2DOptions.AddFusedActivationFunction(b, act)
        return Conv2DOptions.End(b)

    def dw_opts(b):
        DepthwiseConv2DOptions.Start(b)
        DepthwiseConv2DOptions.AddPadding(b, Padding.SAME)
        DepthwiseConv2DOptions.AddStrideW(b, 1)
        DepthwiseConv2DOptions.AddStrideH(b, 1)
        DepthwiseConv2DOptions.AddDepthMultiplier(b, 1)
        DepthwiseConv2DOptions.AddDilationWFactor(b, 1)
        DepthwiseConv2DOptions.AddDilationHFactor(b, 1)
        return DepthwiseConv2DOptions.End(b)

    def pool_opts(b):
        Pool2DOptions.Start(b)
        Pool2DOptions.AddPadding(b, Padding.VALID)
        Pool2DOptions.AddStrideW(b, 1)
        Pool2DOptions.AddStrideH(b, 1)
        Pool2DOptions.AddFilterWidth(b, 16)
        Pool2DOptions.AddFilterHeight(b, 16)
        return Pool2DOptions.End(b)

    def reshape_opts(b):
        ReshapeOptions.StartNewShapeVector(b, 2)
        for d in reversed([-1, 8]):
            b.PrependInt32(d)
        shape = b.EndVector()
        ReshapeOptions.Start(b)
        ReshapeOptions.AddNewShape(b, shape)
        return ReshapeOptions.End(b)

    def fc_opts(b):
        FullyConnectedOptions.Start(b)
        return FullyConnectedOptions.End(b)

    def softmax_opts(b):
        SoftmaxOptions.Start(b)
        SoftmaxOptions.AddBeta(b, 1.0)
        return SoftmaxOptions.End(b)

    ops = [
        (Op.CONV_2D, ["input", "c1.w", "c1.b"], ["c1"], Opt.Conv2DOptions, lambda b: conv_opts(b, 2, Act.RELU)),
        (Op.DEPTHWISE_CONV_2D, ["c1", "dw.w", "dw.b"], ["dw"], Opt.DepthwiseConv2DOptions, dw_opts),
        (Op.RELU6, ["dw"], ["dw.relu6"], Opt.NONE, None),
        (Op.CONV_2D, ["dw.relu6", "pw.w", "pw.b"], ["pw"], Opt.Conv2DOptions, lambda b: conv_opts(b, 1, Act.NONE)),
        (Op.ADD, ["pw", "c1"], ["add"], Opt.NONE, None),
        (Op.AVERAGE_POOL_2D, ["add"], ["pool"], Opt.Pool2DOptions, pool_opts),
        (Op.RESHAPE, ["pool", "shape"], ["flat"], Opt.ReshapeOptions, reshape_opts),
        (Op.FULLY_CONNECTED, ["flat", "fc.w", "fc.b"], ["logits"], Opt.FullyConnectedOptions, fc_opts),
        (Op.SOFTMAX, ["logits"], ["output"], Opt.SoftmaxOptions, softmax_opts),
    ]
    codes = sorted({op for op, *_ in ops})
    index = {n: i for i, n in enumerate(tensors)}

    b = flatbuffers.Builder(1 << 16)

    def int_vector(start, values):
        start(b, len(values))
        for v in reversed(values):
            b.PrependInt32(v)
        return b.EndVector()

    def table_vector(start, offsets):
        start(b, len(offsets))
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    # Buffers: 0 is the empty sentinel, then one per constant (16-byte aligned for the kernels).
    buffer_of, buffers = {}, []
    Buffer.Start(b)
    buffers.append(Buffer.End(b))
    for name, (_, _, data) in tensors.items():
        if data is None:
            continue
        raw = data.tobytes()
        b.StartVector(1, len(raw), 16)
        b.head -= len(raw)
        b.Bytes[b.head:b.head + len(raw)] = raw
        vec = b.EndVector()
        Buffer.Start(b)
        Buffer.AddData(b, vec)
        buffer_of[name] = len(buffers)
        buffers.append(Buffer.End(b))

    tensor_offsets = []
    for name, (shape, ttype, data) in tensors.items():
        fb_name = b.CreateString(name)
        fb_shape = int_vector(Tensor.StartShapeVector, shape)
        dynamic = dynamic_batch and data is None
        fb_sig = int_vector(Tensor.StartShapeSignatureVector, [-1, *shape[1:]]) if dynamic else None
        Tensor.Start(b)
        Tensor.AddShape(b, fb_shape)
        if dynamic:
            Tensor.AddShapeSignature(b, fb_sig)
        Tensor.AddType(b, ttype)
        Tensor.AddBuffer(b, buffer_of.get(name, 0))
        Tensor.AddName(b, fb_name)
        tensor_offsets.append(Tensor.End(b))

    op_offsets = []
    for op, ins, outs, opt_type, opt_fn in ops:
        opts = opt_fn(b) if opt_fn else None
        fb_in = int_vector(Operator.StartInputsVector, [index[n] for n in ins])
        fb_out = int_vector(Operator.StartOutputsVector, [index[n] for n in outs])
        Operator.Start(b)
        Operator.AddOpcodeIndex(b, codes.index(op))
        Operator.AddInputs(b, fb_in)
        Operator.AddOutputs(b, fb_out)
        if opts is not None:
            Operator.AddBuiltinOptionsType(b, opt_type)
            Operator.AddBuiltinOptions(b, opts)
        op_offsets.append(Operator.End(b))

    fb_tensors = table_vector(SubGraph.StartTensorsVector, tensor_offsets)
    fb_inputs = int_vector(SubGraph.StartInputsVector, [index["input"]])
    fb_outputs = int_vector(SubGraph.StartOutputsVector, [index["output"]])
    fb_ops = table_vector(SubGraph.StartOperatorsVector, op_offsets)
    fb_sg_name = b.CreateString("main")
    SubGraph.Start(b)
    SubGraph.AddTensors(b, fb_tensors)
    SubGraph.AddInputs(b, fb_inputs)
    SubGraph.AddOutputs(b, fb_outputs)
    SubGraph.AddOperators(b, fb_ops)
    SubGraph.AddName(b, fb_sg_name)
    subgraph = SubGraph.End(b)

    code_offsets = []
    for op in codes:
        OperatorCode.Start(b)
        # Readers before TF 2.4 only look at the int8 field; newer ones take the max of both.
        OperatorCode.AddDeprecatedBuiltinCode(b, op)
        OperatorCode.AddBuiltinCode(b, op)
        OperatorCode.AddVersion(b, 1)
        code_offsets.append(OperatorCode.End(b))

    fb_codes = table_vector(Model.StartOperatorCodesVector, code_offsets)
    fb_subgraphs = table_vector(Model.StartSubgraphsVector, [subgraph])
    fb_buffers = table_vector(Model.StartBuffersVector, buffers)
    fb_desc = b.CreateString("edgert test model (tools/build_test_models.py)")
    Model.Start(b)
    Model.AddVersion(b, 3)
    Model.AddOperatorCodes(b, fb_codes)
    Model.AddSubgraphs(b, fb_subgraphs)
    Model.AddDescription(b, fb_desc)
    Model.AddBuffers(b, fb_buffers)
    b.Finish(Model.End(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def write_tflite(out_dir: Path) -> list[Path]:
    from ai_edge_litert.interpreter import Interpreter

    written = []
    for name, batch in [("convnet_tiny", None), ("convnet_dynbatch", 2)]:
        path = out_dir / f"{name}.tflite"
        path.write_bytes(_tflite_bytes(dynamic_batch=batch is not None))
        interp = Interpreter(model_path=str(path))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        if batch:
            interp.resize_tensor_input(inp["index"], [batch, 32, 32, 3])
        interp.allocate_tensors()
        x = np.random.default_rng(0).standard_normal([batch or 1, 32, 32, 3]).astype(np.float32)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        probs = interp.get_tensor(out["index"])
        assert probs.shape == (batch or 1, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5), probs
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "tests" / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in [*write_onnx(out_dir), *write_tflite(out_dir)]:
        print(f"{path}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
