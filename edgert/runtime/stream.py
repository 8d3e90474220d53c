"""Run a continual step model (``edgert continual``) as a stream: one frame in, one step out.

``Stream(model_or_bundle, backend=None)``: ``step(frame)`` returns the outputs for that
frame, or None while the model is still in its delay (warm-up) or between strided
outputs; ``steps(frames)`` runs many; ``reset()`` starts a new stream (all states zero).

Backends: ``onnxruntime`` (default for an ONNX step model), ``host`` (edgert's NumPy/Numba
executor) and ``tvm`` (a compiled bundle, in this process). With ``tvm`` the state tensors
stay TVM tensors between calls: each step's state outputs are passed straight back as the
next step's state inputs, never copied to NumPy. The C library does the same for bundles run
without Python (``edgert_stream_step`` in edgert.h, ``edgert-run --stream``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import EdgertError, InputError

BACKENDS = ("onnxruntime", "host", "tvm")


class StreamError(EdgertError):
    """The model is not a step model, or the backend cannot run it."""

    exit_code = 2


@dataclass(frozen=True)
class StreamInfo:
    """Timing of a step model, from its metadata (ONNX) or its bundle manifest."""

    frame_inputs: list[str]  # inputs that take a frame (the others are state)
    outputs: list[str]  # outputs returned per step (state outputs are not)
    states: list[dict[str, Any]]  # name_in, name_out, shape, dtype
    delay: int
    stride: int
    receptive_field: int
    time_axis: int
    frame_shapes: dict[str, list[int]]

    @staticmethod
    def from_meta(meta: dict[str, Any], input_names: list[str], output_names: list[str]) -> StreamInfo:
        state_in = {s["name_in"] for s in meta["states"]}
        state_out = {s["name_out"] for s in meta["states"]}
        return StreamInfo(
            frame_inputs=[n for n in input_names if n not in state_in],
            outputs=[n for n in output_names if n not in state_out],
            states=list(meta["states"]), delay=int(meta["delay"]), stride=int(meta["stride"]),
            receptive_field=int(meta["receptive_field"]), time_axis=int(meta["time_axis"]),
            frame_shapes={k: list(v) for k, v in meta["frame_shapes"].items()},
        )

    def emits(self, t: int) -> bool:
        """Whether the step at frame ``t`` (0-based) produces a valid output."""
        return t >= self.delay and (t - self.delay) % self.stride == 0


class Stream:
    """A running stream over a step model or a bundle compiled from one."""

    def __init__(self, model_or_bundle, backend: str | None = None):
        from edgert.bundle import Bundle
        from edgert.model import Model, load

        subject = model_or_bundle
        if isinstance(subject, (str, Path)):
            path = Path(subject)
            subject = load(path) if path.suffix == ".onnx" else Bundle.open(path)
        if isinstance(subject, Model):
            backend = backend or "onnxruntime"
            if backend not in ("onnxruntime", "host"):
                raise StreamError(f"an ONNX step model runs on onnxruntime or host, not '{backend}'; "
                                  "compile it with 'edgert compile' for the tvm backend")
            from edgert.compress.continual import read_metadata

            meta = read_metadata(subject.proto) if subject.format == "onnx" else None
            names_in, names_out = [s.name for s in subject.inputs], [s.name for s in subject.outputs]
        elif isinstance(subject, Bundle):
            backend = backend or "tvm"
            if backend != "tvm":
                raise StreamError(f"a bundle runs on the tvm backend, not '{backend}'")
            meta = subject.stream
            names_in, names_out = [s.name for s in subject.inputs], [s.name for s in subject.outputs]
        else:
            raise StreamError(f"cannot stream a {type(subject).__name__}; give a step model (.onnx) or its bundle")
        if backend not in BACKENDS:
            raise StreamError(f"unknown backend '{backend}'; use one of {', '.join(BACKENDS)}")
        if meta is None:
            raise StreamError("this model is not a continual step model (no state metadata); "
                              "convert it first with 'edgert continual MODEL -o STEP.onnx --time-axis N'")
        self.info = StreamInfo.from_meta(meta, names_in, names_out)
        self.backend = backend
        self._runner = {"onnxruntime": _OrtRunner, "host": _HostRunner, "tvm": _TvmRunner}[backend](subject, self.info)
        self.t = 0

    # -- the stream ------------------------------------------------------------
    @property
    def delay(self) -> int:
        return self.info.delay

    @property
    def stride(self) -> int:
        return self.info.stride

    def reset(self) -> None:
        """Start a new stream: every state back to zero."""
        self._runner.reset()
        self.t = 0

    def step(self, frame) -> np.ndarray | dict[str, np.ndarray] | None:
        """Feed one frame (an array, or ``{input: array}``); the outputs, or None during warm-up.

        A frame may omit the time axis (it is inserted). One output comes back as an array,
        several as ``{name: array}``.
        """
        feeds = self._frames(frame)
        emit = self.info.emits(self.t)
        outs = self._runner.step(feeds, emit)
        self.t += 1
        if not emit:
            return None
        return outs[self.info.outputs[0]] if len(self.info.outputs) == 1 else outs

    def steps(self, frames) -> list:
        """``step`` for each frame along axis 0 of ``frames`` (or of each array of a dict); None kept."""
        if isinstance(frames, dict):
            n = len(next(iter(frames.values())))
            return [self.step({k: v[i] for k, v in frames.items()}) for i in range(n)]
        return [self.step(f) for f in frames]

    def _frames(self, frame) -> dict[str, np.ndarray]:
        names = self.info.frame_inputs
        if not isinstance(frame, dict):
            if len(names) != 1:
                raise InputError(f"this model takes {len(names)} frame inputs; pass {{name: array}} for {', '.join(names)}")
            frame = {names[0]: frame}
        out = {}
        for name in names:
            if name not in frame:
                raise InputError(f"no frame for input '{name}'; the frame inputs are {', '.join(names)}")
            want = self.info.frame_shapes[name]
            arr = np.asarray(frame[name], dtype=np.float32 if np.asarray(frame[name]).dtype.kind == "f" else None)
            if list(arr.shape) != want:
                # Axes of size 1 (batch, time) may be left out: same sizes once they are dropped.
                if [d for d in arr.shape if d != 1] != [d for d in want if d != 1]:
                    raise InputError(f"frame for '{name}' has shape {list(arr.shape)}; the model takes {want} "
                                     "(axes of size 1, such as time, may be left out)")
                arr = arr.reshape(want)
            out[name] = np.ascontiguousarray(arr)
        return out


def _zeros(states) -> dict[str, np.ndarray]:
    return {s["name_in"]: np.zeros(s["shape"], s["dtype"]) for s in states}


class _OrtRunner:
    def __init__(self, model, info: StreamInfo):
        self.sess = _ort_session(model)
        self.info = info
        self.names = [o.name for o in self.sess.get_outputs()]
        self.reset()

    def reset(self) -> None:
        self.state = _zeros(self.info.states)

    def step(self, feeds, emit):
        res = dict(zip(self.names, self.sess.run(None, {**feeds, **self.state}), strict=True))
        self.state = {s["name_in"]: res[s["name_out"]] for s in self.info.states}
        return {n: res[n] for n in self.info.outputs}


def _ort_session(model):
    from edgert.model import require

    ort = require("onnxruntime", "reference")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # a step is tiny: threads cost more than they save
    return ort.InferenceSession(model.proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


class _HostRunner:
    def __init__(self, model, info: StreamInfo):
        try:
            from edgert.host import HostExecutor
        except ImportError:
            raise StreamError("edgert's host executor is not available in this installation; use backend='onnxruntime'") from None
        self.ex = HostExecutor(model)
        self.info = info
        self.reset()

    def reset(self) -> None:
        self.state = _zeros(self.info.states)

    def step(self, feeds, emit):
        res = self.ex.run({**feeds, **self.state})
        # The executor's outputs are its own fresh arrays: handed back as the next state as they are.
        self.state = {s["name_in"]: res[s["name_out"]] for s in self.info.states}
        return {n: res[n] for n in self.info.outputs}


class _TvmRunner:
    """A bundle in this process. States stay TVM tensors; only emitted outputs become NumPy."""

    def __init__(self, bundle, info: StreamInfo):
        from edgert.device.compat import check_here

        check_here(bundle)  # the same refusals as run/deploy/profile, before anything native is loaded
        import tvm
        from tvm import relax

        self.tvm = tvm
        self.dev = tvm.cuda(0) if bundle.device_kind == "cuda" else tvm.cpu()
        # From a private copy of the bytes just hashed (as run_in_process): a file swapped after Bundle.open is not loaded.
        with bundle.verified_copy(bundle.manifest["runtime"]["model"]) as model_so:
            lib = tvm.runtime.load_module(str(model_so))
        self.vm = relax.VirtualMachine(lib, self.dev)
        self.main = self.vm["main"]
        self.info = info
        self.order = [s.name for s in bundle.inputs]
        outs = [s.name for s in bundle.outputs]
        self.out_index = {n: outs.index(n) for n in info.outputs}
        self.state_index = [(s["name_in"], outs.index(s["name_out"])) for s in info.states]
        self.reset()

    def reset(self) -> None:
        self.state = {k: self.tvm.runtime.tensor(v, self.dev) for k, v in _zeros(self.info.states).items()}

    def step(self, feeds, emit):
        frames = {k: self.tvm.runtime.tensor(v, self.dev) for k, v in feeds.items()}
        result = self.main(*[frames[n] if n in frames else self.state[n] for n in self.order])
        result = list(result) if not hasattr(result, "numpy") else [result]
        self.state = {name: result[i] for name, i in self.state_index}  # TVM tensors, passed back as they are
        if not emit:
            return {}
        return {n: result[i].numpy() for n, i in self.out_index.items()}
