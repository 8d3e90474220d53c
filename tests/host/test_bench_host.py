"""Smoke test of tools/bench_host.py: real, finite timings from its worker processes, and the table they render into."""
from __future__ import annotations

import math
from dataclasses import asdict

import pytest


@pytest.fixture(scope="module")
def bench(tool):
    return tool("bench_host")


def _timed(cell):
    assert "error" not in cell, cell["error"]
    assert math.isfinite(cell["median_ms"]) and cell["p90_ms"] >= cell["median_ms"] >= cell["min_ms"] > 0


@pytest.mark.timeout(180)
def test_model_and_pruned_layer_cells(bench, tmp_path):
    from edgert.zoo import registry

    budget = asdict(bench.br.QUICK)
    onnx = str(registry.get("digits_cnn").onnx_path)
    ort = bench.run_isolated({"kind": "ort", "onnx": onnx, "threads": 1, "budget": budget}, 1, 120)
    host = bench.run_isolated({"kind": "host", "onnx": onnx, "threads": 1, "budget": budget}, 1, 120)
    _timed(ort)
    _timed(host)
    assert host["threads"] == 1
    assert host["generated"] and host["generate_s"] > 0  # digits_cnn: every node lowers, codegen="auto" switched

    layer = str(bench.pruned_layer(tmp_path / "l.onnx", "Conv", (32, 32, 1, 1), (1, 32, 8, 8), 0.9))
    sparse = bench.run_isolated({"kind": "host", "onnx": layer, "threads": 1, "budget": budget, "sparse_threshold": 0.0}, 1, 120)
    dense = bench.run_isolated({"kind": "host", "onnx": layer, "threads": 1, "budget": budget, "sparse_threshold": 2.0}, 1, 120)
    _timed(sparse)
    _timed(dense)
    assert sparse["csr_layers"] == 1 and dense["csr_layers"] == 0

    report = {"host": bench.br.host_info(), "settings": {"threads": [1], "quick": True},
              "models": [{"model": "digits_cnn", "threads": 1, "ort": ort, "host": host,
                          "ratio": host["median_ms"] / ort["median_ms"]}],
              "sparse": [{"layer": "l", "sparsity": 0.9, "threads": 1, "ort": ort, "dense": dense, "sparse": sparse,
                          "speedup": dense["median_ms"] / sparse["median_ms"]}]}
    table = bench.render(report)
    assert f"| digits_cnn | {bench.br.fmt_ms(ort['median_ms'])} | {bench.br.fmt_ms(host['median_ms'])} |" in table
    assert f"| generated ({host['generate_s']:.2g} s first) |" in table
    assert "| l | 90% |" in table


def test_pruned_layer_has_the_requested_sparsity(bench, tmp_path):
    import onnx
    from onnx import numpy_helper

    path = bench.pruned_layer(tmp_path / "g.onnx", "Gemm", (64, 32), (1, 32), 0.8)
    w = numpy_helper.to_array(onnx.load(str(path)).graph.initializer[0])
    assert abs((w == 0).mean() - 0.8) < 0.01


def test_worker_errors_become_cell_text(bench):
    res = bench.run_isolated({"kind": "host", "onnx": "no-such.onnx", "threads": 1, "budget": asdict(bench.br.QUICK)}, 1, 60)
    assert "model file not found" in res["error"]
