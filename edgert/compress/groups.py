"""Channel dependency groups of an ONNX graph: which channels must be removed together.

Every Conv (group=1), Gemm or MatMul with a constant weight starts a *channel
space* (its output channels). Walking the graph in order, each tensor gets a
``Layout``: the spaces its axis-1 channels come from (a Concat joins several,
a Flatten spreads each channel over ``inner`` features). Ops that keep
channels (BN, activations, pooling, depthwise convs, per-channel constants)
pass the layout on and record the initializers that must be sliced with it
(``Edit``); a residual Add or a squeeze-excitation Mul merges the spaces of its
inputs (union-find), because both sides must keep the same channels.

Anything not understood (reshapes, splits, slices, channel shuffle, graph
outputs, shared weights, grouped convs) marks the spaces touching it *unsafe*
with a reason: they are left whole, never guessed at. The result also holds a
MAC model (each weighted layer's MACs scale with the kept fraction of its input
and output channels) so a pruner can search per-group channel counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Ops that keep each channel where it is (only input 0 is an activation).
_CHANNELWISE = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Selu", "Softplus",
    "Softsign", "Identity", "Dropout", "Erf", "Gelu", "Mish", "Exp", "Neg", "Abs", "Sqrt", "Reciprocal", "Cast",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample",
}
_SPATIAL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample"}
_REDUCE = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceL1"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "PRelu"}
_NORM_PARAMS = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2)}


@dataclass(frozen=True)
class Layout:
    """Where a tensor's axis-1 features come from: ``segments`` of (space, size), each channel ``inner`` wide."""

    segments: tuple[tuple[int, int], ...]
    inner: int = 1
    last: bool = False  # channels on the last axis ([N, T, C] from a MatMul), not axis 1

    @property
    def channels(self) -> int:
        return sum(n for _, n in self.segments)


@dataclass(frozen=True)
class Edit:
    """Initializer ``init`` is sliced along ``axis`` to the kept channels of ``layout``."""

    init: str
    axis: int
    layout: Layout


@dataclass(frozen=True)
class Consumer:
    """A weighted layer reading pruned channels: its weight's input axis is sliced (and refit)."""

    node: str
    op: str
    input: str  # the activation input tensor
    weight: str
    in_axis: int  # the weight axis holding input features
    layout: Layout


@dataclass(frozen=True)
class Cost:
    """MACs of one weighted layer at full width; they scale with the kept fraction of ``inp`` and ``out``."""

    node: str
    macs: int
    inp: Layout | None
    out: Layout | None


@dataclass
class Group:
    """One set of channels that is pruned as a unit (the root of merged spaces)."""

    id: int
    size: int
    producers: list[str] = field(default_factory=list)  # nodes whose output channels these are
    unsafe: str = ""  # why it is left whole ("" = prunable)


@dataclass
class ChannelGraph:
    groups: dict[int, Group]
    edits: list[Edit]
    consumers: list[Consumer]
    costs: list[Cost]
    fixed_macs: int  # MACs of layers no group touches (MatMul of two activations, ...)
    parent: list[int]
    depthwise: list[tuple[str, Layout]] = field(default_factory=list)  # Conv nodes whose ``group`` follows a layout

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def prunable(self) -> list[Group]:
        return [g for g in self.groups.values() if not g.unsafe]

    def left_alone(self) -> list[Group]:
        return [g for g in self.groups.values() if g.unsafe]

    def fraction(self, layout: Layout | None, kept: dict[int, int]) -> float:
        if layout is None:
            return 1.0
        total = layout.channels
        return sum(kept.get(self.find(s), n) for s, n in layout.segments) / total if total else 1.0

    def macs(self, kept: dict[int, int] | None = None) -> float:
        """Model MACs when group ``g`` keeps ``kept[g]`` channels (all others whole)."""
        kept = kept or {}
        return self.fixed_macs + sum(c.macs * self.fraction(c.inp, kept) * self.fraction(c.out, kept) for c in self.costs)

    def indices(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Kept feature indices of a tensor with ``layout`` (``keep``: group -> sorted kept channels)."""
        parts, offset = [], 0
        for s, n in layout.segments:
            idx = keep.get(self.find(s))
            parts.append(offset + (np.arange(n) if idx is None else idx))
            offset += n
        ch = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return (ch[:, None] * layout.inner + np.arange(layout.inner)[None, :]).ravel()


def analyze(proto) -> ChannelGraph:
    """The channel groups of a shape-inferred, topologically sorted ONNX graph (nodes must be named)."""
    return _Walker(proto).run()


class _Walker:
    def __init__(self, proto):
        from onnx import numpy_helper

        g = proto.graph
        self.g = g
        self.inits = {t.name: t for t in g.initializer}
        self.const = lambda name: numpy_helper.to_array(self.inits[name])
        self.shapes: dict[str, tuple[int, ...]] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
        self.uses: dict[str, int] = {}
        for node in g.node:
            for i in node.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.parent: list[int] = []
        self.size: list[int] = []
        self.producer: list[str] = []
        self.unsafe: dict[int, str] = {}
        self.layout: dict[str, Layout] = {}
        self.edits: list[Edit] = []
        self.consumers: list[Consumer] = []
        self.costs: list[Cost] = []
        self.depthwise: list[tuple[str, Layout]] = []
        self.fixed = 0

    # -- union-find over spaces
    def new_space(self, n: int, producer: str, last: bool = False) -> Layout:
        self.parent.append(len(self.parent))
        self.size.append(n)
        self.producer.append(producer)
        return Layout(((len(self.parent) - 1, n),), last=last)

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            s = self.parent[s]
        return s

    def union(self, a: Layout, b: Layout) -> bool:
        if a.inner != b.inner or a.last != b.last or [n for _, n in a.segments] != [n for _, n in b.segments]:
            return False
        for (sa, _), (sb, _) in zip(a.segments, b.segments, strict=True):
            ra, rb = self.find(sa), self.find(sb)
            if ra != rb:
                self.parent[rb] = ra
        return True

    def mark(self, layout: Layout | None, reason: str) -> None:
        for s, _ in layout.segments if layout else ():
            self.unsafe.setdefault(s, reason)

    def is_const(self, name: str) -> bool:
        return name in self.inits

    def own_const(self, name: str) -> bool:
        """A constant only this node reads (slicing it cannot change another node)."""
        return name in self.inits and self.uses.get(name, 0) == 1

    # -- the walk
    def run(self) -> ChannelGraph:
        for node in self.g.node:
            for name in _subgraph_names(node):  # read implicitly by an If/Loop/Scan body
                self.mark(self.layout.get(name), f"used inside the subgraph of {node.op_type} {node.name}")
            handler = getattr(self, f"_op_{node.op_type}", None)
            if node.domain not in ("", "ai.onnx"):
                handler = None
            elif handler is None and node.op_type in _CHANNELWISE:
                handler = self._channelwise
            elif handler is None and node.op_type in _REDUCE:
                handler = self._reduce
            elif handler is None and node.op_type in _BINARY:
                handler = self._binary
            elif handler is None and node.op_type in _NORM_PARAMS:
                handler = self._norm
            if handler is None or not handler(node):
                self._unknown(node)
        for out in self.g.output:
            self.mark(self.layout.get(out.name), f"model output {out.name}")
        groups: dict[int, Group] = {}
        for s in range(len(self.parent)):
            r = self.find(s)
            grp = groups.setdefault(r, Group(r, self.size[r]))
            grp.producers.append(self.producer[s])
            if s in self.unsafe and not grp.unsafe:
                grp.unsafe = self.unsafe[s]
        for s, reason in self.unsafe.items():
            groups[self.find(s)].unsafe = groups[self.find(s)].unsafe or reason
        return ChannelGraph(groups, self.edits, self.consumers, self.costs, self.fixed, self.parent, self.depthwise)

    def _unknown(self, node) -> None:
        for i in node.input:
            self.mark(self.layout.get(i), f"{node.op_type} {node.name}")

    def _rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def _pass(self, node, layout: Layout | None) -> bool:
        if layout is not None:
            self.layout[node.output[0]] = layout
        return True

    def _op_Conv(self, node) -> bool:
        from onnx import helper

        x, w = node.input[0], node.input[1]
        b = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out_shape = self.shapes.get(node.output[0])
        if not self.own_const(w) or (b and not self.own_const(b)) or out_shape is None:
            return False
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        wshape = self.shapes[w]
        macs = int(np.prod(out_shape)) * int(np.prod(wshape[1:]))
        inp = self.layout.get(x)
        cout = wshape[0]
        if inp is not None and inp.last:
            self.mark(inp, f"Conv {node.name} reads channels from the last axis")
            inp = None
        if group == 1:
            if inp is not None and inp.inner != 1:
                self.mark(inp, f"Conv {node.name} reads spread channels")
                inp = None
            if inp is not None:
                self.edits.append(Edit(w, 1, inp))
                self.consumers.append(Consumer(node.name, "Conv", x, w, 1, inp))
            out = self.new_space(cout, node.name)
            self.edits.append(Edit(w, 0, out))
            if b:
                self.edits.append(Edit(b, 0, out))
            self.costs.append(Cost(node.name, macs, inp, out))
            self.layout[node.output[0]] = out
            return True
        cin = wshape[1] * group
        if group == cin == cout and inp is not None and inp.inner == 1:
            # Depthwise: channel c only reads channel c, so it is pruned in lockstep with its input.
            self.edits.append(Edit(w, 0, inp))
            if b:
                self.edits.append(Edit(b, 0, inp))
            self.costs.append(Cost(node.name, macs, inp, None))
            self.depthwise.append((node.name, inp))
            return self._pass(node, inp)
        self.mark(inp, f"grouped Conv {node.name} (group={group})")
        self.fixed += macs
        return True

    def _matmul_like(self, node, w: str, in_axis: int, bias: str | None) -> bool:
        x = node.input[0]
        out_shape, wshape = self.shapes.get(node.output[0]), self.shapes.get(w)
        rank = self._rank(x)
        if not self.own_const(w) or out_shape is None or len(wshape) != 2 or rank is None or rank < 2:
            return False
        if rank > 2 and (node.op_type != "MatMul" or (self.layout.get(x) is not None and not self.layout[x].last)):
            return False  # [N, T, K] @ W reads features on the last axis
        if bias and not (self.own_const(bias) and len(self.shapes[bias]) == 1 and self.shapes[bias][0] == wshape[1 - in_axis]):
            return False
        inp = self.layout.get(x)
        if inp is not None:
            self.edits.append(Edit(w, in_axis, inp))
            self.consumers.append(Consumer(node.name, node.op_type, x, w, in_axis, inp))
        out = self.new_space(wshape[1 - in_axis], node.name, last=rank > 2)
        self.edits.append(Edit(w, 1 - in_axis, out))
        if bias:
            self.edits.append(Edit(bias, 0, out))
        self.costs.append(Cost(node.name, int(np.prod(out_shape)) * wshape[in_axis], inp, out))
        self.layout[node.output[0]] = out
        return True

    def _op_Gemm(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or len(node.input) < 2:
            return False
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        return self._matmul_like(node, node.input[1], 1 if attrs.get("transB", 0) else 0, bias)

    def _op_MatMul(self, node) -> bool:
        if self.is_const(node.input[1]):
            return self._matmul_like(node, node.input[1], 0, None)
        a, b, out = (self.shapes.get(t) for t in (node.input[0], node.input[1], node.output[0]))
        if a is None or out is None:
            return False
        self.fixed += int(np.prod(out)) * a[-1]
        return False  # channels of activation x activation products are not tracked

    def _channelwise(self, node) -> bool:
        # Extra inputs (Clip bounds, Resize scales) must be constants.
        if any(i and not self.is_const(i) for i in node.input[1:]):
            return False
        lay = self.layout.get(node.input[0])
        if lay is not None and lay.last and node.op_type in _SPATIAL:
            return False
        if node.op_type in ("Resize", "Upsample"):
            src, dst = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
            if src is None or dst is None or src[:2] != dst[:2]:
                return False
        return self._pass(node, self.layout.get(node.input[0]))

    def _reduce(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            if not self.is_const(node.input[1]):
                return False
            axes = self.const(node.input[1]).tolist()
        rank = self._rank(node.input[0])
        if axes is None or rank is None:
            return False
        axes = [a % rank for a in axes]
        lay = self.layout.get(node.input[0])
        if lay is not None and lay.last:
            return False if rank - 1 in axes else self._pass(node, lay)
        if 0 in axes or 1 in axes:
            return False
        return self._pass(node, lay)

    def _norm(self, node) -> bool:
        inp = self.layout.get(node.input[0])
        if inp is not None and inp.last:
            return False
        params = [node.input[i] for i in _NORM_PARAMS[node.op_type] if i < len(node.input)]
        if not all(self.own_const(p) for p in params):
            return False
        if inp is not None:
            self.edits.extend(Edit(p, 0, inp) for p in params)
        return self._pass(node, inp)

    def _binary(self, node) -> bool:
        out = node.output[0]
        rank = self._rank(out)
        if rank is None or rank < 2 or any(self.shapes.get(i) is None for i in node.input):
            return False
        tracked = [self.layout[i] for i in node.input if i in self.layout]
        if any(len(self.shapes[i]) != rank for i in node.input if i in self.layout):
            return False
        if len({lay.last for lay in tracked}) > 1:
            return False
        axis = rank - 1 if tracked and tracked[0].last else 1
        edits: list[tuple[str, int]] = []
        for name in node.input:
            if name in self.layout:
                continue
            shape = self.shapes[name]
            padded = (1,) * (rank - len(shape)) + tuple(shape)
            if padded[axis] != 1:
                if not self.own_const(name):
                    return False  # an untracked activation with channels: cannot tell which are which
                edits.append((name, axis - (rank - len(shape))))  # a per-channel constant
        if not tracked:
            return self._pass(node, None)
        first = tracked[0]
        for other in tracked[1:]:
            if not self.union(first, other):
                for lay in tracked:
                    self.mark(lay, f"{node.op_type} {node.name} joins differently split channels")
                return True
        if edits and first.inner != 1:
            return False
        self.edits.extend(Edit(name, ax, first) for name, ax in edits)
        return self._pass(node, first)

    def _op_Flatten(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = self.shapes.get(node.input[0])
        if shape is None or attrs.get("axis", 1) != 1:
            return False
        return self._spread(node, shape)

    def _spread(self, node, shape) -> bool:
        inp = self.layout.get(node.input[0])
        if inp is None:
            return True
        if inp.inner != 1 or inp.last:
            return False
        return self._pass(node, Layout(inp.segments, int(np.prod(shape[2:]))))

    def _op_Reshape(self, node) -> bool:
        src, dst = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        lay = self.layout.get(node.input[0])
        if lay is not None and lay.last and src is not None and dst is not None and len(dst) >= 2 \
                and src[-1] == dst[-1]:
            return self._pass(node, lay)  # the last axis (the features) stays whole and last
        if src is None or dst is None or len(src) < 2 or len(dst) != 2 or dst[0] != src[0]:
            return False  # only the flatten form [N, C, ...] -> [N, C*...] keeps channels in place
        return self._spread(node, src)

    def _op_Squeeze(self, node) -> bool:
        src, dst = self.shapes.get(node.input[0]), self.shapes.get(node.output[0])
        lay = self.layout.get(node.input[0])
        if src is None or dst is None or len(src) < 2 or len(dst) < 2:
            return False
        if lay is not None and lay.last:
            return src[-1] == dst[-1] and self._pass(node, lay)
        if src[:2] != dst[:2]:
            return False
        return self._pass(node, lay)

    _op_Unsqueeze = _op_Squeeze

    def _op_Pad(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        pads = attrs.get("pads")
        if pads is None:
            if len(node.input) < 2 or not self.is_const(node.input[1]):
                return False
            pads = self.const(node.input[1]).tolist()
        lay, rank = self.layout.get(node.input[0]), self._rank(node.input[0])
        if len(node.input) > 3 and node.input[3] or rank is None or len(pads) != 2 * rank:
            return False  # explicit axes: rare, not worth the bookkeeping
        if any(i and not self.is_const(i) for i in node.input[2:3]):
            return False
        axis = rank - 1 if lay is not None and lay.last else 1
        if pads[0] or pads[rank] or pads[axis] or pads[rank + axis]:
            return False  # padding the batch or the channels adds channels
        return self._pass(node, lay)

    def _op_Concat(self, node) -> bool:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rank = self._rank(node.output[0])
        parts = [self.layout.get(i) for i in node.input]
        last = any(p is not None and p.last for p in parts)
        if rank is None or attrs.get("axis", 0) % rank != (rank - 1 if last else 1):
            return False
        if any(p is None or p.inner != 1 or p.last != last for p in parts):
            for p in parts:
                self.mark(p, f"Concat {node.name} with an input whose channels are not tracked")
            return True
        return self._pass(node, Layout(tuple(seg for p in parts for seg in p.segments), last=last))


def _subgraph_names(node) -> set[str]:
    """Every tensor name a node's subgraphs (If/Loop/Scan bodies) mention, nested ones included."""
    from onnx import AttributeProto

    names: set[str] = set()
    graphs = [a.g for a in node.attribute if a.type == AttributeProto.GRAPH]
    graphs += [g for a in node.attribute if a.type == AttributeProto.GRAPHS for g in a.graphs]
    for g in graphs:
        for inner in g.node:
            names.update(inner.input)
            names |= _subgraph_names(inner)
    return names
