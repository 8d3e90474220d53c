"""The ONNX package's node conformance cases, run for every operator the host executor supports.

Each case is a one-node (or small function-expanded) model with inputs and expected outputs
(``onnx.backend.test.case.node.collect_testcases``), compared with the case's own rtol/atol.
Excluded cases are listed with their reason below, and each must be *reported* as unsupported
(UnsupportedHostOperatorError before or while running), never answered wrongly.
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

# (pattern over case names, reason)
EXCLUDED = [
    # (float8 e5m2 -> float passes: the case's data arrives as an ml_dtypes array NumPy can cast)
    (r"^test_cast(like)?_(?!FLOAT8E5M2_to_FLOAT).*(FLOAT8|E8M0|FLOAT4E2M1|BFLOAT16|UINT4|INT4|UINT2|INT2)",
     "float8 / bfloat16 / float4 / 4- and 2-bit integers: NumPy has no such dtypes"),
    (r"^test_(de)?quantizelinear_(e4m3fn|e5m2|float4e2m1|u?int4|u?int2)",
     "float8 / float4 / 4- and 2-bit quantisation: NumPy has no such dtypes"),
    (r"^test_(de)?quantizelinear_blocked", "block quantisation (block_size, opset 21) is not implemented"),
    (r"^test_resize_.*cubic", "Resize mode=cubic is not implemented (nearest and linear are)"),
    (r"^test_resize_.*antialias", "Resize antialias is not implemented"),
    (r"^test_batchnorm_.*training_mode", "training-mode BatchNormalization (batch statistics) is not inference"),
    (r"^test_training_dropout", "training-mode Dropout (random masks) is not inference"),
]


def _reason(name: str) -> str | None:
    return next((why for pattern, why in EXCLUDED if re.search(pattern, name)), None)


@pytest.fixture(scope="module")
def cases():
    from onnx.backend.test.case.node import collect_testcases

    from edgert.host.registry import supported_ops

    supported = set(supported_ops())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        everything = collect_testcases(None)
    return [c for c in everything
            if c.model.graph.node and all(n.op_type in supported and n.domain in ("", "ai.onnx") for n in c.model.graph.node)]


def _array(value) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    # Some cases store their data as TensorProto (e.g. Cast's), the rest as arrays.
    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def _run_case(case) -> None:
    from edgert.host import HostExecutor

    ex = HostExecutor(case.model)
    for inputs, expected in case.data_sets:
        got = ex.run(dict(zip(ex.input_names, [_array(v) for v in inputs], strict=True)))
        for name, want in zip(ex.output_names, expected, strict=True):
            want = _array(want)
            assert got[name].shape == want.shape, f"{name}: shape {got[name].shape} vs {want.shape}"
            assert got[name].dtype == want.dtype, f"{name}: dtype {got[name].dtype} vs {want.dtype}"
            np.testing.assert_allclose(got[name], want, rtol=case.rtol, atol=case.atol, err_msg=name)


@pytest.mark.timeout(300)
def test_node_conformance_cases(cases, capsys):
    from edgert.host.executor import UnsupportedHostOperatorError
    from edgert.host.registry import supported_ops

    passed: list[str] = []
    failed: list[str] = []
    excluded: list[str] = []
    for case in cases:
        if _reason(case.name):
            # An excluded case must be refused with the unsupported-operator error, not computed wrongly.
            try:
                _run_case(case)
            except UnsupportedHostOperatorError:
                excluded.append(case.name)
            except Exception as exc:  # noqa: BLE001
                failed.append(f"{case.name} (excluded): not reported as unsupported: {type(exc).__name__}: {exc}"[:300])
            else:
                failed.append(f"{case.name} (excluded): passes now; drop its exclusion")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _run_case(case)
        except Exception as exc:  # noqa: BLE001 - collect every failure, report them together
            failed.append(f"{case.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        else:
            passed.append(case.name)
    without = sorted(set(supported_ops()) - {n.op_type for c in cases for n in c.model.graph.node})
    with capsys.disabled():
        print(f"\nONNX node conformance: {len(passed)} passed, {len(failed)} failed, {len(excluded)} excluded "
              f"(of {len(cases)} cases whose operators the host executor supports); "
              f"supported ops without a case: {', '.join(without) or 'none'}")
    assert not failed, "\n".join(failed)
    # Every supported operator that has conformance cases passes at least one of them.
    ops_with_cases = {n.op_type for c in cases for n in c.model.graph.node}
    ops_passing = {n.op_type for c in cases if c.name in set(passed) for n in c.model.graph.node}
    assert ops_with_cases <= ops_passing, sorted(ops_with_cases - ops_passing)


def test_every_exclusion_matches_a_case(cases):
    names = [c.name for c in cases]
    for pattern, why in EXCLUDED:
        assert any(re.search(pattern, n) for n in names), f"stale exclusion {pattern!r} ({why})"
