"""Whole-graph code generation for the host executor: one numba function per model and input shapes.

``plan.build(executor, feeds, values)`` lowers every step (``lower.py``, by op type) into a generated
function that calls the kernels of ``kernels.py`` (and edgert.host.ops.conv's depthwise kernel) on
static shapes, caches it on disk and returns a ``CompiledPlan``. A model with a step that has no
lowering raises ``NotLowerable`` and keeps running through the per-node interpreter.
"""
