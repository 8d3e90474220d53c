"""The step graph under construction: tensors' timing, state buffers, validity gates.

Timing of a tensor (in frames of the step model's input): position ``j`` along
time is computed at frame ``lag + j * rate``; its value depends on the frames
``back`` steps before that one up to it. State buffers hold the previous
positions a window operator needs; they are pushed only on frames where their
input is valid, so positions before 0 stay zeros, which is exactly the zero
padding the offline model applies at the start of its window.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgert.errors import CompressError


class ContinualError(CompressError):
    """The model cannot be turned into a continual step model (the message names the node and why)."""


@dataclass(frozen=True)
class Timing:
    lag: int  # frame at which position 0 is computed
    rate: int  # frames per position
    back: int  # frames before the current one the value depends on (receptive field - 1)
    axis: int | None  # time axis in this tensor; None once reduced away
    length: int  # length along time in the offline model (0 once reduced)
    pad: tuple[int, int] = (0, 0)  # zero padding along time from a Pad node, taken by the next window op

    def moved(self, **kw) -> Timing:
        return replace(self, **kw)


def refuse(node, reason: str) -> ContinualError:
    return ContinualError(f"node '{node.name}' ({node.op_type}): {reason}")


class StepBuilder:
    """Collects the step graph's nodes, constants and state tensors."""

    def __init__(self, proto, opset: int, update: str = "shift"):
        from onnx import numpy_helper

        self.opset = opset
        self.update = update
        self.nodes: list = []
        self.initializers: list = []
        self.states: list[dict] = []  # {"suffix", "shape", "dtype"} in creation order
        self.state_inputs: list = []
        self.state_outputs: list = []
        self.timing: dict[str, Timing] = {}  # offline tensor name -> timing (absent: constant)
        self.step_name: dict[str, str] = {}  # offline name -> name in the step graph
        self.shapes: dict[str, list[int]] = {}
        self.dtypes: dict[str, int] = {}
        self.const_values: dict[str, np.ndarray] = {}
        g = proto.graph
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            self.dtypes[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        for init in g.initializer:
            self.shapes[init.name] = list(init.dims)
            self.dtypes[init.name] = init.data_type
            self.const_values[init.name] = numpy_helper.to_array(init)
        self._used = {n for node in g.node for n in [*node.input, *node.output]}
        self._used |= {vi.name for vi in [*g.input, *g.output, *g.initializer]}
        self._counter: str | None = None
        self._step_shapes: dict[str, list[int]] = {}
        self._delayed: dict[tuple[str, int], str] = {}
        self._valid: dict[tuple[int, int], str | None] = {}
        self._phases: dict[int, str] = {}
        self._slots: dict[tuple[int, int, int], str] = {}

    # -- names and plain nodes ---------------------------------------------
    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in hint).strip("_") or "t"
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name

    def const(self, value, hint: str) -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, output: str | None = None, **attrs) -> str:
        from onnx import helper

        out = output or self.fresh(hint)
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(f"{hint}_{op}"), **attrs))
        return out

    def copy(self, node, renamed: dict[str, str]) -> None:
        """Append ``node`` as it is, but reading ``renamed[i]`` wherever it read input ``i``."""
        new = type(node)()
        new.CopyFrom(node)
        for k, i in enumerate(node.input):
            if i in renamed:
                new.input[k] = renamed[i]
        self.nodes.append(new)

    def s(self, offline: str) -> str:
        """The step-graph name of an offline tensor."""
        return self.step_name.get(offline, offline)

    def is_const(self, name: str) -> bool:
        return name not in self.timing

    # -- opset-dependent helpers ---------------------------------------------
    def slice(self, x: str, start: int, end: int, axis: int, hint: str, output: str | None = None) -> str:
        args = [x, self.const(np.array([start], np.int64), f"{hint}_start"),
                self.const(np.array([end], np.int64), f"{hint}_end"), self.const(np.array([axis], np.int64), f"{hint}_axis")]
        return self.node("Slice", args, hint, output)

    def reduce(self, op: str, x: str, axes: list[int], keepdims: int, hint: str, output: str | None = None) -> str:
        axes_as_input = self.opset >= 18 or (op == "ReduceSum" and self.opset >= 13)
        if axes_as_input:
            return self.node(op, [x, self.const(np.array(axes, np.int64), f"{hint}_axes")], hint, output, keepdims=keepdims)
        return self.node(op, [x], hint, output, axes=axes, keepdims=keepdims)

    def squeeze(self, op: str, x: str, axes: list[int], hint: str, output: str | None = None) -> str:
        if self.opset >= 13:
            return self.node(op, [x, self.const(np.array(axes, np.int64), f"{hint}_axes")], hint, output)
        return self.node(op, [x], hint, output, axes=axes)

    # -- validity ------------------------------------------------------------
    # Gates are float 0/1 made of Add/Sub/Mul/Clip/Abs only, so that every backend (onnxruntime,
    # TVM, edgert's host executor) runs them; integers stay exact in float32 up to 2^24.
    def _state_scalar(self, suffix: str) -> tuple[str, str]:
        from onnx import TensorProto, helper

        s_in, s_out = f"state_in_{suffix}", f"state_out_{suffix}"
        self._used |= {s_in, s_out}
        self.state_inputs.append(helper.make_tensor_value_info(s_in, TensorProto.FLOAT, [1]))
        self.state_outputs.append(helper.make_tensor_value_info(s_out, TensorProto.FLOAT, [1]))
        self.states.append({"suffix": suffix, "shape": [1], "dtype": "float32"})
        return s_in, s_out

    def _clip01(self, x: str, hint: str) -> str:
        lo, hi = np.array(0, np.float32), np.array(1, np.float32)
        if self.opset >= 11:
            return self.node("Clip", [x, self.const(lo, f"{hint}_lo"), self.const(hi, f"{hint}_hi")], hint)
        return self.node("Clip", [x], hint, min=0.0, max=1.0)

    def _f(self, value: float, hint: str) -> str:
        return self.const(np.array([value], np.float32), hint)

    def counter(self) -> str:
        """Frames seen before this one (state ``step``, float32 [1]; it stops at 2^24, where every
        warm-up gate is long open)."""
        if self._counter is None:
            t_in, t_out = self._state_scalar("step")
            self.node("Add", [t_in, self._f(1, "one")], "step", t_out)
            self._counter = t_in
        return self._counter

    def phase(self, rate: int) -> str:
        """Frames seen modulo ``rate`` (state ``phase<rate>``)."""
        if rate not in self._phases:
            p_in, p_out = self._state_scalar(f"phase{rate}")
            hint = f"phase{rate}"
            nxt = self.node("Add", [p_in, self._f(1, hint)], hint)
            wrap = self._clip01(self.node("Add", [p_in, self._f(2 - rate, hint)], hint), hint)  # 1 at rate-1
            self.node("Sub", [nxt, self.node("Mul", [wrap, self._f(rate, hint)], hint)], hint, p_out)
            self._phases[rate] = p_in
        return self._phases[rate]

    def valid(self, t: Timing) -> str | None:
        """Float [1], 1 when this frame computes a real position (>= 0, on the stride phase), else 0;
        None if always."""
        key = (t.lag, t.rate)
        if key == (0, 1):
            return None
        if key not in self._valid:
            hint = f"valid_l{t.lag}_r{t.rate}"
            gate = None
            if t.lag > 0:
                gate = self._clip01(self.node("Sub", [self.counter(), self._f(t.lag - 1, hint)], hint), hint)
            if t.rate > 1:
                off = self.node("Abs", [self.node("Sub", [self.phase(t.rate), self._f(t.lag % t.rate, hint)], hint)], hint)
                on = self.node("Sub", [self._f(1, hint), self._clip01(off, hint)], hint)
                gate = on if gate is None else self.node("Mul", [gate, on], hint)
            self._valid[key] = gate
        return self._valid[key]

    def gated(self, gate: str, new: str, old: str, dtype: int, hint: str, output: str) -> str:
        """``new`` where the gate is 1, ``old`` where it is 0: gate*new + (1-gate)*old (exact for 0/1)."""
        from onnx import TensorProto

        keep = self.node("Sub", [self._f(1, hint), gate], hint)
        if dtype != TensorProto.FLOAT:
            gate = self.node("Cast", [gate], hint, to=dtype)
            keep = self.node("Cast", [keep], hint, to=dtype)
        return self.node("Add", [self.node("Mul", [gate, new], hint), self.node("Mul", [keep, old], hint)], hint, output)

    # -- state buffers -------------------------------------------------------
    def window(self, x: str, n: int, axis: int, t: Timing, hint: str) -> str:
        """The last ``n`` positions of ``x`` followed by the current one, along ``axis``, in time order.

        ``update="shift"`` (default): the state is that whole window (n+1 positions); each step
        drops the oldest and appends the current one, one fused slice+concat kernel whose output
        is both the next state and what the consumer reads. ``"concat"``: the state is the n past
        positions; the window is their concatenation with the current one, the next state a slice
        of it. ``"ring"``: a ring buffer written at an index (ScatterElements), read back in
        order with a Gather. tools/bench_continual.py times the three on compiled bundles.
        """
        if n == 0:
            return x
        if self.update == "ring":
            buf, pos = self.ring(x, n + 1, axis, t, hint)
            return self.ring_read(buf, pos, n + 1, list(range(n, -1, -1)), axis, hint)
        dtype = self.dtypes.get(x, 1)
        full = self.update != "concat"
        s_in, s_out = self._buffer_state(x, n + 1 if full else n, axis, dtype, hint)
        gate = self.valid(t)
        if full:
            kept = self.slice(s_in, 1, n + 1, axis, f"{hint}_drop")
            win = self.node("Concat", [kept, x], f"{hint}_win", output=None if gate else s_out, axis=axis)
            if gate is not None:
                self.gated(gate, win, s_in, dtype, f"{hint}_gate", s_out)
            self.dtypes[s_out] = dtype
            return s_out
        win = self.node("Concat", [s_in, x], f"{hint}_win", axis=axis)
        self.dtypes[win] = dtype
        if gate is None:
            self.slice(win, 1, n + 1, axis, f"{hint}_shift", output=s_out)
        else:
            shifted = self.slice(win, 1, n + 1, axis, f"{hint}_shift")
            self.gated(gate, shifted, s_in, dtype, f"{hint}_gate", s_out)
        return win

    def taps(self, x: str, k: int, d: int, axis: int, t: Timing, hint: str) -> tuple[str, int]:
        """What a window operator of kernel ``k`` and dilation ``d`` reads, and the dilation left
        to apply: the whole window (dilation d), or with a ring buffer only the k taps (dilation 1)."""
        if self.update != "ring" or k == 1 or d == 1:
            return self.window(x, (k - 1) * d, axis, t, hint), d
        size = (k - 1) * d + 1
        buf, pos = self.ring(x, size, axis, t, hint)
        return self.ring_read(buf, pos, size, [(k - 1 - i) * d for i in range(k)], axis, hint), 1

    def unordered_window(self, x: str, n: int, axis: int, t: Timing, hint: str) -> str:
        """The last ``n`` positions and the current one in any order along ``axis`` (for reductions)."""
        if self.update != "ring" or n == 0:
            return self.window(x, n, axis, t, hint)
        return self.ring(x, n + 1, axis, t, hint)[0]

    def ring(self, x: str, size: int, axis: int, t: Timing, hint: str) -> tuple[str, str]:
        """A ring buffer of ``size`` positions with ``x`` written at this step's slot: (buffer, slot).

        The slot advances only on frames where ``x`` is valid; on other frames the write lands in
        the slot the next valid position takes, whose old value no window needs any more.
        """
        dtype = self.dtypes.get(x, 1)
        s_in, s_out = self._buffer_state(x, size, axis, dtype, hint)
        pos = self.slot(size, t)
        frame = list(self.step_shape_of(x))
        idx = self.node("Cast", [pos], f"{hint}_slot", to=7)
        idx = self.node("Reshape", [idx, self.const(np.ones(len(frame), np.int64), f"{hint}_ones")], f"{hint}_slot")
        idx = self.node("Expand", [idx, self.const(np.array(frame, np.int64), f"{hint}_frame")], f"{hint}_slot")
        self.node("ScatterElements", [s_in, idx, x], f"{hint}_write", s_out, axis=axis)
        self.dtypes[s_out] = dtype
        return s_out, pos

    def slot(self, size: int, t: Timing) -> str:
        """Float [1]: the ring slot of this step's position (valid pushes so far, modulo ``size``)."""
        key = (size, t.lag, t.rate)
        if key not in self._slots:
            p_in, p_out = self._state_scalar(f"slot{size}_l{t.lag}_r{t.rate}")
            hint = f"slot{size}"
            nxt = self.node("Add", [p_in, self._f(1, hint)], hint)
            wrap = self._clip01(self.node("Add", [p_in, self._f(2 - size, hint)], hint), hint)
            advanced = self.node("Sub", [nxt, self.node("Mul", [wrap, self._f(size, hint)], hint)], hint)
            gate = self.valid(t)
            if gate is None:
                self.node("Identity", [advanced], hint, p_out)
            else:
                self.gated(gate, advanced, p_in, 1, hint, p_out)
            self._slots[key] = p_in
        return self._slots[key]

    def ring_read(self, buf: str, pos: str, size: int, back: list[int], axis: int, hint: str) -> str:
        """Positions ``back`` steps before the current one, gathered along ``axis`` in that order."""
        offs = np.array(back, np.float32)
        rel = self.node("Sub", [pos, self.const(offs, f"{hint}_back")], f"{hint}_rel")  # may be < 0
        under = self.node("Sub", [self._f(1, hint), self._clip01(self.node("Add", [rel, self._f(1, hint)], hint), hint)], hint)
        idx = self.node("Add", [rel, self.node("Mul", [under, self._f(size, hint)], hint)], hint)
        idx = self.node("Cast", [idx], f"{hint}_taps", to=7)
        out = self.node("Gather", [buf, idx], f"{hint}_read", axis=axis)
        self.dtypes[out] = self.dtypes.get(buf, 1)
        return out

    def _buffer_state(self, x: str, size: int, axis: int, dtype: int, hint: str) -> tuple[str, str]:
        from onnx import helper

        shape = list(self.step_shape_of(x))
        shape[axis] = size
        suffix = self.fresh(f"{hint}").replace("state_", "")
        s_in, s_out = f"state_in_{suffix}", f"state_out_{suffix}"
        self._used |= {s_in, s_out}
        self.state_inputs.append(helper.make_tensor_value_info(s_in, dtype, shape))
        self.state_outputs.append(helper.make_tensor_value_info(s_out, dtype, shape))
        self.states.append({"suffix": suffix, "shape": shape, "dtype": helper.tensor_dtype_to_np_dtype(dtype).name,
                            "axis": axis})
        return s_in, s_out

    def merge_states(self) -> None:
        """Stack buffers that differ only in length along their window axis into one state.

        Each member is a Slice of the merged input (fused by compilers into the kernel that reads
        it) and the merged output a Concat of the members' new values: fewer tensors cross each
        call, and per-tensor checks and output allocations are much of a small step's time on
        TVM's VM.
        """
        from onnx import helper

        groups: dict[tuple, list[int]] = {}
        for i, st in enumerate(self.states):
            if "axis" in st:
                ax = st["axis"]
                groups.setdefault((st["dtype"], ax, tuple(st["shape"][:ax]), tuple(st["shape"][ax + 1:])), []).append(i)
        merged: set[int] = set()
        new_states, head = [], []
        for (dtype, ax, _, _), members in groups.items():
            if len(members) < 2:
                continue
            suffix = self.fresh("rows_" + "_".join(self.states[i]["suffix"] for i in members[:1]) + f"_x{len(members)}")
            m_in, m_out = f"state_in_{suffix}", f"state_out_{suffix}"
            offset, outs = 0, []
            for i in members:
                st = self.states[i]
                size = st["shape"][ax]
                part = self.slice(m_in, offset, offset + size, ax, f"{st['suffix']}_unstack", output=f"state_in_{st['suffix']}")
                head.append(self.nodes.pop())
                del part
                outs.append(f"state_out_{st['suffix']}")
                offset += size
            self.nodes.append(helper.make_node("Concat", outs, [m_out], name=self.fresh(f"{suffix}_Concat"), axis=ax))
            shape = list(self.states[members[0]]["shape"])
            shape[ax] = offset
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
            self.state_inputs.append(helper.make_tensor_value_info(m_in, elem, shape))
            self.state_outputs.append(helper.make_tensor_value_info(m_out, elem, shape))
            new_states.append({"suffix": suffix, "shape": shape, "dtype": dtype})
            merged |= set(members)
        if not merged:
            return
        gone = {f"state_in_{self.states[i]['suffix']}" for i in merged} | {f"state_out_{self.states[i]['suffix']}" for i in merged}
        self.state_inputs = [v for v in self.state_inputs if v.name not in gone]
        self.state_outputs = [v for v in self.state_outputs if v.name not in gone]
        self.states = [st for i, st in enumerate(self.states) if i not in merged] + new_states
        self.nodes[:0] = head

    def delay(self, x: str, k: int, t: Timing, hint: str) -> str:
        """``x`` as it was ``k`` positions ago (zeros before position 0)."""
        if k == 0:
            return x
        if (x, k) in self._delayed:  # one buffer per tensor and delay, shared by every consumer
            return self._delayed[(x, k)]
        if t.axis is not None and self.update == "ring":
            buf, pos = self.ring(x, k + 1, t.axis, t, hint)
            out = self.ring_read(buf, pos, k + 1, [k], t.axis, hint)
        elif t.axis is not None:
            win = self.window(x, k, t.axis, t, hint)
            out = self.slice(win, 0, 1, t.axis, f"{hint}_delayed")
        else:
            lifted = self.squeeze("Unsqueeze", x, [0], f"{hint}_lift")
            self.dtypes[lifted] = self.dtypes.get(x, 1)
            self._step_shapes[lifted] = [1, *self.step_shape_of(x)]
            win = self.window(lifted, k, 0, t, hint)
            out = self.squeeze("Squeeze", self.slice(win, 0, 1, 0, f"{hint}_delayed"), [0], f"{hint}_drop")
        self.dtypes[out] = self.dtypes.get(x, 1)
        self._step_shapes[out] = list(self.step_shape_of(x))
        self._delayed[(x, k)] = out
        return out

    def step_shape_of(self, step_tensor: str) -> list[int]:
        if step_tensor in self._step_shapes:
            return self._step_shapes[step_tensor]
        raise KeyError(step_tensor)

    def set_step(self, offline: str, step_tensor: str, timing: Timing | None) -> None:
        """Record that offline tensor ``offline`` is ``step_tensor`` in the step graph."""
        self.step_name[offline] = step_tensor
        if timing is not None:
            self.timing[offline] = timing
        shape = list(self.shapes.get(offline, []))
        if timing is not None and timing.axis is not None and shape:
            shape[timing.axis] = 1
        self._step_shapes[step_tensor] = shape
        if offline in self.dtypes:
            self.dtypes[step_tensor] = self.dtypes[offline]

    def align(self, node, names: list[str]) -> tuple[list[str], Timing]:
        """Step names of the timed inputs ``names`` delayed to a common lag, and that timing."""
        timings = [self.timing[n] for n in names]
        rates = {t.rate for t in timings}
        if len(rates) > 1:
            raise refuse(node, f"its inputs advance at different strides ({sorted(rates)} frames per step); "
                               "only branches with equal total stride can be merged")
        lag = max(t.lag for t in timings)
        out, backs = [], []
        for name, t in zip(names, timings, strict=True):
            if t.pad != (0, 0):
                raise refuse(node, "its input is zero-padded along time by a Pad node; only Conv and pooling may consume it")
            diff = lag - t.lag
            if diff % t.rate:
                raise refuse(node, f"branches' delays differ by {diff} frames, not a multiple of their stride {t.rate}")
            out.append(self.delay(self.s(name), diff // t.rate, t, f"{node.name or node.op_type}_align"))
            backs.append(t.back + diff)
        return out, timings[int(np.argmax([t.lag for t in timings]))].moved(back=max(backs))
