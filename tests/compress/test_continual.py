"""edgert.compress.continual: step models equal the offline model, in onnxruntime.

Tolerance everywhere: max |step - offline| <= 1e-5 x max |offline| over the compared values.

What "equal" means (and is checked) for a stream of L frames and an offline window of T:
- whole stream: for models whose output keeps time, step output j (emitted at frame
  delay + j*stride) equals the offline network run on all L frames at position j;
- every window, fresh stream: a stream started from zero state on frames s..s+T-1 reproduces
  the offline output of that window (every position the stream emitted by the window's last
  frame; for pooled-over-time models, the output at the last frame);
- every window, one continuous stream: for unpadded networks, where offline windows do not
  see padding, the single long stream reproduces every window's offline output.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from continual_cases import CASES, Net, conv3d, session, stream_ort
from onnx import helper

import edgert
from edgert.compress import continual
from edgert.compress.continual import UPDATES, ContinualError, ContinualSpec, read_metadata
from edgert.model import Model, TensorSpec

RTOL = 1e-5
T, L = 16, 44


def as_model(proto: onnx.ModelProto) -> Model:
    vi = proto.graph.input[0]
    shape = tuple(d.dim_value for d in vi.type.tensor_type.shape.dim)
    out = proto.graph.output[0].name
    return Model("onnx", [TensorSpec(vi.name, shape, "float32")], [TensorSpec(out, (), "float32")], "case", proto)


def offline_run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = session(proto)
    return sess.run(None, {"x": x})[0]


def close(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| relative to max |ref|."""
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-12))


def emitted(report, n_frames: int) -> list[tuple[int, int]]:
    """(position, frame) of every valid output within n_frames."""
    return [((t - report.delay) // report.stride, t) for t in range(report.delay, n_frames, report.stride)]


# Every state-update form, and the default one with a state tensor per buffer.
VARIANTS = [(u, True) for u in UPDATES] + [("shift", False)]


@pytest.mark.parametrize("update, merge", VARIANTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_model_equals_offline(case, update, merge):
    build, axis, every_window = CASES[case]
    offline = build(T)
    step, report = continual(as_model(offline), ContinualSpec(axis, update=update, merge_states=merge))
    rng = np.random.default_rng(len(case))
    shape = [d.dim_value for d in offline.graph.input[0].type.tensor_type.shape.dim]
    shape[axis] = L
    x = rng.standard_normal(shape).astype(np.float32)
    outs = stream_ort(step, report, x, axis)
    has_time = report.outputs_have_time[offline.graph.output[0].name]
    out_axis = axis if has_time else None
    compared = 0

    if has_time:  # the whole stream as one offline sequence
        full = offline_run(build(L), x)
        for j, t in emitted(report, L):
            if j < full.shape[out_axis]:
                assert close(outs[t], np.take(full, [j], axis=out_axis)) <= RTOL, (case, j)
                compared += 1
        # all but the positions that need frames past the stream's end (the delay)
        assert compared >= full.shape[out_axis] - report.delay // report.stride - 1

    def window_check(stream_outs, s, window_out):
        n = 0
        for j, t in emitted(report, s + T):
            if t < s:
                continue
            if has_time:
                jj = j - s // report.stride
                if 0 <= jj < window_out.shape[out_axis]:
                    assert close(stream_outs[t], np.take(window_out, [jj], axis=out_axis)) <= RTOL, (case, s, jj)
                    n += 1
            elif t == s + T - 1:
                assert close(stream_outs[t], window_out) <= RTOL, (case, s)
                n += 1
        return n

    for s in range(0, L - T + 1, report.stride):
        xs = np.take(x, range(s, s + T), axis=axis)
        ref = offline_run(offline, xs)
        fresh = stream_ort(step, report, xs, axis)
        assert window_check([None] * s + fresh, s, ref) >= 1
        if every_window or s == 0:
            assert window_check(outs, s, ref) >= 1
        compared += 1
    assert compared >= (L - T) // report.stride


def test_delays_and_receptive_fields():
    # symmetric: conv k5 pads 2 (delay 2) then k3 dilation 2 pads 2 (delay 2 more); rf 1+4+4
    _, r = continual(as_model(CASES["symmetric"][0](T)), 2)
    assert (r.delay, r.stride, r.receptive_field) == (4, 1, 9)
    # strided: k3 s2 (delay 2), then k3 s3 pads 1 at rate 2: delay 2 + (2-1)*2 = 4, one output per 6 frames
    _, r = continual(as_model(CASES["strided"][0](T)), 2)
    assert (r.delay, r.stride, r.receptive_field) == (4, 6, 1 + 2 + 2 * 2)
    # gap_classifier: rf 1+4+8 = 13 frames reach the mean over the remaining T-12 positions: delay T-1
    _, r = continual(as_model(CASES["gap_classifier"][0](T)), 2)
    assert (r.delay, r.receptive_field) == (T - 1, 13 + T - 13)


def test_state_io_and_metadata():
    case = as_model(CASES["residual_delays"][0](T))
    step, r = continual(case, 2)
    g = step.proto.graph
    ins = [i.name for i in g.input if i.name.startswith("state_in_")]
    outs = [o.name for o in g.output if o.name.startswith("state_out_")]
    assert ins and [n.replace("state_in_", "") for n in ins] == [n.replace("state_out_", "") for n in outs]
    assert [s["name_in"] for s in r.states] == ins and [s["name_out"] for s in r.states] == outs
    meta = read_metadata(step.proto)
    assert meta["delay"] == r.delay == 2 and meta["frame_shapes"] == {"x": [1, 3, 1]}
    props = {p.key: p.value for p in step.proto.metadata_props}
    assert props["delay"] == "2" and props["receptive_field"] == str(r.receptive_field)
    assert {n.domain for n in g.node} <= {""}
    assert step.history[-1]["pass"] == "continual"
    # One tensor per buffer when asked: the skip and the k3 branch are delayed to the k5 branch by
    # buffers of 2 and 1 positions, each state holding its window (the delayed ones and the current).
    _, sep = continual(case, ContinualSpec(2, merge_states=False))
    assert sorted(s["shape"][2] for s in sep.states if "align" in s["name_in"]) == [2, 3]
    # By default buffers of equal frame shape share one state tensor, stacked along time.
    assert len(r.states) < len(sep.states)
    assert sum(np.prod(s["shape"]) for s in r.states) == sum(np.prod(s["shape"]) for s in sep.states)


def test_macs_per_step_tcn_kws(tmp_path):
    step, r = continual(edgert.load("models_zoo/tcn_kws/model.onnx"), 2)
    assert r.macs_offline == 639168  # the zoo card's figure, counted independently here
    assert r.macs_offline / r.macs_step >= 5


@pytest.mark.parametrize("builder, reason", [
    (lambda n: n.op("LSTM", ["x", n.w(1, 12, 3), n.w(1, 12, 3)], hidden_size=3), "cannot be streamed"),
    (lambda n: n.op("Concat", ["x", "x"], axis=2), "along the time axis"),
    (lambda n: n.op("MaxPool", ["x"], kernel_shape=[3], pads=[1, 1]), "-inf"),
    (lambda n: n.op("Add", ["x", n.c(np.ones((3, T)))]), "varies along time"),
    (lambda n: n.op("Softmax", ["x"], axis=2), "mixes time steps"),
    (lambda n: n.op("Relu", [n.pad("x", [0, 0, 1, 0, 0, 0])]), "zero-padded along time"),
    (lambda n: n.op("Mul", ["x", n.op("ReduceMean", ["x"], axes=[2], keepdims=1)]), "pooled over time"),
])
def test_refused_with_node_name_and_reason(builder, reason):
    n = Net()
    out = builder(n)
    offline = n.model([1, 3, T], out) if not out.startswith("lstm") else _lstm_model(n, out)
    with pytest.raises(ContinualError, match=reason) as info:
        continual(as_model(offline), 2)
    assert "node 'n_" in str(info.value)


def _lstm_model(n: Net, out: str) -> onnx.ModelProto:
    # LSTM wants (seq, batch, features): build it with time on axis 0 of a transposed input.
    n.nodes.insert(0, helper.make_node("Transpose", ["x"], ["xt"], name="n_Transpose_0", perm=[2, 0, 1]))
    n.nodes[-1].input[0] = "xt"
    g = helper.make_graph(n.nodes, "case", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, T])],
                          [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)], n.inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_time_axis_must_exist_and_not_be_batch():
    m = as_model(conv3d(T))
    with pytest.raises(ContinualError, match="no axis 7"):
        continual(m, 7)
    with pytest.raises(ContinualError, match="batch"):
        continual(m, 0)


# -- an independent reference: a continual 1D conv written from the paper's definition ----------

class RingConv1d:
    """Continual Conv1d (Hedegaard et al.): a ring buffer of the last (K-1)*d+1 frames, zeros at first.

    The output for position j = (t - ((K-1)*d - p)) / s is emitted at frame t when j is a whole
    number >= 0: sum over taps k of W[:, :, k] @ frame[t - (K-1-k)*d] + bias.
    """

    def __init__(self, w: np.ndarray, b: np.ndarray, dilation: int, stride: int, pad: int):
        self.w, self.b, self.d, self.s, self.p = w.astype(np.float64), b.astype(np.float64), dilation, stride, pad
        self.size = (w.shape[2] - 1) * dilation + 1
        self.ring = np.zeros((self.size, w.shape[1]))
        self.t = 0

    def step(self, frame: np.ndarray):
        self.ring[self.t % self.size] = frame
        k_total = self.w.shape[2]
        lead = (k_total - 1) * self.d - self.p
        out = None
        if self.t >= lead and (self.t - lead) % self.s == 0:
            out = self.b.copy()
            for k in range(k_total):
                out += self.w[:, :, k] @ self.ring[(self.t - (k_total - 1 - k) * self.d) % self.size]
        self.t += 1
        return out


@pytest.mark.parametrize("update", UPDATES)
@pytest.mark.parametrize("k, d, s, p", [(3, 1, 1, 0), (3, 2, 1, 2), (5, 3, 1, 6), (4, 2, 2, 3), (3, 1, 3, 1)])
def test_against_independent_ring_buffer_conv(k, d, s, p, update):
    n = Net(11)
    out = n.conv("x", 3, 4, (k,), dilations=[d], strides=[s], pads=[p, p])
    offline = n.model([1, 3, T], out)
    w = onnx.numpy_helper.to_array(offline.graph.initializer[0])
    b = onnx.numpy_helper.to_array(offline.graph.initializer[1])
    step, report = continual(as_model(offline), ContinualSpec(2, update=update))
    x = np.random.default_rng(k * 100 + d).standard_normal((1, 3, L)).astype(np.float32)
    outs = stream_ort(step, report, x, 2)
    ring = RingConv1d(w, b, d, s, p)
    n_out = 0
    for t in range(L):
        ref = ring.step(x[0, :, t])
        valid = t >= report.delay and (t - report.delay) % report.stride == 0
        assert valid == (ref is not None), t
        if ref is not None:
            assert close(outs[t][0, :, 0], ref) <= RTOL
            n_out += 1
    assert n_out >= (L - (k - 1) * d) // s
