"""Smoke test of tools/bench_runtimes.py: its measuring functions give real, finite timings.

onnxruntime and a naive edgert bundle of the smallest zoo model, each timed in its own
worker process as the benchmark does (LiteRT needs a converted model: not here).
"""
from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def bench(tool):
    return tool("bench_runtimes")


def _timed(row: dict) -> None:
    assert "error" not in row, row["error"]
    for key in ("median_ms", "p90_ms", "min_ms"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row["p90_ms"] >= row["median_ms"] >= row["min_ms"]
    assert row["runs"] >= 3


@pytest.mark.timeout(120)
def test_ort_and_naive_bundle_rows(bench, tmp_path):
    from dataclasses import asdict

    (spec,) = bench.collect_models(["digits_cnn"], None, [], None)
    assert spec.shapes == {"input": (1, 1, 8, 8)}
    assert spec.tflite is None and "--tflite-dir" in spec.tflite_na
    budget = asdict(bench.QUICK)

    ort = bench.run_isolated({"kind": "ort", "onnx": str(spec.onnx), "shapes": spec.shapes, "threads": 1, "budget": budget},
                             threads=1, timeout=90)
    _timed(ort)

    out = tmp_path / "naive.edgert"
    built = bench.compile_variant(spec.onnx, spec.shapes, "naive", out)
    assert built["compile_s"] > 0 and (out / "lib" / "model.so").is_file()
    naive = bench.run_isolated({"kind": "bundle", "bundle": str(out), "budget": budget}, threads=1, timeout=90)
    _timed(naive)
    assert naive["tvm_threads"] == 1  # the worker's pool was created with TVM_NUM_THREADS=1

    # The rows render into the table the README figures are pasted from.
    naive["ratio"] = naive["median_ms"] / ort["median_ms"]
    results = [{"model": "digits_cnn", "threads": 1, "column": "ort", **ort},
               {"model": "digits_cnn", "threads": 1, "column": "litert", "na": spec.tflite_na},
               {"model": "digits_cnn", "threads": 1, "column": "naive", **naive}]
    summary = bench.summarize(results, [1], ["naive"])
    assert summary["1"]["naive"]["median_ratio"] == pytest.approx(naive["ratio"])
    report = {"host": bench.host_info(), "results": results, "summary": summary, "sparse": {},
              "settings": {"threads": [1], "variants": ["naive"], "quick": True}}
    table = bench.render(report)
    assert "| digits_cnn | " + bench.fmt_ms(ort["median_ms"]) in table
    assert bench.fmt_ratio(naive["ratio"]) in table


def test_worker_errors_become_cell_text(bench):
    res = bench.run_isolated({"kind": "bundle", "bundle": "no-such.edgert"}, threads=1, timeout=60)
    assert "bundle not found" in res["error"]
