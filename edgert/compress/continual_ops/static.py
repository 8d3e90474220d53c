"""Layers after the time axis is gone (e.g. the classifier after global pooling): copied as they are.

Their inputs hold one value per step already; inputs of different delay are aligned.
"""
from __future__ import annotations

from edgert.compress.continual_ops._builder import StepBuilder


def convert(b: StepBuilder, node) -> None:
    timed = [i for i in node.input if i and not b.is_const(i)]
    aligned, t = b.align(node, timed)
    by_name = dict(zip(timed, aligned, strict=True))
    b.copy(node, by_name)
    for o in node.output:
        if o:
            b.set_step(o, o, t)
