"""Per-frame operators: activations, BatchNormalization, normalisations and MatMul that leave time alone."""
from __future__ import annotations

from edgert.compress.continual_ops._builder import StepBuilder, refuse
from edgert.compress.continual_ops._window import attrs_of

UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Gelu", "Mish", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal",
    "Floor", "Ceil", "Round", "Sign", "Not", "Identity", "Cast", "Dropout", "BatchNormalization",
    "Softmax", "LogSoftmax", "LayerNormalization", "MatMul",
)


def convert(b: StepBuilder, node) -> None:
    x, t = node.input[0], b.timing[node.input[0]]
    if any(not b.is_const(i) for i in node.input[1:] if i):
        raise refuse(node, "only its first input may change over time; the others must be constants")
    if t.pad != (0, 0):
        raise refuse(node, "its input is zero-padded along time by a Pad node; only Conv and pooling may consume it")
    rank = len(b.shapes[x])
    a = attrs_of(node)
    op = node.op_type
    if op == "BatchNormalization" and t.axis == 1:
        raise refuse(node, "normalises per channel (axis 1), which is the time axis")
    if op in ("Softmax", "LogSoftmax") and a.get("axis", -1) % rank == t.axis:
        raise refuse(node, f"{op} across the time axis mixes time steps")
    if op == "LayerNormalization" and t.axis >= a.get("axis", -1) % rank:
        raise refuse(node, "LayerNormalization over the time axis mixes time steps")
    if op == "MatMul" and (t.axis >= rank - 1 or len(b.shapes[node.input[1]]) != 2):
        raise refuse(node, "MatMul must multiply by a 2-D constant and keep time out of the contracted axis")
    if len([o for o in node.output if o]) > 1 and op != "Dropout":
        raise refuse(node, "only its first output can be streamed")
    new = type(node)()
    new.CopyFrom(node)
    new.input[0] = b.s(x)
    del new.output[1:]
    b.nodes.append(new)
    b.set_step(node.output[0], node.output[0], t)
