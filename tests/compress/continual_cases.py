"""Small offline temporal models built with onnx.helper, for the continual-inference tests.

Each builder takes the offline length T along time so a test can build the
same network for a window and for a whole stream. Weights come from a fixed
seed so both builds share them.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


class Net:
    """Accumulates nodes and seeded initializers; ``model(T)`` is built by a case function."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}{self.n}"

    def w(self, *shape, scale: float | None = None) -> str:
        scale = scale or 1.0 / np.sqrt(max(1, int(np.prod(shape[1:]))))
        name = self.name("w")
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def c(self, value, dtype=np.float32) -> str:
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(f"n_{op}_"), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, kernel: tuple[int, ...], bias: bool = True, **attrs) -> str:
        args = [x, self.w(cout, cin // attrs.get("group", 1), *kernel)]
        if bias:
            args.append(self.w(cout, scale=0.1))
        return self.op("Conv", args, kernel_shape=list(kernel), **attrs)

    def pad(self, x: str, pads: list[int]) -> str:
        return self.op("Pad", [x, self.c(pads, np.int64)], mode="constant")

    def bn(self, x: str, c: int) -> str:
        scale = self.c(self.rng.uniform(0.5, 1.5, c))
        bias = self.c(self.rng.uniform(-0.2, 0.2, c))
        mean = self.c(self.rng.uniform(-0.2, 0.2, c))
        var = self.c(self.rng.uniform(0.5, 1.5, c))
        return self.op("BatchNormalization", [x, scale, bias, mean, var])

    def model(self, x_shape: list[int], out: str, opset: int = 17) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        return onnx.shape_inference.infer_shapes(m, strict_mode=True)


# Each case: T -> ModelProto. Input "x", time on axis 2 unless the case says otherwise.

def causal_dilated(T: int) -> onnx.ModelProto:
    """Causal TCN block: left Pad + dilated conv + BN + ReLU, twice, with a residual Add."""
    n = Net(1)
    h = n.op("Relu", [n.bn(n.conv(n.pad("x", [0, 0, 4, 0, 0, 0]), 3, 6, (3,), bias=False, dilations=[2]), 6)])
    h2 = n.op("Relu", [n.conv(n.pad(h, [0, 0, 8, 0, 0, 0]), 6, 6, (3,), dilations=[4])])
    return n.model([1, 3, T], n.op("Add", [h, h2]))


def valid_dilated(T: int) -> onnx.ModelProto:
    """No padding at all: every window of the stream has an offline counterpart."""
    n = Net(2)
    h = n.op("Tanh", [n.conv("x", 2, 5, (5,), dilations=[3])])
    return n.model([1, 2, T], n.conv(h, 5, 4, (2,)))


def symmetric(T: int) -> onnx.ModelProto:
    """'Same' convs (symmetric padding): each becomes an output delay."""
    n = Net(3)
    h = n.op("Relu", [n.conv("x", 3, 4, (5,), pads=[2, 2])])
    return n.model([1, 3, T], n.conv(h, 4, 4, (3,), pads=[2, 2], dilations=[2]))


def strided(T: int) -> onnx.ModelProto:
    """Stride 2 then stride 3 (one output every 6 frames), symmetric padding on the second."""
    n = Net(4)
    h = n.op("Relu", [n.conv("x", 2, 4, (3,), strides=[2])])
    h = n.conv(h, 4, 4, (3,), strides=[3], pads=[1, 1])
    return n.model([1, 2, T], n.op("Sigmoid", [h]))


def residual_delays(T: int) -> onnx.ModelProto:
    """A residual Add and a Concat whose branches have different delays (symmetric conv vs skip)."""
    n = Net(5)
    a = n.conv("x", 3, 3, (5,), pads=[2, 2])  # delay 2
    b = n.conv("x", 3, 3, (3,), pads=[1, 1], dilations=[1])  # delay 1
    s = n.op("Add", ["x", a])  # skip has delay 0
    cat = n.op("Concat", [s, b, "x"], axis=1)
    return n.model([1, 3, T], n.op("Mul", [cat, n.c(np.linspace(0.5, 2, 9).reshape(9, 1))]))


def pooling(T: int) -> onnx.ModelProto:
    """MaxPool (kernel 2, stride 2) and AveragePool (kernel 3, symmetric pads, counted) along time."""
    n = Net(6)
    h = n.op("MaxPool", [n.conv("x", 2, 4, (3,))], kernel_shape=[2], strides=[2])
    return n.model([1, 2, T], n.op("AveragePool", [h], kernel_shape=[3], pads=[1, 1], count_include_pad=1))


def gap_classifier(T: int) -> onnx.ModelProto:
    """Unpadded convs, mean over time (ReduceMean), a Gemm: a prediction for every window."""
    n = Net(7)
    h = n.op("Relu", [n.conv("x", 4, 8, (3,), dilations=[2])])
    h = n.op("Relu", [n.conv(h, 8, 8, (3,), dilations=[4])])
    g = n.op("ReduceMean", [h], axes=[2], keepdims=0)
    return n.model([1, 4, T], n.op("Gemm", [g, n.w(5, 8), n.w(5, scale=0.1)], transB=1))


def conv2d_time_axis3(T: int) -> onnx.ModelProto:
    """Conv2d over (frequency, time) with time on axis 3, frequency padded 'same', time causal."""
    n = Net(8)
    h = n.conv(n.pad("x", [0, 0, 0, 2, 0, 0, 0, 0]), 2, 3, (3, 3), pads=[1, 0, 1, 0])
    h = n.op("Relu", [n.bn(h, 3)])
    g = n.op("GlobalAveragePool", [h])
    f = n.op("Flatten", [g])
    return n.model([1, 2, 5, T], n.op("Gemm", [f, n.w(4, 3), n.w(4, scale=0.1)], transB=1))


def conv3d(T: int) -> onnx.ModelProto:
    """Conv3d on (time, height, width) clips: symmetric time padding, spatial stride 2."""
    n = Net(9)
    h = n.conv("x", 2, 3, (3, 3, 3), pads=[1, 1, 1, 1, 1, 1], strides=[1, 2, 2])
    return n.model([1, 2, T, 6, 6], n.conv(n.op("Relu", [h]), 3, 2, (2, 1, 1), dilations=[2, 1, 1]))


CASES = {
    # name: (builder, time axis, every window's offline output has an exact stream counterpart)
    "causal_dilated": (causal_dilated, 2, False),
    "valid_dilated": (valid_dilated, 2, True),
    "symmetric": (symmetric, 2, False),
    "strided": (strided, 2, False),
    "residual_delays": (residual_delays, 2, False),
    "pooling": (pooling, 2, False),
    "gap_classifier": (gap_classifier, 2, True),
    "conv2d_time_axis3": (conv2d_time_axis3, 3, False),
    "conv3d": (conv3d, 2, False),
}


def stream_ort(step, report, x: np.ndarray, axis: int, sess=None, name: str = "x") -> list[np.ndarray]:
    """Feed x one frame at a time from zero state (onnxruntime); the first output at every frame."""
    sess = sess or session(step.proto)
    state = {s["name_in"]: np.zeros(s["shape"], s["dtype"]) for s in report.states}
    outs = []
    for t in range(x.shape[axis]):
        frame = np.take(x, [t], axis=axis)
        res = sess.run(None, {name: frame, **state})
        state = {s["name_in"]: v for s, v in zip(report.states, res[1:], strict=True)}
        outs.append(res[0])
    return outs


def session(proto) -> ort.InferenceSession:
    """One-thread onnxruntime session: tiny models, and no spinning threads on a shared machine."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
